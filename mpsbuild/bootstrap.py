"""Make ``python build.py`` work on a machine with only Python and git.

The driver needs gitpython, rich and packaging. When they are missing, a private venv is made
in ``.venv-driver/`` beside build.py, the pinned requirements are installed there once, and the
command re-runs itself inside it. Standard library only: it runs before anything else.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import venv
from pathlib import Path

REQUIREMENTS = ("gitpython>=3.1.40", "rich>=13.7", "packaging>=23.0")
MODULES = ("git", "rich", "packaging")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DRIVER_VENV = PROJECT_ROOT / ".venv-driver"
# The interpreter the user ran build.py with: after the re-exec, sys.executable is the driver
# venv's, and the build and test venvs must not be made from that.
USER_PYTHON_ENV = "MPSBUILD_USER_PYTHON"


def user_python() -> Path:
    """The Python the user started build.py with (``--python``'s default)."""
    return Path(os.environ.get(USER_PYTHON_ENV) or sys.executable)


def missing_modules() -> list[str]:
    return [name for name in MODULES if importlib.util.find_spec(name) is None]


def ensure_driver_dependencies() -> None:
    """Return if the dependencies import; otherwise re-exec inside the driver venv."""
    missing = missing_modules()
    if not missing:
        return
    python = DRIVER_VENV / "bin" / "python"
    if os.environ.get("MPSBUILD_BOOTSTRAPPED"):
        sys.exit(f"error: {', '.join(missing)} cannot be imported even in {DRIVER_VENV}.\n"
                 f"fix: delete {DRIVER_VENV} and run again, or "
                 f"`pip install {' '.join(REQUIREMENTS)}`.")
    if not python.exists():
        print(f"first run: installing {', '.join(REQUIREMENTS)} into {DRIVER_VENV}",
              file=sys.stderr)
        venv.create(DRIVER_VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
                       check=True)
    os.environ["MPSBUILD_BOOTSTRAPPED"] = "1"
    os.environ.setdefault(USER_PYTHON_ENV, sys.executable)
    os.execv(str(python), [str(python), *sys.argv])
