"""Headrace's services: one subpackage per service plus the shared runtime."""

import os

GRPC_EXPERIMENTS = (
    "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
)
"""grpc core settings every service process starts with, unless GRPC_EXPERIMENTS is set.

With grpc's EventEngine endpoints (its default since grpcio 1.6x) each message a
Python service sends or receives wakes three threads: an EventEngine pool thread does
the socket I/O, then the completion queue's poller thread, then the event loop. With
grpc's older iomgr endpoints the poller thread does the I/O itself: the router's and
the sanitizer's context switches per streamed token halve (router 18 → 10, sanitizer
11 → 6, measured with /proc on the benchmark's stream). On a machine where inference
decodes on every core, each of those wake-ups preempts a decode thread while its
partner spins at llama.cpp's barrier, so they cost decoding far more than their own
CPU time (docs/benchmarks.md). Set here, in the package every service's
`python -m headrace.services.<name>` imports first, so it is in place before grpc
is imported; an operator's own GRPC_EXPERIMENTS wins.
"""

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
