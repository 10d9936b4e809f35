"""The router: the public API and the orchestration of one request."""
