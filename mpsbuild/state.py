"""What the driver remembers between runs (which source the workdir holds, what was applied)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class WorkdirState:
    repo: str = ""
    ref: str = ""
    base_commit: str = ""
    # Digest of the series as last applied or exported: --export refuses to overwrite patch
    # files that were edited after that, so a hand edit is never lost silently.
    series_digest: str = ""
    # Files the last --apply left out because the clone lacks them: --export from this clone
    # would drop their hunks, so it refuses.
    left_out: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> WorkdirState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
