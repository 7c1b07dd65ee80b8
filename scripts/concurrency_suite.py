#!/usr/bin/env python3
"""Concurrency suite: is the installed torch safe to use from many threads on this device?

    python scripts/concurrency_suite.py --device auto|mps|cuda|cpu [--quick]
        [--require-patched] [--batch-queue-file PATH] [--json OUT.json]

Runs the pytest checks in tests/concurrency/ against whatever torch this Python imports.
Needs only torch and pytest (not the mpsbuild package). Every check runs its scenario in a
child interpreter, so a crash fails that check, names the signal, and the run goes on.

Exit status: 0 iff no check failed and at least one passed. Checks that do not apply to the
device (stream semantics on CPU, BatchQueue on a torch without one) are reported as
"not applicable" and never counted as passed; with --require-patched they fail instead.
The throughput table's requests/s are measurements, not checks: its check passes or fails on
the correctness of the outputs under that load only. 2 means bad arguments.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

SUITE_DIR = Path(__file__).resolve().parent.parent / "tests" / "concurrency"
sys.path.insert(0, str(SUITE_DIR))

import pytest  # noqa: E402
from cs_config import (  # noqa: E402
    DEVICES,
    NOT_APPLICABLE_PREFIX,
    PLUGIN_ATTRIBUTE,
    TOLERANCES,
    SuiteOptions,
)
from cs_runner import ScenarioDied, describe_death, run_scenario  # noqa: E402

PROBE_TIMEOUT_S = 180.0
JSON_SCHEMA = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Thread-safety suite for the installed torch (MPS, CUDA or CPU).",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: MPS if a real allocation and result check pass, else CUDA, "
        "else CPU (default: auto)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer thread counts and iterations; every model and check stays",
    )
    parser.add_argument(
        "--require-patched",
        action="store_true",
        help="fail unless torch is our thread-safe MPS wheel (version "
        "'+mps.<digest>', torch.mps stream API, torch.mps.BatchQueue)",
    )
    parser.add_argument(
        "--batch-queue-file",
        type=Path,
        metavar="PATH",
        help="BatchQueue source to test when torch.mps.BatchQueue is missing "
        "(e.g. torch/mps/batch_queue.py of the patched tree)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the report here")
    parser.add_argument(
        "--select",
        metavar="EXPR",
        help="run only the checks matching this pytest -k expression "
        "(a partial run; the report says so)",
    )
    parser.add_argument(
        "--cpu-intra-op-threads",
        type=int,
        default=1,
        metavar="N",
        help="torch.set_num_threads in CPU child processes (default 1: the "
        "suite's own threads provide the parallelism)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="pytest -v output")
    args = parser.parse_args(argv)
    if args.batch_queue_file is not None and not args.batch_queue_file.is_file():
        parser.error(
            f"--batch-queue-file {args.batch_queue_file}: no such file; pass the "
            "BatchQueue source, e.g. <patched tree>/torch/mps/batch_queue.py"
        )
    if args.json is not None and not args.json.parent.exists():
        parser.error(f"--json {args.json}: directory {args.json.parent} does not exist")
    if args.cpu_intra_op_threads < 1:
        parser.error("--cpu-intra-op-threads must be at least 1")
    return args


# --------------------------------------------------------------------------- device


def probe(device: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(info figures, device-check figures) from a probe child; crashes become 'unusable'."""
    try:
        result = run_scenario(
            "probe", {"device": device}, timeout_s=PROBE_TIMEOUT_S, allow_crash=True
        )
    except ScenarioDied as died:  # timed out
        return {}, {"usable": False, "reason": str(died).splitlines()[0]}
    sections = result.sections
    info = sections.get("info", {}).get("figures", {})
    if device is None:
        return info, {}
    section = sections.get("device")
    if section is None or result.returncode != 0:
        last_words = (result.stderr_tail.strip().splitlines() or [""])[-1]
        reason = f"{describe_death(result).splitlines()[0]}: {last_words}"
        return info, {"usable": False, "reason": reason}
    if section["error"]:
        last_line = section["error"].strip().splitlines()[-1]
        return info, {"usable": False, "reason": f"allocation or compute failed: {last_line}"}
    return info, section["figures"]


