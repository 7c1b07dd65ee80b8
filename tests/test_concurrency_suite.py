"""Tests of the concurrency suite itself (scripts/concurrency_suite.py + tests/concurrency/).

The suite's checks are collected only through the script; here we run the script end to end on
CPU (a few selected checks, to stay fast: CI also runs the whole quick suite) and prove that it
fails when it must: undetected control, broken BatchQueue, --require-patched on stock torch,
a crashing child, bad arguments. Unit tests cover the checker's comparison rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "concurrency_suite.py"
SUITE_DIR = ROOT / "tests" / "concurrency"
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(SUITE_DIR))

import cs_checker  # noqa: E402
import cs_config  # noqa: E402
import cs_runner  # noqa: E402
import cs_scenarios  # noqa: E402
import cs_streams  # noqa: E402


def run_suite(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 400
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(report), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        check=False,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return completed, data


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["outcome"] for check in report["checks"]}


# --------------------------------------------------------------------------- end to end


def test_cpu_run_passes_and_reports(tmp_path: Path) -> None:
    completed, report = run_suite(
        tmp_path,
        "--select",
        "environment or control or mlp or streams or batch_queue",
        "--batch-queue-file",
        str(FIXTURES / "batch_queue_double.py"),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    head = completed.stdout.splitlines()[:3]
    assert head[0].startswith("device:        cpu") and head[1].startswith("torch:")
    assert head[2].startswith("series digest: none")
    assert report["passed"] is True and report["device"] == "cpu"
    assert report["torch_version"] == torch.__version__
    assert report["options"]["partial_run"] is True
    assert report["tolerances"]["float32"] == {"rtol": 1e-4, "atol": 1e-4}
    results = outcomes(report)
    assert results["control/unsafe_shared_module_is_detected"] == "passed"
    assert results["parallel_correctness/workload[mlp]"] == "passed"
    assert results["environment/crash_detection"] == "passed"
    assert results["environment/patched_build"] == "not_applicable"
    assert results["batch_queue/batch_queue[clients_64_single_row]"] == "passed"
    streams = [name for name in results if name.startswith("streams/")]
    assert len(streams) == len(cs_config.STREAM_CHECK_NAMES)
    assert all(results[name] == "not_applicable" for name in streams)  # never "passed" on CPU
    assert report["counts"]["not_applicable"] == len(streams) + 1
    mlp = next(c for c in report["checks"] if c["name"] == "parallel_correctness/workload[mlp]")
    per_count = mlp["figures"]["inference_mode"]["per_thread_count"]
    assert [e["threads"] for e in per_count] == list(cs_config.QUICK.thread_counts)
    assert all(e["outputs_checked"] == e["threads"] * cs_config.QUICK.iterations for e in per_count)
    control = next(c for c in report["checks"] if c["name"].startswith("control/"))
    assert control["figures"]["mismatches_detected"] > 0


def test_suite_fails_when_control_is_not_detected(tmp_path: Path) -> None:
    completed, report = run_suite(
        tmp_path, "--select", "control", env={cs_config.SELFTEST_ENV: "safe-control"}
    )
    assert completed.returncode == 1
    assert outcomes(report) == {"control/unsafe_shared_module_is_detected": "failed"}
    assert "did NOT detect" in report["checks"][0]["message"]


def test_a_crashing_check_fails_and_names_the_signal(tmp_path: Path) -> None:
    completed, report = run_suite(
        tmp_path, "--select", "control", env={cs_config.SELFTEST_ENV: "crash-control"}
    )
    assert completed.returncode == 1
    [check] = report["checks"]
    assert check["outcome"] == "failed"
    assert (
        "scenario 'control' died by SIGSEGV (signal 11) during section 'control'"
        in (check["message"])
    )


def test_suite_fails_on_a_batch_queue_that_mixes_up_results(tmp_path: Path) -> None:
    completed, report = run_suite(
        tmp_path,
        "--select",
        "batch_queue and single_row",
        "--batch-queue-file",
        str(FIXTURES / "batch_queue_broken_double.py"),
    )
    assert completed.returncode == 1
    check = report["checks"][0]
    assert check["outcome"] == "failed" and "differ from golden" in check["message"]


def test_require_patched_fails_on_stock_torch(tmp_path: Path) -> None:
    completed, report = run_suite(
        tmp_path, "--require-patched", "--select", "patched or batch_queue"
    )
    assert completed.returncode == 1
    results = outcomes(report)
    assert results["environment/patched_build"] == "failed"
    assert all(results[name] == "failed" for name in results if name.startswith("batch_queue/"))


def test_all_not_applicable_is_not_a_pass(tmp_path: Path) -> None:
    completed, report = run_suite(tmp_path, "--select", "test_streams")
    assert completed.returncode == 1
    assert report["counts"]["passed"] == 0 and "no check passed" in report["problems"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--batch-queue-file", "/nonexistent/bq.py"], "no such file"),
        (["--json", "/nonexistent-dir/out.json"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert message in completed.stderr


def test_project_run_does_not_collect_the_suite() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(SUITE_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, completed.stdout


# --------------------------------------------------------------------------- units


def test_child_death_by_signal_names_signal_and_scenario() -> None:
    with pytest.raises(cs_runner.ScenarioDied) as died:
        cs_runner.run_scenario("selftest_crash", {}, timeout_s=60)
    assert "'selftest_crash' died by SIGSEGV (signal 11)" in str(died.value)
    assert "during section 'about_to_crash'" in str(died.value)


def test_compare_applies_per_dtype_tolerance() -> None:
    gold = torch.ones(4)
    rtol, atol = cs_config.TOLERANCES["float32"]
    inside = gold + (atol + rtol) * 0.5
    outside = gold + (atol + rtol) * 2
    assert cs_checker.compare((gold.clone(),), (gold,)).identical
    assert cs_checker.compare((inside,), (gold,)).matches
    assert not cs_checker.compare((outside,), (gold,)).matches
    nan = gold.clone()
    nan[1] = float("nan")
    result = cs_checker.compare((nan,), (gold,))
    assert not result.matches and result.max_abs_diff == float("inf")
    pivots = torch.tensor([1, 2, 3], dtype=torch.int32)
    assert not cs_checker.compare((pivots + 1,), (pivots,)).matches  # integers: exact
    assert not cs_checker.compare((gold[:3],), (gold,)).matches  # shape
    assert not cs_checker.compare((gold, gold), (gold,)).matches  # arity
    half = torch.ones(4, dtype=torch.float16)
    assert cs_checker.compare((half * 1.004,), (half,)).matches  # within float16's 1e-2


def test_checker_counts_each_mismatch_and_the_worst_difference() -> None:
    inputs = [(torch.full((2,), float(i)),) for i in range(4)]
    goldens = [(x * 2,) for (x,) in inputs]
    calls = {"n": 0}

    def every_third_call_is_wrong(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return x * 2 + (5.0 if calls["n"] % 3 == 0 else 0.0)

    [stats] = cs_checker.run_parallel_check(
        every_third_call_is_wrong, inputs, goldens, thread_counts=[1], iterations=9
    )
    assert stats["outputs_checked"] == 9 and stats["mismatches"] == 3
    assert stats["worst_abs_diff"] == 5.0


def test_checker_reports_worker_exceptions() -> None:
    inputs = [(torch.ones(2),)]

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kernel exploded")

    [stats] = cs_checker.run_parallel_check(
        broken, inputs, [(torch.ones(2),)], thread_counts=[4], iterations=2
    )
    assert stats["error_count"] == 4 and "kernel exploded" in stats["errors"][0]
    assert stats["outputs_checked"] == 0


def test_series_digest_comes_from_the_local_version_label() -> None:
    assert cs_scenarios.series_digest("2.9.1+mps.0123abcd") == "0123abcd"
    assert cs_scenarios.series_digest("2.9.1") is None
    assert cs_scenarios.series_digest("2.13.0+cpu") is None
    assert cs_scenarios.series_digest("2.9.1+mps.xyz") is None


def test_stream_check_names_match_their_code() -> None:
    assert tuple(cs_streams.STREAM_CHECKS) == cs_config.STREAM_CHECK_NAMES


def test_every_workload_builds_on_cpu() -> None:
    from cs_workloads import NUM_INPUTS, build_workload

    for name in cs_config.WORKLOADS:
        workload = build_workload(name, "cpu")
        assert len(workload.inputs) == NUM_INPUTS
        goldens = cs_checker.golden_outputs(workload.call, workload.inputs[:2])
        assert not cs_checker.compare(goldens[0], goldens[1]).matches, name  # inputs differ
