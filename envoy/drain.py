"""`python -m headrace.envoy.drain`: let Envoy's streams finish before it is stopped.

Envoy exits at once on SIGTERM, cutting every stream it carries. Run this first (a
Kubernetes preStop hook, or before `docker stop`): it asks the admin interface to drain
the listeners gracefully (HTTP/2 clients get GOAWAY and open new streams elsewhere, no
new connections are accepted), then waits until no downstream request is active or
`--timeout` passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

ACTIVE = "downstream_rq_active"


def active_requests(admin: str, timeout: float = 2.0) -> int:
    """Requests in flight on every HTTP listener (public, internal), from the admin stats."""
    url = f"http://{admin}/stats?format=json&filter={ACTIVE}$"
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        stats = json.load(reply).get("stats", [])
    # http.<listener>.downstream_rq_active; the admin's own counts this very request.
    return sum(
        int(s.get("value", 0))
        for s in stats
        if s.get("name", "").startswith("http.")
        and not s.get("name", "").startswith("http.admin.")
        and s.get("name", "").endswith(ACTIVE)
    )


def drain(admin: str, timeout: float, poll: float = 0.5) -> int:
    """Start a graceful drain, then wait for idle; the requests still active at the end."""
    request = urllib.request.Request(f"http://{admin}/drain_listeners?graceful", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass
    deadline = time.monotonic() + timeout
    active = active_requests(admin)
    while active and time.monotonic() < deadline:
        time.sleep(poll)
        active = active_requests(admin)
    return active


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headrace.envoy.drain")
    parser.add_argument("--admin", default="127.0.0.1:9901", help="Envoy's admin HOST:PORT")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait, seconds")
    args = parser.parse_args(argv)
    try:
        left = drain(args.admin, args.timeout)
    except OSError as exc:  # Envoy already gone: nothing to drain
        print(f"drain: {exc}", file=sys.stderr)
        return 0
    print(f"drain: {left} requests still active", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
