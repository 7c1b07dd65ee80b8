"""Results of a child scenario: named sections with figures and failures, kept on disk."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Section:
    """Outcome of one named part of a scenario: figures plus any failures."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}
        self.failures: list[str] = []
        self.not_applicable: str | None = None
        self.error: str | None = None

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)

    def mark_not_applicable(self, reason: str) -> None:
        self.not_applicable = reason

    def as_dict(self) -> dict[str, Any]:
        ok = not self.failures and self.error is None
        return {
            "ok": ok,
            "not_applicable": self.not_applicable,
            "figures": self.figures,
            "failures": self.failures,
            "error": self.error,
        }


class Reporter:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.state: dict[str, Any] = {"finished": False, "current": None, "sections": {}}
        self._flush()

    def _flush(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, default=str))
        os.replace(tmp, self.out)

    @contextmanager
    def section(self, name: str) -> Iterator[Section]:
        """Run one section; an exception inside it is recorded as that section's error."""
        self.state["current"] = name
        self._flush()
        section = Section()
        try:
            yield section
        except Exception:
            section.error = traceback.format_exc(limit=8)
        self.state["sections"][name] = section.as_dict()
        self.state["current"] = None
        self._flush()

    def finish(self) -> None:
        self.state["finished"] = True
        self._flush()
