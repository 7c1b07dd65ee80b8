#!/usr/bin/env python3
"""Build a git repository of the v2.9.1 reference files, tagged v2.9.1.

Usage: python scripts/make_reference_repo.py DEST [--tree DIR] [--stand-ins]

Use it as ``--repo DEST`` for ``build.py`` where GitHub is out of reach. The files come from
``$TORCH_REFERENCE_TREE``, ``../shared/pytorch-v2.9.1`` or a verified download (see
``mpsbuild/reference.py``), with the in-repo overlay ``ci/reference-extra`` merged in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpsbuild.errors import BuildError
from mpsbuild.reference import make_reference_repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="new directory for the repository")
    parser.add_argument("--tree", type=Path, default=None,
                        help="reference files (default: $TORCH_REFERENCE_TREE, else "
                             "../shared/pytorch-v2.9.1/tree, else downloaded and verified)")
    parser.add_argument("--stand-ins", action="store_true",
                        help="also add stand-ins for the files known only in part, so patches "
                             "on their known lines can be made and exported here")
    args = parser.parse_args()
    try:
        repo = make_reference_repo(args.dest, args.tree, stand_ins=args.stand_ins)
    except (FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BuildError as error:
        print(f"error: {error.problem}\nfix: {error.fix}", file=sys.stderr)
        return 1
    print(f"reference repository ready: {repo} (tag v2.9.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
