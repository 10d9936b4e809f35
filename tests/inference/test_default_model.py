"""The model users run, decoded for real: Gemma 3 270M Q4_K_M with the extra-buffer-type
choice `auto` makes on this machine, in a child process (a llama.cpp crash, such as the
AMX repack's segfault, shows as an exit by signal instead of killing pytest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from headrace.services.runtime.llama_params import choose_extra_bufts


def test_the_default_model_decodes_with_the_settings_auto_picks_here(default_model: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headrace.services.inference.selftest", str(default_model)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, (
        f"selftest exited {result.returncode} (negative: killed by signal)\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = choose_extra_bufts("auto")
    assert report["extra_buffer_types"] is expected.enabled
    assert report["extra_buffer_types_reason"] == expected.reason
    assert report["completion_tokens"] > 0
    assert "Paris" in report["text"] or "France" in report["text"], report["text"]
