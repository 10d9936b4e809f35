"""`python -m headrace.services.launcher`: the same as `headrace up`."""

from __future__ import annotations

import asyncio
import sys

from headrace.services.launcher.settings import LauncherSettings
from headrace.services.launcher.up import run_up
from headrace.services.runtime.logs import configure_logging


def main() -> int:
    settings = LauncherSettings()
    configure_logging("launcher", settings.log_level, settings.log_json)
    return asyncio.run(run_up(settings))


if __name__ == "__main__":
    sys.exit(main())
