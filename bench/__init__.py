"""Benchmarks: `make bench` (python -m bench)."""

from headrace.services.runtime import openmp

# Every side of a benchmark (in process, the gateway's inference, the peer servers,
# which inherit this environment) decodes with the spin the inference service uses,
# set before llama.cpp loads here; bench.contention compares the settings.
openmp.apply()
