"""The cache service: complete responses keyed by request, replayed as streams."""
