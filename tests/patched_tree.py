"""Where the tests find the patched v2.9.1 tree: the project's series, or an explicit override.

``TORCH_PATCHED_TREE`` points at a patched checkout (for example a patch repo on its
``mps-patched`` branch) before the lead has merged its patches into the series; without it the
reference tree is rebuilt with ``patches/v2.9.1/series`` applied.
"""

from __future__ import annotations

import os
from pathlib import Path

from mpsbuild.scratch import patched_reference_tree

OVERRIDE_VARIABLE = "TORCH_PATCHED_TREE"


def patched_tree(scratch: Path) -> Path:
    """The patched tree: ``$TORCH_PATCHED_TREE``, else the series applied under ``scratch``.

    ``scratch`` must be a fresh directory; the tree is created at ``scratch / "patched"``.
    """
    override = os.environ.get(OVERRIDE_VARIABLE)
    if not override:
        return patched_reference_tree(scratch / "patched")
    tree = Path(override)
    if not (tree / "aten").is_dir() or not (tree / "torch").is_dir():
        raise FileNotFoundError(
            f"{OVERRIDE_VARIABLE}={override} is not a PyTorch tree (no aten/ and torch/); "
            "point it at a patched checkout or unset it to use the patch series"
        )
    return tree
