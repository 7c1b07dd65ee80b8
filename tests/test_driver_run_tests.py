"""What the test command and the concurrency suite count (issue 13 item 9).

--require-all turns skipped tests of tests/ into failures; the suite's checks that cannot
apply on CPU stay "not applicable" (neither passed nor failed), and the run's summary says how
many there were. The suite's throughput figures are measurements: its check passes or fails on
the outputs alone, and the report says so.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from driver_helpers import PROJECT_ROOT, user_env


def load_run_tests():
    spec = importlib.util.spec_from_file_location("run_tests",
                                                  PROJECT_ROOT / "scripts" / "run_tests.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_tests"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_summary_counts_the_suites_not_applicable_checks(tmp_path):
    report = tmp_path / "suite.json"
    report.write_text(json.dumps({"counts": {"passed": 22, "failed": 0, "not_applicable": 9}}))
    line = load_run_tests().suite_counts(report)
    assert "22 checks passed, 0 failed, 9 not applicable" in line
    assert "neither passed nor failed, with or without --require-all" in line
    assert "throughput figures are measurements, not checks" in line


def test_summary_of_a_missing_report_claims_nothing(tmp_path):
    assert load_run_tests().suite_counts(tmp_path / "absent.json") == ""


def test_throughput_is_reported_as_measurements_not_as_a_pass(tmp_path):
    out = tmp_path / "suite.json"
    result = subprocess.run(
        [sys.executable, "scripts/concurrency_suite.py", "--device", "cpu", "--quick",
         "--select", "throughput", "--json", str(out)], cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=900, env=user_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [check["name"] for check in report["checks"]]
    assert names == ["throughput/throughput_outputs_correct_under_load"]
    assert "measurements, not checks: no floor" in report["throughput_note"]
    assert "requests/s; measurements, not checks" in result.stdout
    assert "outputs right; requests/s measured, no floor" in result.stdout
    assert set(report["throughput"]) >= {"serial", "locked_threads", "free_threads"}


def test_require_all_is_documented_as_what_it_does():
    doc = load_run_tests().__doc__
    assert "makes pytest fail every test of tests/ that skips" in doc
    assert 'stay "not applicable": neither passed nor failed' in doc


def test_stale_suite_report_is_not_summarized(tmp_path, monkeypatch):
    run_tests = load_run_tests()
    stale = tmp_path / "suite.json"
    stale.write_text(json.dumps({"counts": {"passed": 1, "failed": 0, "not_applicable": 0}}))
    monkeypatch.setattr(run_tests, "SUITE_JSON", stale)
    step = run_tests.Step("concurrency-suite", [sys.executable, "-c", "raise SystemExit(3)"])
    assert run_tests.run_step(step, tree_ok=True) == "failed"
    assert not stale.exists()


def test_patched_tree_failure_is_a_failed_step_showing_the_cause(tmp_path, capsys):
    """Issue 13 item 1: the cause was captured and hidden behind a CalledProcessError."""
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'reference tree /x not found' >&2\nexit 1\n")
    failing.chmod(0o755)
    outcome = load_run_tests().build_patched_tree(str(failing), tmp_path / "tree")
    assert outcome == "failed"
    shown = capsys.readouterr().out
    assert "reference tree /x not found" in shown and "patched-tree: failed" in shown
