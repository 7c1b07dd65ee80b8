"""A git repository of the v2.9.1 reference files, for tests and offline checks.

GitHub is out of reach on our Linux machines, so tests and ``--check`` run against a repository
built from ``shared/pytorch-v2.9.1/tree``: the exact v2.9.1 files our patches touch, committed
once with a fixed identity and date (so the commit is the same on every machine) and tagged
``v2.9.1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TAG = "v2.9.1"

# Fixed identity and date: the reference commit hash is then identical on every machine.
_FIXED_GIT_ENV = {
    "GIT_AUTHOR_NAME": "reference",
    "GIT_AUTHOR_EMAIL": "reference@localhost",
    "GIT_COMMITTER_NAME": "reference",
    "GIT_COMMITTER_EMAIL": "reference@localhost",
    "GIT_AUTHOR_DATE": "2025-11-12T00:00:00+00:00",
    "GIT_COMMITTER_DATE": "2025-11-12T00:00:00+00:00",
}


def shared_dir() -> Path:
    """``shared/`` beside the checkout (CI clones the project with shared/ next to it)."""
    return PROJECT_ROOT.parent / "shared"


def reference_tree() -> Path:
    """The exact v2.9.1 files: ``$TORCH_REFERENCE_TREE`` or ``../shared/pytorch-v2.9.1/tree``."""
    override = os.environ.get("TORCH_REFERENCE_TREE")
    return Path(override) if override else shared_dir() / "pytorch-v2.9.1" / "tree"


def reference_partial() -> Path:
    """Files known only in part: ``$TORCH_REFERENCE_PARTIAL`` or ``../shared/.../partial``."""
    override = os.environ.get("TORCH_REFERENCE_PARTIAL")
    return Path(override) if override else shared_dir() / "pytorch-v2.9.1" / "partial"


def make_reference_repo(dest: Path, tree: Path | None = None) -> Path:
    """Create ``dest`` as a git repo holding ``tree`` in one commit tagged ``v2.9.1``.

    ``dest`` must not exist yet; the function never touches an existing directory.
    """
    source = tree or reference_tree()
    if not source.is_dir():
        raise FileNotFoundError(
            f"reference tree {source} not found; set TORCH_REFERENCE_TREE to the folder that "
            "holds the v2.9.1 files (shared/pytorch-v2.9.1/tree)"
        )
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose a new path")
    shutil.copytree(source, dest)
    env = {**os.environ, **_FIXED_GIT_ENV}

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env,
                       stdout=subprocess.DEVNULL)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "PyTorch v2.9.1 reference files")
    git("tag", REFERENCE_TAG)
    return dest
