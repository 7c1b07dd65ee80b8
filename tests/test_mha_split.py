"""The multi-head-attention split in our patched ``torch/nn/functional.py``, checked on CPU.

On MPS, ``_in_projection_packed`` splits the packed projection with ``chunk()`` (through the
helper ``_split_packed_projection``) instead of unflatten/transpose/contiguous. These tests take
the helper, ``_in_projection_packed`` and ``multi_head_attention_forward`` from the PATCHED
functional.py (parsed with ``ast``, executed against the installed torch) and compare them with
the UNPATCHED v2.9.1 functions from the reference tree:

- a tensor subclass that reports ``device.type == "mps"`` forces the helper onto its chunk path
  on CPU, and records the torch functions called, so each test proves which path ran;
- outputs must be bitwise equal (``torch.equal``) and contiguous: the callers ``view()`` q, k
  and v into heads, which a bare ``chunk()`` view cannot satisfy (shown by a negative control).

The patched tree is the reference tree with the project's patch series applied
(``mpsbuild.scratch.patched_reference_tree``). Before the series holds the patches, point
``MPSBUILD_PATCHED_TREE`` at a patched checkout (e.g. a patch repo on branch mps-patched).
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Optional

import pytest
import torch
import torch.nn.functional as F

from mpsbuild.reference import reference_tree

FUNCTIONAL = Path("torch/nn/functional.py")
HELPER = "_split_packed_projection"
IN_PROJ = "_in_projection_packed"
MHA_FORWARD = "multi_head_attention_forward"


class RecordingTensor(torch.Tensor):
    """A CPU tensor that records the name of every torch function called on it."""

    calls: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(getattr(func, "__name__", repr(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


class FakeMPSTensor(RecordingTensor):
    """A CPU tensor whose ``device`` says mps: drives the helper's MPS branch on Linux."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("mps")


def function_sources(path: Path, names: list[str]) -> dict[str, str]:
    """Source text of the top-level functions ``names`` defined in the Python file ``path``."""
    text = path.read_text()
    found = {
        node.name: ast.get_source_segment(text, node)
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef) and node.name in names
    }
    missing = [name for name in names if name not in found]
    if missing:
        raise AssertionError(
            f"{path} defines no top-level {', '.join(missing)}; the patch series lacks the MHA "
            "split patch (or set MPSBUILD_PATCHED_TREE to a patched checkout)"
        )
    return {name: source for name, source in found.items() if source}


