"""The one error type every stage raises for a problem the user can fix."""

from __future__ import annotations


class BuildError(Exception):
    """A problem with a clear cause and a clear fix; ``build.py`` prints it and exits non-zero."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}\nFix: {fix}")
        self.problem = problem
        self.fix = fix
