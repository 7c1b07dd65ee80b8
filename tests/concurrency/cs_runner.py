"""Parent side of crash detection: every scenario runs in a fresh child interpreter.

The child is a new `python` process (spawn semantics, never fork: a forked child would inherit
the parent's threads and device state). A child that dies by a signal is reported as a failure
naming the signal and the scenario; a child that hangs is killed at its timeout and reported as
a possible deadlock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITE_DIR = Path(__file__).resolve().parent
CHILD_SCRIPT = SUITE_DIR / "cs_child.py"
STDERR_TAIL_LINES = 40


class ScenarioDied(AssertionError):
    """A scenario's child process crashed, hung or exited without a result."""


@dataclass
class ScenarioResult:
    scenario: str
    returncode: int
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""

    @property
    def sections(self) -> dict[str, Any]:
        return self.data.get("sections", {})


def signal_name(returncode: int) -> str:
    """'SIGSEGV (signal 11)' for a child killed by signal 11 (returncode -11)."""
    number = -returncode
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_scenario(
    scenario: str,
    params: dict[str, Any],
    *,
    timeout_s: float,
    allow_crash: bool = False,
    label: str | None = None,
    env: dict[str, str] | None = None,
) -> ScenarioResult:
    """Run `scenario` in a child interpreter and return what it reported.

    Raises ScenarioDied (an AssertionError, so pytest reports a failure) when the child is
    killed by a signal, times out, or exits without writing its result; with allow_crash the
    result is returned instead, carrying whatever sections the child finished before dying.
    `label` names the scenario in reports (e.g. "correctness[mlp]"); default: its name.
    `env` adds variables to the child's environment (read by torch at import, e.g.
    PYTORCH_MPS_STREAM_TRACKING).
    """
    label = label or scenario
    import time

    with tempfile.TemporaryDirectory(prefix="concurrency-suite-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-X",
            "faulthandler",  # Python stacks of every thread on SIGSEGV/SIGABRT/SIGBUS
            str(CHILD_SCRIPT),
            "--scenario",
            scenario,
            "--params",
            json.dumps(params),
            "--out",
            str(result_path),
        ]
        started = time.monotonic()
        try:
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            partial = _read_result(result_path)
            raise ScenarioDied(
                f"scenario {label!r} did not finish within {timeout_s:.0f} s "
                f"(a hang or deadlock); last section started: {partial.get('current')!r}\n"
                f"{_tail(stderr)}"
            ) from None
        seconds = time.monotonic() - started
        data = _read_result(result_path)
        result = ScenarioResult(
            scenario=label,
            returncode=completed.returncode,
            seconds=seconds,
            data=data,
            stderr_tail=_tail(completed.stderr),
        )
    if completed.returncode == 0 and data.get("finished"):
        return result
    if allow_crash:
        return result
    raise ScenarioDied(describe_death(result))


def describe_death(result: ScenarioResult) -> str:
    where = result.data.get("current")
    if where:
        during = f" during section {where!r}"
    elif result.data.get("finished"):
        during = " after finishing every section (at interpreter exit)"
    else:
        during = ""
    if result.returncode < 0:
        what = f"died by {signal_name(result.returncode)}"
    elif result.returncode != 0:
        what = f"exited with status {result.returncode}"
    else:
        what = "exited without writing its result"
    return f"scenario {result.scenario!r} {what}{during}\n--- child stderr (tail) ---\n" + (
        result.stderr_tail or "(empty)"
    )


def _read_result(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
