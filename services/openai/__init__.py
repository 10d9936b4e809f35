"""The OpenAI-compatible HTTP front door: the OpenAI API translated to RouterService."""
