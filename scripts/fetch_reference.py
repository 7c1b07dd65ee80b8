#!/usr/bin/env python3
"""Recreate ``shared/pytorch-v2.9.1`` (the reference files) from a PyTorch repository.

Usage: python scripts/fetch_reference.py --dest ../shared/pytorch-v2.9.1 [--repo URL] [--ref v2.9.1]

Our own machines cannot reach GitHub and keep these files in ``shared/``; a machine that can
(GitHub Actions) rebuilds the same layout with this script. ``ci/reference-files.tsv`` lists each
path with its git blob sha1 at v2.9.1; every file is verified against it. Files that ``shared/``
knows only in part are written to ``partial/`` with every line known, since here the whole
real file is at hand.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "ci" / "reference-files.tsv"


def read_manifest() -> list[tuple[str, str, str]]:
    rows = []
    for line in MANIFEST.read_text().splitlines():
        if line and not line.startswith("#"):
            path, blob, kind = line.split("\t")
            rows.append((path, blob, kind))
    return rows


def sparse_clone(repo: str, ref: str, paths: list[str], dest: Path) -> None:
    url = repo if "://" in repo else Path(repo).resolve().as_uri()
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", ref,
                    "--filter=blob:none", "--no-checkout", url, str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "sparse-checkout", "set", "--no-cone",
                    *[f"/{p}" for p in paths]], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet"], check=True)


def blob_sha(path: Path) -> str:
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def write_reference(clone: Path, dest: Path, rows: list[tuple[str, str, str]]) -> list[str]:
    problems = []
    for path, expected, kind in rows:
        source = clone / path
        if not source.exists():
            problems.append(f"{path}: missing from the repository")
            continue
        actual = blob_sha(source)
        if not actual.startswith(expected):
            problems.append(f"{path}: blob {actual}, expected {expected}")
            continue
        if kind == "tree":
            target = dest / "tree" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            target = dest / "partial" / f"{path}.partial"
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = source.read_text(encoding="utf-8").splitlines()
            header = f"# {path} at v2.9.1 (git blob {actual}): every line is known.\n"
            target.write_text(header + "".join(f"{i}|{t}\n" for i, t in enumerate(lines, 1)))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="folder to create")
    parser.add_argument("--repo", default="https://github.com/pytorch/pytorch.git")
    parser.add_argument("--ref", default="v2.9.1")
    parser.add_argument("--kinds", default="tree,partial",
                        help="which manifest entries to fetch (default: tree,partial)")
    args = parser.parse_args()
    if args.dest.exists() and any(args.dest.iterdir()):
        print(f"error: {args.dest} already exists and is not empty.\n"
              "fix: pass a new --dest, or remove the old copy yourself.", file=sys.stderr)
        return 2
    kinds = set(args.kinds.split(","))
    rows = [row for row in read_manifest() if row[2] in kinds]
    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "pytorch"
        sparse_clone(args.repo, args.ref, [path for path, _, _ in rows], clone)
        problems = write_reference(clone, args.dest, rows)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"reference files: {len(rows) - len(problems)} of {len(rows)} written to {args.dest}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