def load_functions(path: Path, names: list[str]) -> dict[str, Any]:
    """Execute the functions ``names`` of ``path`` with the installed torch.nn.functional globals.

    The functions see the installed torch's ``linear``, ``softmax`` and friends, and each other.
    """
    namespace: dict[str, Any] = {**vars(F), "Optional": Optional}
    for source in function_sources(path, names).values():
        exec(compile(source, str(path), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def patched_functional(patched_tree: Path) -> Path:
    return patched_tree / FUNCTIONAL


@pytest.fixture(scope="module")
def patched(patched_functional: Path) -> dict[str, Any]:
    return load_functions(patched_functional, [HELPER, IN_PROJ, MHA_FORWARD])


@pytest.fixture(scope="module")
def upstream() -> dict[str, Any]:
    return load_functions(reference_tree() / FUNCTIONAL, [IN_PROJ, MHA_FORWARD])


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    RecordingTensor.calls.clear()


def as_plain(tensors) -> list[torch.Tensor]:
    return [t.as_subclass(torch.Tensor) for t in tensors]


def make_inputs(
    kind: str, batch_first: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as nn.MultiheadAttention passes them: (L, N, E), transposed views if batch_first.

    ``self``: q is k is v. ``cross``: separate q; k is v (encoder-decoder attention).
    """
    generator = torch.Generator().manual_seed(seed)
    tgt_len, src_len, batch, embed = 5, 7, 3, 8

    def sequence(length: int) -> torch.Tensor:
        if batch_first:
            return torch.randn(batch, length, embed, generator=generator).transpose(1, 0)
        return torch.randn(length, batch, embed, generator=generator)

    query = sequence(tgt_len)
    if kind == "self":
        return query, query, query
    memory = sequence(src_len)
    return query, memory, memory


def make_weights(with_bias: bool, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(24, 8, generator=generator)
    bias = torch.randn(24, generator=generator) if with_bias else None
    return weight, bias


def to_subclass(cls: type[torch.Tensor], q, k, v):
    """Wrap q, k, v in ``cls``, keeping the identities (q is k, k is v) the callers test."""
    wrapped = {id(t): t.as_subclass(cls) for t in (q, k, v)}
    return wrapped[id(q)], wrapped[id(k)], wrapped[id(v)]


CASES = [
    pytest.param(kind, batch_first, with_bias, id=f"{kind}-bf{batch_first:d}-bias{with_bias:d}")
    for kind in ("self", "cross")
    for batch_first in (False, True)
    for with_bias in (True, False)
]


@pytest.mark.parametrize(("kind", "batch_first", "with_bias"), CASES)
def test_chunk_path_equals_upstream_in_projection(patched, upstream, kind, batch_first, with_bias):
    q, k, v = make_inputs(kind, batch_first)
    weight, bias = make_weights(with_bias)
    expected = upstream[IN_PROJ](q, k, v, weight, bias)

    got = as_plain(patched[IN_PROJ](*to_subclass(FakeMPSTensor, q, k, v), weight, bias))

    assert "chunk" in RecordingTensor.calls and "unflatten" not in RecordingTensor.calls
    assert len(got) == 3
    for name, out, ref in zip("qkv", got, expected, strict=True):
        assert out.shape == ref.shape, name
        assert torch.equal(out, ref), f"{name} differs from the upstream split"
        assert out.is_contiguous(), f"{name} must be contiguous: callers view() it into heads"


@pytest.mark.parametrize(("kind", "batch_first", "with_bias"), CASES)
def test_non_mps_path_is_upstream_code(patched, upstream, kind, batch_first, with_bias):
    q, k, v = make_inputs(kind, batch_first)
    weight, bias = make_weights(with_bias)
    expected = upstream[IN_PROJ](q, k, v, weight, bias)

    got = as_plain(patched[IN_PROJ](*to_subclass(RecordingTensor, q, k, v), weight, bias))

    assert "unflatten" in RecordingTensor.calls and "chunk" not in RecordingTensor.calls
    for name, out, ref in zip("qkv", got, expected, strict=True):
        assert torch.equal(out, ref), name
        assert out.is_contiguous() == ref.is_contiguous(), name


@pytest.mark.parametrize("num_chunks", [2, 3])
def test_helper_splits_in_packing_order(patched, num_chunks):
    proj = torch.arange(2 * 3 * num_chunks * 4, dtype=torch.float32).reshape(2, 3, num_chunks * 4)

    chunked = as_plain(patched[HELPER](proj.as_subclass(FakeMPSTensor), num_chunks))
    default = patched[HELPER](proj, num_chunks)

    assert "chunk" in RecordingTensor.calls
    for index, (a, b) in enumerate(zip(chunked, default, strict=True)):
        expected = proj[..., index * 4 : (index + 1) * 4]
        assert torch.equal(a, expected) and torch.equal(b, expected), index
        assert a.is_contiguous() and b.is_contiguous(), index


def run_mha(forward: Callable, q, k, v, weight, bias) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    out_weight = torch.randn(8, 8, generator=generator)
    out_bias = torch.randn(8, generator=generator)
    output, attn = forward(
        q,
        k,
        v,
        embed_dim_to_check=8,
        num_heads=2,
        in_proj_weight=weight,
        in_proj_bias=bias,
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=out_weight,
        out_proj_bias=out_bias,
        training=False,
        need_weights=True,
    )
    return output, attn


def forcing_mps_split(helper: Callable) -> Callable:
    """The real helper, called on a tensor that reports mps, returning plain tensors."""

    def split(proj: torch.Tensor, num_chunks: int) -> list[torch.Tensor]:
        return as_plain(helper(proj.as_subclass(FakeMPSTensor), num_chunks))

    return split


@pytest.mark.parametrize(("kind", "batch_first", "with_bias"), CASES)
def test_attention_output_unchanged_with_chunk_split(
    patched, upstream, monkeypatch, kind, batch_first, with_bias
):
    q, k, v = make_inputs(kind, batch_first)
    weight, bias = make_weights(with_bias)
    expected = run_mha(upstream[MHA_FORWARD], q, k, v, weight, bias)

    monkeypatch.setitem(patched, HELPER, forcing_mps_split(patched[HELPER]))
    got = run_mha(patched[MHA_FORWARD], q, k, v, weight, bias)

    assert "chunk" in RecordingTensor.calls
    assert torch.equal(got[0], expected[0]), "attention output differs"
    assert torch.equal(got[1], expected[1]), "attention weights differ"


def test_callers_need_contiguous_chunks(patched, monkeypatch):
    """Negative control: bare chunk() views (no .contiguous()) break the callers' view()."""
    q, k, v = make_inputs("self", batch_first=False)
    weight, bias = make_weights(with_bias=True)

    def bare_chunks(proj: torch.Tensor, num_chunks: int) -> list[torch.Tensor]:
        return list(proj.chunk(num_chunks, dim=-1))

    monkeypatch.setitem(patched, HELPER, bare_chunks)
    with pytest.raises(RuntimeError, match="view"):
        run_mha(patched[MHA_FORWARD], q, k, v, weight, bias)


def test_patched_functions_compile_with_torchscript(patched_functional, tmp_path):
    """nn.MultiheadAttention is scriptable; the helper must keep _in_projection_packed so."""
    sources = function_sources(patched_functional, [HELPER, IN_PROJ])
    module_path = tmp_path / "patched_mha_split.py"
    module_path.write_text(
        "from typing import Optional\n\nimport torch\nfrom torch import Tensor\n"
        "from torch.nn.functional import linear\n\n\n" + "\n\n\n".join(sources.values()) + "\n"
    )
    spec = importlib.util.spec_from_file_location("patched_mha_split", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    scripted = torch.jit.script(getattr(module, IN_PROJ))

    for kind in ("self", "cross"):
        q, k, v = make_inputs(kind, batch_first=True)
        weight, bias = make_weights(with_bias=True)
        eager = getattr(module, IN_PROJ)(q, k, v, weight, bias)
        for out, ref in zip(scripted(q, k, v, weight, bias), eager, strict=True):
            assert torch.equal(out, ref), kind
