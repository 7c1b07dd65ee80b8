"""Parent-side options of the concurrency suite, for tests of what applies where."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "concurrency"))

from cs_config import SuiteOptions


def suite_on(device: str, *, require_patched: bool = False, **info: Any) -> SuiteOptions:
    """Quick-profile options for ``device`` whose device check found it usable; ``info`` is
    what the parent learned of the torch under test (e.g. ``mps_missing_stream_api``)."""
    return SuiteOptions(
        device=device,
        quick=True,
        require_patched=require_patched,
        batch_queue_file=None,
        info=info,
        device_check={"usable": True},
    )
