"""Child-process entry point: `python cs_child.py --scenario NAME --params JSON --out FILE`.

Runs one scenario from cs_scenarios.SCENARIOS and writes its result to FILE after every
section, so a crash still leaves the finished sections and the name of the one that was running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script: our own directory is sys.path[0], so the cs_* modules import directly.
from cs_report import Reporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    params: dict[str, Any] = json.loads(args.params)
    if args.scenario == SELFTEST_CRASH:
        _crash_on_purpose(Reporter(args.out))

    import cs_scenarios  # imports torch

    scenario = cs_scenarios.SCENARIOS.get(args.scenario)
    if scenario is None:
        known = ", ".join(sorted(cs_scenarios.SCENARIOS))
        print(f"unknown scenario {args.scenario!r}; known: {known}", file=sys.stderr)
        return 2
    reporter = Reporter(args.out)
    cs_scenarios.prepare_process(params)
    scenario(params, reporter)
    reporter.finish()
    # The child then exits normally: a crash during interpreter teardown (threads still
    # holding device state) is a bug users would hit too, so it is reported, not avoided.
    return 0


SELFTEST_CRASH = "selftest_crash"


def _crash_on_purpose(reporter: Reporter) -> None:
    """Proves crash detection: this child dies by SIGSEGV in the middle of a section."""
    import signal

    reporter.state["current"] = "about_to_crash"
    reporter._flush()
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)  # never reached


if __name__ == "__main__":
    sys.exit(main())
