"""Wheel, package and test stages as far as Linux allows: the plan, preflight and refusals."""

from __future__ import annotations

import pytest
from driver_helpers import run_build

from mpsbuild import preflight, test
from mpsbuild.build import build_environment, wheel_version
from mpsbuild.errors import BuildError
from mpsbuild.options import DEFAULT_SERIES
from mpsbuild.series import series_digest


def test_wheel_dry_run_prints_the_exact_environment_and_commands(tmp_path):
    result = run_build("--apply", "--wheel", "--test", "--dry-run", "--workdir", tmp_path / "w",
                       "--jobs", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    digest = series_digest(DEFAULT_SERIES)
    for expected in ("git clone --progress --depth 1 --branch v2.9.1",
                     "submodule update --init --recursive --depth 1",
                     "git checkout -b mps-patched d38164a545b4a4e4e0cf73ce67173f70574890b6",
                     "MACOSX_DEPLOYMENT_TARGET=11.0", "CMAKE_OSX_ARCHITECTURES=arm64",
                     "BUILD_TEST=0", "USE_DISTRIBUTED=1", "USE_MPS=1", "MAX_JOBS=3",
                     f"PYTORCH_BUILD_VERSION=2.9.1+mps.{digest}",
                     "-m build --wheel --no-isolation", "delocate-wheel --require-archs arm64",
                     "--require-patched"):
        assert expected in out, expected
    assert not (tmp_path / "w" / "pytorch").exists(), "a dry run must not clone"


def test_wheel_on_linux_stops_with_the_reason_and_the_fix(tmp_path):
    result = run_build("--wheel", "--workdir", tmp_path / "w")
    assert result.returncode == 1
    assert "this host is Linux" in result.stderr
    assert "Apple-Silicon Mac" in result.stderr and "--dry-run" in result.stderr


@pytest.mark.parametrize(("system", "machine", "macos", "expected"), [
    ("Darwin", "x86_64", "14.5", "Rosetta"),
    ("Darwin", "arm64", "13.6", "too old"),
    ("Linux", "aarch64", "", "this host is Linux"),
])
def test_preflight_names_each_host_problem(system, machine, macos, expected):
    with pytest.raises(BuildError) as error:
        preflight.check_macos_arm64(system, machine, macos)
    assert expected in str(error.value)


def test_preflight_accepts_a_supported_mac():
    preflight.check_macos_arm64("Darwin", "arm64", "14.4")


def test_preflight_disk_check_uses_the_nearest_existing_folder(tmp_path):
    with pytest.raises(BuildError) as error:
        preflight.check_disk(tmp_path / "not" / "yet", min_free_gb=1e9)
    assert "--min-free-gb" in error.value.fix
    preflight.check_disk(tmp_path / "not" / "yet", min_free_gb=0.001)


def test_build_environment_uses_a_compiler_cache_when_given():
    env = build_environment(4, "abcdef12", "ccache")
    assert env["CMAKE_OBJCXX_COMPILER_LAUNCHER"] == "ccache"
    assert env["PYTORCH_BUILD_VERSION"] == wheel_version("abcdef12") == "2.9.1+mps.abcdef12"
    assert "CMAKE_C_COMPILER_LAUNCHER" not in build_environment(4, "abcdef12", None)


def test_series_digest_follows_content_and_order(tmp_path):
    (tmp_path / "0001-a.patch").write_text("a")
    (tmp_path / "0002-b.patch").write_text("b")
    series = tmp_path / "series"
    series.write_text("0001-a.patch\n0002-b.patch\n")
    first = series_digest(series)
    assert len(first) == 8 and first == series_digest(series)
    series.write_text("0002-b.patch\n0001-a.patch\n")
    assert series_digest(series) != first
    series.write_text("# comment\n0001-a.patch\n0002-b.patch\n")
    assert series_digest(series) == first
    (tmp_path / "0002-b.patch").write_text("b2")
    assert series_digest(series) != first


def test_test_stage_refuses_a_wheel_for_another_platform(tmp_path):
    wheel = tmp_path / "torch-2.9.1+mps.abcdef12-cp311-none-macosx_11_0_arm64.whl"
    wheel.write_bytes(b"")
    assert test.find_wheel(tmp_path, "abcdef12") == wheel
    with pytest.raises(BuildError) as error:
        test.check_installable(wheel)
    assert "macosx_11_0_arm64" in error.value.problem


def test_test_stage_without_a_wheel_says_how_to_build_one(tmp_path):
    with pytest.raises(BuildError) as error:
        test.find_wheel(tmp_path, "abcdef12")
    assert "--apply --wheel" in error.value.fix
