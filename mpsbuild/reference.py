"""A git repository of the v2.9.1 reference files, for tests and offline checks.

GitHub is out of reach on our Linux machines, so tests and ``--check`` run against a repository
built from ``shared/pytorch-v2.9.1/tree``: the exact v2.9.1 files our patches touch, committed
once with a fixed identity and date (so the commit is the same on every machine) and tagged
``v2.9.1``.
"""

from __future__ import annotations

import os
import re
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


STAND_IN_FILLER = "// line {number}: not held here (shared/ knows this file in part)"


def stand_in_text(partial_file: Path) -> str:
    """A stand-in for a file known in part: known lines at their numbers, filler elsewhere.

    Patches whose hunks touch only known lines apply to it exactly as to the real file, so a
    maintainer can work on such files in a repository of the reference files.
    """
    from mpsbuild.patchfile import PartialFile

    lines = PartialFile(partial_file.read_text()).lines
    return "".join((text if text is not None else STAND_IN_FILLER.format(number=i)) + "\n"
                   for i, text in enumerate(lines, 1))


def partial_files(partial_root: Path | None = None) -> dict[str, Path]:
    """Repository path -> its ``.partial`` file."""
    root = partial_root or reference_partial()
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)).removesuffix(".partial"): p
            for p in sorted(root.rglob("*.partial"))}


def partial_blob(partial_file: Path) -> str:
    """The (abbreviated) git blob of the real file, from the partial file's header."""
    match = re.search(r"git blob ([0-9a-f]{7,40})", partial_file.read_text().split("\n", 1)[0])
    return match.group(1) if match else ""


def make_reference_repo(dest: Path, tree: Path | None = None, *, stand_ins: bool = False) -> Path:
    """Create ``dest`` as a git repo holding ``tree`` in one commit tagged ``v2.9.1``.

    With ``stand_ins``, files known only in part are added as stand-ins (see ``stand_in_text``).
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
    if stand_ins:
        for path, partial in partial_files().items():
            target = dest / path
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(stand_in_text(partial))
    env = {**os.environ, **_FIXED_GIT_ENV}

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env,
                       stdout=subprocess.DEVNULL)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "PyTorch v2.9.1 reference files")
    git("tag", REFERENCE_TAG)
    return dest
