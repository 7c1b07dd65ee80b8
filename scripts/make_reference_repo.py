#!/usr/bin/env python3
"""Build a git repository of the v2.9.1 reference files, tagged v2.9.1.

Usage: python scripts/make_reference_repo.py DEST [--tree DIR]

Use it as ``--repo DEST`` for ``build.py`` where GitHub is out of reach.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpsbuild.reference import make_reference_repo, reference_tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="new directory for the repository")
    parser.add_argument("--tree", type=Path, default=None,
                        help=f"reference files (default: {reference_tree()})")
    args = parser.parse_args()
    try:
        repo = make_reference_repo(args.dest, args.tree)
    except (FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"reference repository ready: {repo} (tag v2.9.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
