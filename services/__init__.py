"""Headrace's services: one subpackage per service plus the shared runtime."""
