"""`headrace finetune`: train a LoRA adapter for a served GGUF model, in its own process."""
