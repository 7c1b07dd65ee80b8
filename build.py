#!/usr/bin/env python3
"""Turn PyTorch v2.9.1 into a thread-safe MPS wheel: clone, patch, build, test.

Typical use on an Apple-Silicon Mac:  python build.py --apply --wheel --test
Maintainers edit the series on the branch mps-patched and run --export, then --check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpsbuild.bootstrap import ensure_driver_dependencies, user_python

ensure_driver_dependencies()  # before the imports below, which need gitpython and rich

from mpsbuild import build, package, preflight, series, source, test
from mpsbuild.console import Runner, error_console, say
from mpsbuild.errors import BuildError
from mpsbuild.options import (
    DEFAULT_MIN_FREE_GB,
    DEFAULT_REF,
    DEFAULT_REPO,
    DEFAULT_SERIES,
    DEFAULT_WHEELHOUSE,
    DEFAULT_WORKDIR,
    BuildSpec,
    SourceSpec,
    Workdir,
    default_jobs,
)
from mpsbuild.state import WorkdirState

STAGES = ("fetch", "apply", "check", "export", "status", "wheel", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build.py", description=__doc__.splitlines()[0],
        epilog="Stages run in the order fetch, apply, check, export, status, wheel, test. "
               "Exit code 0 on success; otherwise a message names the problem and the fix.")
    stages = parser.add_argument_group("stages (combine freely; each runs alone too)")
    stages.add_argument("--fetch", action="store_true",
                        help="shallow-clone --repo at --ref (with submodules) into the workdir")
    stages.add_argument("--apply", action="store_true",
                        help="apply the series with git am on branch mps-patched (fetches first)")
    stages.add_argument("--check", action="store_true",
                        help="apply the series to a scratch worktree of the base and prove "
                             "hunks on partly known files (fetches first)")
    stages.add_argument("--export", action="store_true",
                        help="regenerate patches, series and BASE from branch mps-patched")
    stages.add_argument("--status", action="store_true",
                        help="show base, branch, applied and missing patches, dirty files")
    stages.add_argument("--wheel", action="store_true",
                        help="build the macOS arm64 wheel into the wheelhouse (needs --apply "
                             "done)")
    stages.add_argument("--test", action="store_true",
                        help="install the wheel in a fresh venv and run the concurrency suite")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every command and environment variable, run nothing")
    parser.add_argument("--repo", default=DEFAULT_REPO, help="PyTorch URL or local path "
                        "(default: %(default)s)")
    parser.add_argument("--ref", default=DEFAULT_REF, help="tag or branch (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="clone, venvs and logs (default: build/)")
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES,
                        help="series file (default: patches/v2.9.1/series)")
    parser.add_argument("--wheelhouse", type=Path, default=DEFAULT_WHEELHOUSE,
                        help="where wheels go (default: wheelhouse/)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="parallel compile jobs (default: CPU count, %(default)s here)")
    parser.add_argument("--python", type=Path, default=user_python(),
                        help="interpreter for the build and test venvs (default: the one "
                             "that runs build.py, %(default)s)")
    parser.add_argument("--no-submodules", action="store_true",
                        help="clone without submodules (enough for --check)")
    parser.add_argument("--force", action="store_true",
                        help="stash edits / keep a backup branch / move an old clone aside "
                             "instead of refusing (nothing is deleted)")
    parser.add_argument("--min-free-gb", type=float, default=DEFAULT_MIN_FREE_GB,
                        help="free disk the wheel stage requires (default: %(default)s)")
    parser.add_argument("--device", choices=test.DEVICES, default="auto",
                        help="device for --test (default: auto)")
    parser.add_argument("--quick", action="store_true", help="--test: the quick suite")
    args = parser.parse_args(argv)
    if not any(getattr(args, name) for name in STAGES):
        parser.error("choose at least one stage, e.g. --apply --wheel (see --help)")
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    return args


def run(args: argparse.Namespace) -> None:
    workdir = Workdir(args.workdir.resolve())
    runner = Runner(dry_run=args.dry_run, log_dir=workdir.logs)
    spec = SourceSpec(args.repo, args.ref, submodules=not args.no_submodules)
    build_spec = BuildSpec(args.jobs, args.python, args.min_free_gb, args.wheelhouse.resolve())
    series_file = args.series.resolve()
    if args.wheel and not args.dry_run:
        preflight.check_wheel_host(args.python, workdir.root, args.min_free_gb)
    preflight.check_git()

    tree = None
    if args.fetch or args.apply or args.check:
        tree = source.fetch(spec, workdir, runner, force=args.force, jobs=min(args.jobs, 8))
    elif args.export or args.status or args.wheel:
        tree = existing_tree(workdir, args.dry_run)
    if args.apply:
        apply_stage(tree, series_file, workdir, runner, args.force)
    if args.dry_run and (args.check or args.export or args.status):
        say(f"[dim]would {'check, ' if args.check else ''}{'export, ' if args.export else ''}"
            f"{'show the status of, ' if args.status else ''}the series {series_file} against "
            f"{tree.path}[/]")
    elif args.check or args.export or args.status:
        series_stages(args, tree, series_file, workdir)
    if args.wheel:
        wheel_stage(tree, series_file, workdir, build_spec, runner)
    if args.test:
        test.run_suite(build_spec.wheelhouse, series.series_digest(series_file), workdir,
                       args.python, args.device, runner, quick=args.quick)


def series_stages(args: argparse.Namespace, tree: source.SourceTree, series_file: Path,
                  workdir: Workdir) -> None:
    if args.check:
        series.check(tree, series_file)
    if args.export:
        series.export(tree, series_file, force=args.force, state_file=workdir.state_file)
    if args.status:
        series.status(tree, series_file)


def existing_tree(workdir: Workdir, dry_run: bool) -> source.SourceTree:
    state = WorkdirState.load(workdir.state_file)
    if dry_run and not state.base_commit:
        return source.SourceTree(workdir.source, "<base commit>")
    if not workdir.source.exists() or not state.base_commit:
        raise BuildError(f"no PyTorch clone in {workdir.root}.",
                         "run `python build.py --apply` first (or pass the --workdir you used).")
    return source.SourceTree(workdir.source, state.base_commit)


def apply_stage(tree: source.SourceTree, series_file: Path, workdir: Workdir, runner: Runner,
                force: bool) -> None:
    if runner.dry_run:
        for argv in series.plan_apply(tree, series_file):
            say(f"[dim]would run:[/] {runner.show(argv, tree.path)}")
        return
    series.apply(tree, series_file, force=force, state_file=workdir.state_file)


def wheel_stage(tree: source.SourceTree, series_file: Path, workdir: Workdir,
                build_spec: BuildSpec, runner: Runner) -> None:
    if runner.dry_run:
        say("[dim]preflight (on the Mac): macOS 14+ arm64, Xcode's Metal compiler, Python "
            f"3.10-3.14, git, {build_spec.min_free_gb:.0f} GB free in the workdir[/]")
    else:
        series.require_applied(tree, series_file)
    digest = series.series_digest(series_file)
    info = package.BuildInfo(tree.base_commit, digest, series.patch_digests(series_file),
                             started_at=package.utc_now())
    compiled = build.compile_wheel(tree.path, workdir, build_spec, digest, runner)
    if runner.dry_run:
        say("[dim]environment set for the build:[/]")
        for key, value in compiled.environment.items():
            say(f"  {key}={value}")
    package.package(compiled, workdir, build_spec, info, runner)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BuildError as error:
        error_console.print(f"[bold red]error:[/] {error.problem}\n[bold]fix:[/] {error.fix}")
        return 1
    except KeyboardInterrupt:
        error_console.print("[bold red]interrupted[/]; run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
