"""Finding the BatchQueue under test (child side)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

MODULE_NAME = "concurrency_suite_batch_queue"


def installed_batch_queue() -> Any | None:
    """torch.mps.BatchQueue of our wheel, or None on a torch without it."""
    return getattr(torch.mps, "BatchQueue", None)


def load_batch_queue(file: str | None) -> tuple[Any | None, str]:
    """(BatchQueue class, where it came from); (None, reason) if there is none to test.

    The installed torch.mps.BatchQueue wins; otherwise `file` (the BatchQueue source of the
    patched tree, so stock torch on CPU/CUDA can run the check) must define `BatchQueue` and may
    import only torch and the standard library.
    """
    cls = installed_batch_queue()
    if cls is not None:
        return cls, "torch.mps.BatchQueue"
    if not file:
        return None, "torch.mps.BatchQueue is missing and no --batch-queue-file was given"
    path = Path(file)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a Python module from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    cls = getattr(module, "BatchQueue", None)
    if cls is None:
        raise ImportError(f"{path} defines no BatchQueue")
    return cls, str(path)
