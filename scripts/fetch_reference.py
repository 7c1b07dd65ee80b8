#!/usr/bin/env python3
"""Recreate the reference files (``shared/pytorch-v2.9.1`` layout) from PyTorch v2.9.1.

Usage: python scripts/fetch_reference.py --dest DIR [--url URL | --repo URL_OR_PATH [--ref REF]]

By default every file is downloaded from GitHub at the pinned v2.9.1 commit (``--url``, or
``$TORCH_REFERENCE_URL``, names a mirror); ``--repo`` takes them from a git repository instead.
The files are those of ``ci/reference-files.tsv`` plus the in-repo overlay
(``ci/reference-extra``); each is verified against its git blob. Files known only in part are
written to ``partial/`` with every line known, since the whole real file is at hand, and the
overlay is then checked against the real files. The test command does the same download by
itself when no other copy is at hand (cached in ``.cache/reference``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpsbuild.errors import BuildError
from mpsbuild.reference import (
    ManifestRow,
    ReferenceFiles,
    base_url,
    download_reference,
    git_blob,
    merge_overlay,
    overlay_dir,
    reference_rows,
    write_reference_files,
)


def sparse_clone(repo: str, ref: str, paths: list[str], dest: Path) -> None:
    url = repo if "://" in repo else Path(repo).resolve().as_uri()
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", ref,
                    "--filter=blob:none", "--no-checkout", url, str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "sparse-checkout", "set", "--no-cone",
                    *[f"/{p}" for p in paths]], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet"], check=True)


def from_clone(clone: Path, dest: Path, rows: list[ManifestRow], source: str) -> list[str]:
    problems, files = [], []
    for row in rows:
        path = clone / row.path
        if not path.exists():
            problems.append(f"{row.path}: missing from the repository")
            continue
        body = path.read_bytes()
        if not git_blob(body).startswith(row.blob):
            problems.append(f"{row.path}: blob {git_blob(body)}, expected {row.blob}")
            continue
        files.append((row, body))
    if not problems:
        write_reference_files(dest, files, source)
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="folder to create")
    parser.add_argument("--url", default=None,
                        help=f"where to download from (default: {base_url()})")
    parser.add_argument("--repo", default=None,
                        help="take the files from this git repository (URL or path) instead")
    parser.add_argument("--ref", default="v2.9.1", help="with --repo: the tag (default v2.9.1)")
    parser.add_argument("--kinds", default="tree,partial",
                        help="which entries to fetch (default: tree,partial)")
    args = parser.parse_args()
    if args.dest.exists() and any(args.dest.iterdir()):
        print(f"error: {args.dest} already exists and is not empty.\n"
              "fix: pass a new --dest, or remove the old copy yourself.", file=sys.stderr)
        return 2
    kinds = set(args.kinds.split(","))
    rows = [row for row in reference_rows() if row.kind in kinds]
    try:
        if args.repo:
            with tempfile.TemporaryDirectory() as scratch:
                clone = Path(scratch) / "pytorch"
                sparse_clone(args.repo, args.ref, [row.path for row in rows], clone)
                problems = from_clone(clone, args.dest, rows, f"{args.repo} @ {args.ref}")
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if problems:
                print(f"reference files: {len(problems)} of {len(rows)} did not match; nothing "
                      "written", file=sys.stderr)
                return 1
        else:
            download_reference((args.url or base_url()).rstrip("/"), rows, args.dest)
        # The overlay must agree with the real files it describes.
        with tempfile.TemporaryDirectory() as scratch:
            merge_overlay(ReferenceFiles(args.dest / "tree", args.dest / "partial", "fetched"),
                          overlay_dir(), Path(scratch))
    except BuildError as error:
        print(f"error: {error.problem}\nfix: {error.fix}", file=sys.stderr)
        return 1
    print(f"reference files: {len(rows)} of {len(rows)} written to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
