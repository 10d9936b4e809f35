"""The inference service: llama.cpp models that stream tokens as they decode."""
