"""The auth service: signing keys, token verification."""