class TorchMissing(RuntimeError):
    """torch cannot be imported (or crashes on import) in this Python."""


def resolve_device(requested: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(device, why it was chosen, torch info, device check) for --device `requested`."""
    info, cpu_check = probe("cpu")
    if not info:
        raise TorchMissing(
            f"the probe child could not import torch with {sys.executable} "
            f"({cpu_check.get('reason', 'unknown error')}); install torch in this Python"
        )
    if requested == "cpu":
        return "cpu", "requested", info, cpu_check
    if requested in ("mps", "cuda"):
        _, check = probe(requested)
        return requested, "requested", info, check
    notes = []
    for candidate, flag in (("mps", "mps_available"), ("cuda", "cuda_available")):
        if not info.get(flag):
            notes.append(f"{candidate}: not available")
            continue
        _, check = probe(candidate)
        if check.get("usable"):
            return candidate, "auto: " + "; ".join([*notes, f"{candidate}: usable"]), info, check
        notes.append(f"{candidate}: reported available but unusable ({check.get('reason')})")
    return "cpu", "auto: " + "; ".join([*notes, "cpu"]), info, cpu_check


# --------------------------------------------------------------------------- results


class SuitePlugin:
    """Registered with pytest.main: carries the options and collects every check's outcome."""

    def __init__(self, options: SuiteOptions) -> None:
        setattr(self, PLUGIN_ATTRIBUTE, options)
        self.checks: dict[str, dict[str, Any]] = {}

    def _entry(self, nodeid: str) -> dict[str, Any]:
        if nodeid not in self.checks:
            self.checks[nodeid] = {
                "name": check_name(nodeid),
                "nodeid": nodeid,
                "outcome": "passed",
                "duration_s": 0.0,
                "figures": {},
                "message": "",
            }
        return self.checks[nodeid]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self._entry(report.nodeid)
        entry["duration_s"] = round(entry["duration_s"] + report.duration, 3)
        for key, value in report.user_properties:
            if key == "figures":
                entry["figures"] = value
        if report.failed:
            entry["outcome"] = "failed"
            entry["message"] = failure_message(report)
        elif report.skipped and entry["outcome"] != "failed":
            reason = skip_reason(report)
            if reason.startswith(NOT_APPLICABLE_PREFIX):
                entry["outcome"] = "not_applicable"
                entry["message"] = reason.removeprefix(NOT_APPLICABLE_PREFIX).strip()
            else:  # a skip we did not decide on is never a pass
                entry["outcome"] = "failed"
                entry["message"] = f"unexpected skip: {reason}"

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            entry = self._entry(f"collect:{report.nodeid}")
            entry["outcome"] = "failed"
            entry["message"] = failure_message(report)


def check_name(nodeid: str) -> str:
    """'test_streams.py::test_stream[record_stream]' -> 'streams/stream[record_stream]'."""
    if "::" not in nodeid:
        return nodeid
    module, _, test = nodeid.partition("::")
    module = Path(module).name.removeprefix("test_").removesuffix(".py")
    return f"{module}/{test.removeprefix('test_')}"


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def failure_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    text = report.longreprtext or ""
    return text if len(text) <= 4000 else "...\n" + text[-4000:]


def build_report(
    args: argparse.Namespace,
    options: SuiteOptions,
    plugin: SuitePlugin,
    pytest_status: int,
    seconds: float,
) -> dict[str, Any]:
    checks = list(plugin.checks.values())
    counts = {
        outcome: sum(c["outcome"] == outcome for c in checks)
        for outcome in ("passed", "failed", "not_applicable")
    }
    problems = []
    if counts["failed"]:
        problems.append(f"{counts['failed']} check(s) failed")
    if not counts["passed"]:
        problems.append("no check passed")
    if pytest_status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        problems.append(f"pytest ended with {pytest.ExitCode(pytest_status).name}")
    throughput = next(
        (c["figures"].get("table") for c in checks if c["name"].startswith("throughput/")), None
    )
    return {
        "schema": JSON_SCHEMA,
        "suite": "concurrency_suite",
        "passed": not problems,
        "problems": problems,
        "device": options.device,
        "device_selection": options.device_reason,
        "device_check": options.device_check,
        "torch_version": options.info.get("torch_version"),
        "series_digest": options.info.get("series_digest"),
        "python": platform.python_version(),
        "platform": options.info.get("platform", platform.platform()),
        "options": {
            "quick": options.quick,
            "require_patched": options.require_patched,
            "batch_queue_file": options.batch_queue_file,
            "select": args.select,
            "partial_run": bool(args.select),
            "cpu_intra_op_threads": options.cpu_intra_op_threads,
        },
        "profile": options.profile.as_dict(),
        "tolerances": {
            dtype: {"rtol": rtol, "atol": atol} for dtype, (rtol, atol) in TOLERANCES.items()
        },
        "counts": counts,
        "duration_s": round(seconds, 1),
        "checks": checks,
        "throughput": throughput,
        "throughput_note": THROUGHPUT_NOTE,
    }


LABELS = {"passed": "PASS", "failed": "FAIL", "not_applicable": "N/A "}
THROUGHPUT_NOTE = ("measurements, not checks: no floor applies; the throughput check passes "
                   "or fails on its outputs only")


def print_summary(report: dict[str, Any]) -> None:
    print("\n=== concurrency suite summary ===")
    for check in report["checks"]:
        detail = check["figures"].get("summary", "") if check["outcome"] == "passed" else ""
        if check["outcome"] != "passed":
            detail = (check["message"].strip().splitlines() or [""])[0]
        print(f"{LABELS[check['outcome']]}  {check['name']:<52} {detail}"[:160])
    if report["throughput"]:
        print(f"\nthroughput (one-row requests, requests/s; {THROUGHPUT_NOTE}):")
        for mode, row in report["throughput"].items():
            if row.get("available", True):
                print(
                    f"  {mode:<16} {row['requests_per_s']:>10.1f}  x{row.get('vs_serial', 1):.2f}"
                    f"  ({row['threads']} threads)"
                )
            else:
                print(f"  {mode:<16} {'n/a':>10}  ({row['reason']})")
    counts = report["counts"]
    verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["problems"])
    print(
        f"\n{counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['not_applicable']} not applicable (neither passed nor failed) "
        f"in {report['duration_s']} s -> {verdict}"
    )


