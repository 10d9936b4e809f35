"""Headrace: a self-hosted LLM gateway. This package holds the Python client,
the CLI, and the code generated from protos/ (headrace.<service>.v1)."""

from headrace.client import Client, GenerateResult

__all__ = ["Client", "GenerateResult"]
