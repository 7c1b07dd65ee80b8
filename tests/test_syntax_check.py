"""scripts/syntax_check.py: it must report planted mistakes and pass the unpatched v2.9.1 tree.

The planted mistakes go into copies of the real ``aten/src/ATen/mps/MPSStream.mm``, one mistake
per copy, all checked in one call (about 5 s of clang per file).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from mpsbuild.reference import reference_tree  # noqa: E402


def _load_syntax_check():
    spec = importlib.util.spec_from_file_location(
        "syntax_check", PROJECT_ROOT / "scripts" / "syntax_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["syntax_check"] = module
    spec.loader.exec_module(module)
    return module


syntax_check = _load_syntax_check()

requires_clang = pytest.mark.skipif(
    shutil.which(syntax_check.CLANG) is None,
    reason=f"{syntax_check.CLANG} is not installed ({syntax_check.INSTALL_HINT}); "
           "CI installs it, so the check runs there",
)

STREAM_MM = Path("aten/src/ATen/mps/MPSStream.mm")

# name -> (original text, planted text, words the error message must contain)
PLANTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cpp_type_error": (
        "size_t bytes_copied = 0;",
        'size_t bytes_copied = std::string("0");',
        ("no viable conversion", "size_t"),
    ),
    "undeclared_identifier": (
        "    case SyncType::COMMIT:\n      commit();",
        "    case SyncType::COMMIT:\n      commitNow();",
        ("undeclared identifier", "commitNow"),
    ),
    "objc_argument_type": (
        "[blitEncoder copyFromBuffer:srcBuffer",
        "[blitEncoder copyFromBuffer:srcOffset",
        ("id<MTLBuffer>", "size_t"),
    ),
    "objc_unknown_selector": (
        "[_commandQueue device]",
        "[_commandQueue deviceWithoutSuchSelector]",
        ("deviceWithoutSuchSelector", "not found"),
    ),
}


def _plant(tree: Path, name: str) -> tuple[Path, int]:
    """Copy MPSStream.mm to MPSStream_<name>.mm with one mistake; return (path, its line)."""
    original, planted, _ = PLANTS[name]
    source = (tree / STREAM_MM).read_text()
    assert source.count(original) == 1, f"{original!r} must occur once in MPSStream.mm"
    text = source.replace(original, planted)
    line = text[: text.index(planted) + len(planted)].count("\n") + 1
    target = STREAM_MM.with_name(f"MPSStream_{name}.mm")
    (tree / target).write_text(text)
    return target, line


@pytest.fixture(scope="module")
def toolchain():
    try:
        return syntax_check.make_toolchain()
    except syntax_check.SetupError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def planted(tmp_path_factory, toolchain):
    """Check a clean copy of MPSStream.mm and one planted copy per mistake, in one call."""
    if shutil.which(syntax_check.CLANG) is None:
        pytest.skip(f"{syntax_check.CLANG} is not installed ({syntax_check.INSTALL_HINT})")
    tree = tmp_path_factory.mktemp("planted") / "tree"
    shutil.copytree(reference_tree(), tree)
    plants = {name: _plant(tree, name) for name in PLANTS}
    files = [STREAM_MM, *(path for path, _ in plants.values())]
    result = syntax_check.check_files(tree, files, jobs=2, toolchain=toolchain)
    return result, plants


def _errors_in(result, path: Path):
    return [d for d in result.errors if d.path == path.as_posix()]


@requires_clang
def test_clean_copy_has_no_errors(planted):
    result, _ = planted
    assert _errors_in(result, STREAM_MM) == []
    assert STREAM_MM.as_posix() in result.files


@requires_clang
@pytest.mark.parametrize("name", sorted(PLANTS))
def test_planted_mistake_is_reported_on_its_line(planted, name):
    result, plants = planted
    path, line = plants[name]
    errors = _errors_in(result, path)
    assert errors, f"no error reported for the planted {name}"
    on_line = [e for e in errors if e.line == line]
    assert on_line, f"errors for {name} are not on line {line}: {errors}"
    message = " ".join(e.message for e in on_line)
    for word in PLANTS[name][2]:
        assert word in message, f"{word!r} not in {message!r}"


@requires_clang
def test_cli_prints_errors_and_exits_nonzero(tmp_path, capsys, toolchain):
    tree = tmp_path / "tree"
    (tree / STREAM_MM.parent).mkdir(parents=True)
    shutil.copy(reference_tree() / STREAM_MM, tree / STREAM_MM)
    path, line = _plant(tree, "undeclared_identifier")
    code = syntax_check.main(["--tree", str(tree), "--files", str(path), "--jobs", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[-1] == "checked 1 files: 1 errors"
    assert any(x.startswith(f"{path.as_posix()}:{line}:") and "error:" in x for x in lines)


def test_missing_clang_fails_loudly_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(syntax_check, "CLANG", "clang++-16-not-installed")
    code = syntax_check.main(["--tree", str(reference_tree())])
    err = capsys.readouterr().err
    assert code == 2
    assert "apt-get install" in err and "clang-16" in err


def test_missing_tree_is_a_clear_error(tmp_path):
    with pytest.raises(syntax_check.SetupError, match="not a directory"):
        syntax_check.run_check(tmp_path / "absent", None, 1, toolchain=None)


def test_collects_every_whole_file_of_the_reference_tree():
    files = {p.as_posix() for p in syntax_check.collect_files(reference_tree())}
    manifest = reference_tree().parent / "MANIFEST.tsv"
    expected = {
        row.split("\t")[0]
        for row in manifest.read_text().splitlines()[1:]
        if row.split("\t")[0].startswith(syntax_check.CHECKED_DIRS)
        and Path(row.split("\t")[0]).suffix in {".mm", ".cpp", ".h"}
    }
    assert files == expected - set(syntax_check.EXCLUDED)
    assert "aten/src/ATen/native/mps/kernels/Pooling.h" in files


@requires_clang
def test_unpatched_reference_tree_has_no_errors(toolchain):
    tree = reference_tree()
    result = syntax_check.check_files(tree, syntax_check.collect_files(tree), jobs=2,
                                      toolchain=toolchain)
    assert result.errors == [], "\n".join(d.render() for d in result.errors)
    assert len(result.files) == len(syntax_check.collect_files(tree))
