"""Helpers for the driver tests: git, build.py runs, and reference-repo fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from mpsbuild.reference import make_reference_repo  # noqa: E402
from mpsbuild.scratch import patched_reference_tree  # noqa: E402

# Points the tests at another patched PyTorch tree (a patch branch under work) instead of the
# reference files with patches/v2.9.1/series applied.
PATCHED_TREE_ENV = "MPSBUILD_PATCHED_TREE"

IDENTITY = {"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.com",
            "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.com",
            "GIT_AUTHOR_DATE": "2026-01-02T03:04:05+00:00",
            "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+00:00"}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                            env={**os.environ, **IDENTITY}, check=True)
    return result.stdout.strip()


def run_build(*args: str | Path, cwd: Path = PROJECT_ROOT,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run build.py as a user does; COLUMNS keeps rich from wrapping messages we match."""
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "build.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="session")
def reference_repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reference_repo(tmp_path_factory.mktemp("reference") / "repo")


@pytest.fixture
def reference_repo(reference_repo_template: Path, tmp_path: Path) -> Path:
    """A private copy per test, so tests may change it."""
    copy = tmp_path / "ref"
    shutil.copytree(reference_repo_template, copy, symlinks=True)
    return copy


EditFn = Callable[[Path], None]


@pytest.fixture
def make_series(reference_repo_template: Path, tmp_path: Path):
    """Build a series from edits: each (subject, edit) becomes one commit, then one patch."""

    def build(edits: list[tuple[str, EditFn]], name: str = "series") -> Path:
        work = tmp_path / f"author-{name}"
        shutil.copytree(reference_repo_template, work, symlinks=True)
        git(work, "checkout", "-q", "-b", "mps-patched")
        for subject, edit in edits:
            edit(work)
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", subject, "-m", f"Why: {subject.lower()}.")
        out = tmp_path / name
        out.mkdir()
        git(work, "format-patch", "-q", "--zero-commit", "--no-signature", "-o", str(out),
            "v2.9.1..mps-patched")
        patches = sorted(p.name for p in out.glob("*.patch"))
        (out / "series").write_text("".join(f"{p}\n" for p in patches))
        base = ""
        for path in git(work, "diff", "--name-only", "v2.9.1", "mps-patched").split():
            blob = subprocess.run(["git", "-C", str(work), "rev-parse", f"v2.9.1:{path}"],
                                  capture_output=True, text=True)
            if blob.returncode == 0:
                base += f"{path}\t{blob.stdout.strip()}\n"
        (out / "BASE").write_text(base)
        return out / "series"

    return build


def append_line(path: str, line: str) -> EditFn:
    def edit(repo: Path) -> None:
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as handle:
            handle.write(line + "\n")

    return edit


def replace_text(path: str, old: str, new: str) -> EditFn:
    def edit(repo: Path) -> None:
        target = repo / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new, 1))

    return edit


@pytest.fixture(scope="session")
def patched_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference tree with the series applied (built once a run), or the override."""
    override = os.environ.get(PATCHED_TREE_ENV)
    if override:
        tree = Path(override)
        if not (tree / "aten").is_dir() or not (tree / "torch").is_dir():
            pytest.fail(f"{PATCHED_TREE_ENV}={override} is not a PyTorch tree (no aten/, torch/)")
        return tree
    return patched_reference_tree(tmp_path_factory.mktemp("patched") / "pytorch")
