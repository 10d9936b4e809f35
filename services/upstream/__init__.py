"""Hosted OpenAI-compatible models as inference backends (docs/upstreams.md)."""
