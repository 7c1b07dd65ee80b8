"""Reading ``git format-patch`` files: which files they touch, their hunks, and proving that
hunks on files we know only in part (``partial/``) touch only known lines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class Hunk:
    header: str
    old_start: int
    lines: list[str] = field(default_factory=list)  # each with its ' ', '-' or '+' marker

    @property
    def old_lines(self) -> list[str]:
        return [line[1:] for line in self.lines if line[:1] in (" ", "-")]

    @property
    def new_lines(self) -> list[str]:
        return [line[1:] for line in self.lines if line[:1] in (" ", "+")]


@dataclass
class FileDiff:
    path: str  # path after the change (or before, for a deletion)
    is_new: bool = False
    is_deleted: bool = False
    hunks: list[Hunk] = field(default_factory=list)


def parse_patch(text: str) -> list[FileDiff]:
    """The file diffs of one patch, in order (binary diffs appear with no hunks)."""
    diffs: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    for line in text.splitlines():
        if line.startswith("diff --git "):
            current = FileDiff(path=line.split(" b/", 1)[1])
            diffs.append(current)
            hunk = None
        elif current is None:
            continue
        elif hunk is None and line.startswith("new file mode"):
            current.is_new = True
        elif hunk is None and line.startswith("deleted file mode"):
            current.is_deleted = True
        elif match := HUNK_HEADER.match(line):
            hunk = Hunk(header=line, old_start=int(match.group(1)))
            current.hunks.append(hunk)
        elif hunk is not None and line[:1] in (" ", "-", "+"):
            hunk.lines.append(line)
        elif hunk is not None and line == "-- ":
            break  # the e-mail signature that follows the last diff
    return diffs


def touched_paths(patch: Path) -> list[FileDiff]:
    return parse_patch(patch.read_text(encoding="utf-8", errors="surrogateescape"))


class PartialFile:
    """A file known only in part: ``LINENO|TEXT`` lines, ``...`` for unknown stretches.

    Hunks are applied to this sparse model in series order, so a later patch on the same file
    is checked against the lines an earlier patch left there.
    """

    def __init__(self, text: str) -> None:
        known: dict[int, str] = {}
        for raw in text.splitlines():
            if raw.startswith("#") or raw.strip() == "...":
                continue
            number, _, content = raw.partition("|")
            known[int(number)] = content
        length = max(known, default=0)
        # None marks a line whose text we do not know; the real file may be longer than this.
        self.lines: list[str | None] = [known.get(i) for i in range(1, length + 1)]

    def apply(self, hunk: Hunk) -> str | None:
        """Apply ``hunk`` if it touches only known lines; else return why it may not."""
        start = hunk.old_start - 1 if hunk.old_lines else hunk.old_start
        for offset, expected in enumerate(hunk.old_lines):
            number = start + offset + 1
            actual = self.lines[number - 1] if number <= len(self.lines) else None
            if actual is None:
                return f"line {number} is not known (only part of this file is held)"
            if actual != expected:
                return f"line {number} is known as {actual!r}, the hunk expects {expected!r}"
        end = start + len(hunk.old_lines)
        self.lines[start:end] = list(hunk.new_lines)
        return None


def partial_path(partial_root: Path, path: str) -> Path:
    return partial_root / f"{path}.partial"


def without_files(text: str, paths: set[str]) -> str:
    """``text`` with the diffs of ``paths`` removed (what ``git am --exclude`` applies)."""
    if not paths:
        return text
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("diff --git "):
            skipping = line.rstrip("\n").split(" b/", 1)[1] in paths
        if not skipping:
            kept.append(line)
    return "".join(kept)
