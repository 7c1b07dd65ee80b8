"""Where the driver's words go, what a dry run leaves behind, and which Python builds the
wheel (issue 13 item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from driver_helpers import PROJECT_ROOT, fresh_clone, run_build, user_env

from mpsbuild import bootstrap


def test_status_goes_to_stdout_so_it_can_be_piped(reference_repo, tmp_path):
    workdir = tmp_path / "w"
    assert run_build("--fetch", "--repo", reference_repo, "--workdir", workdir,
                     "--no-submodules").returncode == 0
    piped = subprocess.run(
        f"{sys.executable} {PROJECT_ROOT / 'build.py'} --status --workdir {workdir} | grep base:",
        shell=True, capture_output=True, text=True, env=user_env())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("base:")


def test_errors_go_to_stderr_only(tmp_path):
    result = run_build("--status", "--workdir", tmp_path / "nothing")
    assert result.returncode == 1
    assert "no PyTorch clone" in result.stderr and "fix:" in result.stderr
    assert "no PyTorch clone" not in result.stdout


def test_dry_run_writes_nothing_not_even_the_default_workdir(tmp_path):
    clone = fresh_clone(tmp_path)
    result = subprocess.run(
        [sys.executable, "build.py", "--dry-run", "--fetch", "--apply", "--check", "--wheel",
         "--test"], cwd=clone, capture_output=True, text=True, env=user_env())
    assert result.returncode == 0, result.stderr
    assert "would run: git clone" in result.stdout
    assert not (clone / "build").exists()
    assert not (clone / "wheelhouse").exists()


def test_the_build_venv_comes_from_the_users_python_after_the_re_exec(tmp_path):
    """After the re-exec into .venv-driver, --python still defaults to the user's Python."""
    user = "/opt/users/python3.12"
    result = run_build("--dry-run", "--apply", "--wheel", "--workdir", tmp_path / "w",
                       env={bootstrap.USER_PYTHON_ENV: user})
    assert result.returncode == 0, result.stderr
    assert f"would run: {user} -m venv {tmp_path / 'w' / 'build-venv'}" in result.stdout


def test_bootstrap_remembers_the_users_python_before_the_re_exec(monkeypatch, tmp_path):
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    monkeypatch.setattr(bootstrap, "DRIVER_VENV", tmp_path / "venv")
    monkeypatch.setattr(bootstrap, "missing_modules", lambda: ["git"])
    monkeypatch.delenv("MPSBUILD_BOOTSTRAPPED", raising=False)
    monkeypatch.delenv(bootstrap.USER_PYTHON_ENV, raising=False)
    execs: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        execs.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    with pytest.raises(SystemExit):
        bootstrap.ensure_driver_dependencies()
    assert execs and execs[0][0] == str(venv_python)
    assert os.environ[bootstrap.USER_PYTHON_ENV] == sys.executable
    assert bootstrap.user_python() == Path(sys.executable)