def print_header(options: SuiteOptions) -> None:
    info = options.info
    digest = info.get("series_digest") or "none (not a thread-safe MPS wheel)"
    print(f"device:        {options.device} ({options.device_reason})")
    print(f"torch:         {info.get('torch_version')}")
    print(f"series digest: {digest}")
    print(f"python:        {platform.python_version()} on {info.get('platform')}")
    print(
        f"profile:       {options.profile.name}, threads {list(options.profile.thread_counts)}, "
        f"{options.profile.iterations} iterations"
        + (", --require-patched" if options.require_patched else "")
    )
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        device, reason, info, device_check = resolve_device(args.device)
    except TorchMissing as missing:
        print(f"error: {missing}", file=sys.stderr)
        if args.json:
            failed = {
                "schema": JSON_SCHEMA,
                "suite": "concurrency_suite",
                "passed": False,
                "problems": [str(missing)],
                "checks": [],
            }
            args.json.write_text(json.dumps(failed, indent=2) + "\n")
        return 1
    options = SuiteOptions(
        device=device,
        quick=args.quick,
        require_patched=args.require_patched,
        batch_queue_file=str(args.batch_queue_file.resolve()) if args.batch_queue_file else None,
        info=info,
        device_check=device_check,
        device_reason=reason,
        cpu_intra_op_threads=args.cpu_intra_op_threads,
    )
    print_header(options)
    plugin = SuitePlugin(options)
    pytest_args = [
        str(SUITE_DIR),
        "-c",
        str(SUITE_DIR / "pytest.ini"),
        "--rootdir",
        str(SUITE_DIR),
        "-v" if args.verbose else "-q",
        "--tb=short",
        "-rN",
    ]
    if args.select:
        pytest_args += ["-k", args.select]
    status = int(pytest.main(pytest_args, plugins=[plugin]))
    report = build_report(args, options, plugin, status, time.monotonic() - started)
    print_summary(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"report: {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
