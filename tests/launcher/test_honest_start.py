"""`headrace up` says "up" only when everything serves; a process that dies during the
start ends it at once, naming the process; one that dies later is restarted and counted."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.suite import alive, running_suite, serving, start_suite

pytestmark = pytest.mark.e2e


def test_a_service_that_exits_at_start_ends_up_nonzero_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    with pytest.raises(RuntimeError) as failed:
        start_suite(tmp_path / "home", missing, ready_timeout=90)
    assert "launcher exited with 1" in str(failed.value)
    log = (tmp_path / "home" / "suite.log").read_text()
    assert "service 'inference-0' exited before the suite was ready (exit code 1)" in log
    assert str(missing) in log, "the last lines say what failed"
    assert "headrace doctor" in log
    leftovers = [
        line
        for line in subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True
        ).stdout.splitlines()
        if str(tmp_path / "home") in line
    ]
    assert leftovers == [], leftovers
    assert not list((tmp_path / "home" / "run").glob("*.pid")), "every process stopped"


def test_the_start_fails_within_30_s_of_the_exit(tmp_path: Path, tiny_model: Path) -> None:
    env = {"HEADRACE_CACHE_SCOPE": "everyone"}  # not shared or subject: the cache refuses it
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failed:
        start_suite(tmp_path / "home", tiny_model, extra_env=env, ready_timeout=90)
    assert time.monotonic() - started < 30
    assert "launcher exited with 1" in str(failed.value)
    log = (tmp_path / "home" / "suite.log").read_text()
    assert "service 'cache' exited before the suite was ready" in log
    assert "everyone" in log, "the last lines show the rejected setting"


def test_a_service_killed_after_start_is_restarted_and_counted(
    tmp_path: Path, tiny_model: Path
) -> None:
    with running_suite(tmp_path / "home", tiny_model) as suite:
        assert "Headrace is up." in suite.log()
        before = suite.metric("launcher", "headrace_launcher_restarts_total", service="sanitizer")
        old = suite.pid("sanitizer")
        os.kill(old, 9)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                new = suite.pid("sanitizer")
            except (FileNotFoundError, ValueError):
                new = old
            if (
                new != old
                and alive(new)
                and serving(f"127.0.0.1:{suite.service_ports['sanitizer']}")
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"sanitizer not restarted:\n{suite.log()[-3000:]}")
        assert not alive(old)
        after = suite.metric("launcher", "headrace_launcher_restarts_total", service="sanitizer")
        assert after - before == 1
        log = suite.log()
        assert '"process_exited_restarting"' in log and "SIGKILL" in log
