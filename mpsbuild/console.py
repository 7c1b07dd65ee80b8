"""Console output and subprocess execution with logs, progress and ``--dry-run``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mpsbuild.errors import BuildError

# Reports (status, check, what was applied, the commands run) go to stdout, so they can be
# piped (`build.py --status | grep`); errors go to stderr. soft_wrap: commands stay on one
# line, so they can be copied from the terminal.
console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)
TAIL_LINES = 50

# Lines like "[1234/5678] Building CXX object ..." from ninja: the build bar's fuel.
NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")


def say(message: str) -> None:
    console.print(message)


def stage(title: str) -> None:
    console.rule(f"[bold]{title}")


@dataclass
class Runner:
    """Runs commands for real, or prints them when ``dry_run`` is set."""

    dry_run: bool = False
    log_dir: Path | None = None

    def show(self, argv: Sequence[str | Path], cwd: Path | None = None,
             env: Mapping[str, str] | None = None) -> str:
        text = shlex.join(str(a) for a in argv)
        if cwd is not None:
            text = f"(cd {shlex.quote(str(cwd))} && {text})"
        if env:
            text = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + text
        return text

    def run(self, argv: Sequence[str | Path], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, log_name: str = "command",
            progress: Callable[[str], tuple[int, int] | None] | None = None,
            description: str = "", fix: str = "") -> None:
        """Run ``argv`` with its output going to a log; raise BuildError with the tail on failure.

        ``env`` holds only the variables this stage sets (printed in dry-run); they are added to
        the inherited environment. ``progress`` turns an output line into (done, total) for a bar.
        ``fix`` replaces the generic advice when the caller knows the likely causes.
        """
        text = self.show(argv, cwd, env)
        if self.dry_run:
            console.print(f"[dim]would run:[/] {text}")
            return
        log_path = self._log_path(log_name)
        full_env = {**os.environ, **(env or {})}
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        console.print(f"[dim]$ {text}[/]\n[dim]  log: {log_path}[/]")
        with open(log_path, "w", encoding="utf-8") as log, _bar(description) as bar:
            log.write(f"$ {text}\n")
            task = bar.add_task(description or log_name, total=None)
            process = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=full_env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, errors="replace", bufsize=1)
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                fraction = progress(line) if progress else None
                if fraction:
                    bar.update(task, completed=fraction[0], total=fraction[1])
            code = process.wait()
        if code != 0:
            shown = "\n".join(tail)
            raise BuildError(
                f"`{text}` failed with exit code {code}. Last {len(tail)} lines:\n{shown}\n"
                f"Full log: {log_path}",
                fix or "read the log above; fix the cause and run the same stage again "
                "(finished stages are reused).",
            )

    def _log_path(self, name: str) -> Path:
        directory = self.log_dir or Path.cwd()
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return directory / f"{stamp}-{name}.log"


def ninja_progress(line: str) -> tuple[int, int] | None:
    match = NINJA_PROGRESS.match(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _bar(description: str) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=True, disable=not description)
