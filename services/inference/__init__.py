"""The inference service: llama.cpp models that stream tokens as they decode."""

from headrace.services.runtime import openmp

# Before anything in this package loads llama.cpp (and with it libgomp, which reads
# its settings once): a short spin, so that decoding survives a busy machine.
openmp.apply()
