"""The Envoy configuration template and its rendering."""
