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


# --- a fresh clone, and a stand-in for GitHub ---------------------------------------------

REFERENCE_ENV = ("TORCH_REFERENCE_TREE", "TORCH_REFERENCE_PARTIAL", "TORCH_REFERENCE_URL",
                 "MPSBUILD_REFERENCE_EXTRA", "MPSBUILD_REFERENCE_CACHE", "MPSBUILD_REQUIRE_ALL")


def fresh_clone(parent: Path) -> Path:
    """What a user gets from `git clone`: this working tree's files, nothing beside them.

    Copied (not cloned) so uncommitted work is tested too; ``parent`` has no ``shared/``.
    """
    files = subprocess.run(["git", "-C", str(PROJECT_ROOT), "ls-files", "-z", "--cached",
                            "--others", "--exclude-standard"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    clone = parent / "clone"
    for name in filter(None, files):
        source = PROJECT_ROOT / name
        if source.is_file():
            target = clone / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(clone, "init", "-q", "-b", "main")
    assert not (parent / "shared").exists()
    return clone


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set none of our variables (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if k not in REFERENCE_ENV}
    return {**env, "COLUMNS": "200", **extra}


def closed_port_url() -> str:
    """An http URL on this machine where nothing listens (the connection is refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/pytorch"


class FileServer:
    """A 127.0.0.1 http.server serving ``root`` (GitHub's raw files, played locally)."""

    def __init__(self, root: Path) -> None:
        import functools
        import http.server
        import threading

        self.requested: list[str] = []
        requested = self.requested

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                requested.append(self.path)

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
