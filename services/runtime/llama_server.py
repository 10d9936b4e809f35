"""`python -m headrace.services.runtime.llama_server ARGS`: llama-cpp-python's own OpenAI
server (`llama_cpp.server`, needs `llama-cpp-python[server]`) with Headrace's model
parameters, so a peer server started by the benchmarks or the tests loads models the
way the gateway does (extra buffer types off on AMX CPUs; see llama_params).

HEADRACE_EXTRA_BUFFER_TYPES (auto, on, off; default auto) chooses.
"""

from __future__ import annotations

import os
import sys

from headrace.services.runtime.llama_params import apply_process_wide


def main() -> None:
    setting = os.environ.get("HEADRACE_EXTRA_BUFFER_TYPES", "auto")
    if setting not in ("auto", "on", "off"):
        sys.exit(f"HEADRACE_EXTRA_BUFFER_TYPES must be auto, on or off, not {setting!r}")
    choice = apply_process_wide(setting)  # type: ignore[arg-type]
    print(
        f"extra buffer types: {'on' if choice.enabled else 'off'} ({choice.reason})",
        file=sys.stderr,
        flush=True,
    )
    try:
        from llama_cpp.server.__main__ import main as serve
    except ImportError as exc:
        sys.exit(
            f"llama_cpp.server is not installed ({exc}); pip install 'llama-cpp-python[server]'"
        )
    serve()


if __name__ == "__main__":
    main()
