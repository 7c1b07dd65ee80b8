"""Device helpers and the workloads of the parallel-correctness check (child side)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Inputs = tuple[torch.Tensor, ...]
Call = Callable[..., Any]

NUM_INPUTS = 16  # distinct inputs with their goldens; concurrent threads use different ones


def synchronize(device: str) -> None:
    """Wait for all work queued on the device (all streams)."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def half_dtype(device: str) -> torch.dtype:
    # float16 on the GPUs; bfloat16 on CPU, where float16 matmul is a slow reference path.
    return torch.bfloat16 if device == "cpu" else torch.float16


@dataclass
class Workload:
    name: str
    call: Call
    inputs: list[Inputs]
    dtype: torch.dtype
    description: str


def _module(module: nn.Module, device: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    return module.to(device=device, dtype=dtype).eval()


def _randn(generator: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=generator).to(dtype)


def _strided_copies(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Copies out of and into non-contiguous views (the identity/gather-scatter kernels)."""
    every_other_column = x[:, ::2].contiguous()
    transposed = x.t().contiguous()
    window = x.as_strided((16, 16), (2 * x.stride(0), 3), 5).clone()
    into_strided = torch.zeros(x.shape[1], x.shape[0], device=x.device, dtype=x.dtype)
    into_strided.t().copy_(x)
    narrowed = x.narrow(1, 7, 64).narrow(0, 3, 32) * 1.0
    return every_other_column, transposed, window, into_strided, narrowed


def _well_conditioned(generator: torch.Generator, batch: int, n: int) -> torch.Tensor:
    return _randn(generator, batch, n, n) + n * torch.eye(n)


def build_workload(name: str, device: str) -> Workload:
    """Model/op, NUM_INPUTS inputs on `device`, same weights on every device (seeded on CPU)."""
    torch.manual_seed(1234)
    gen = torch.Generator().manual_seed(4321)
    f32 = torch.float32

    def inputs(make: Callable[[], Inputs]) -> list[Inputs]:
        return [tuple(t.to(device) for t in make()) for _ in range(NUM_INPUTS)]

    if name == "linear":
        model = _module(nn.Linear(256, 256), device)
        return Workload(
            name,
            model,
            inputs(lambda: (_randn(gen, 16, 256),)),
            f32,
            "nn.Linear(256, 256), batch 16",
        )
    if name == "linear_half":
        dtype = half_dtype(device)
        model = _module(nn.Linear(256, 256), device, dtype)
        return Workload(
            name,
            model,
            inputs(lambda: (_randn(gen, 16, 256, dtype=dtype),)),
            dtype,
            f"nn.Linear(256, 256) in {str(dtype).removeprefix('torch.')}, batch 16",
        )
    if name == "mlp":
        model = _module(
            nn.Sequential(
                nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
            ),
            device,
        )
        return Workload(
            name,
            model,
            inputs(lambda: (_randn(gen, 16, 256),)),
            f32,
            "3-layer MLP 256-512-512-10, batch 16",
        )
    if name == "conv2d":
        model = _module(nn.Conv2d(3, 16, 3, padding=1), device)
        return Workload(
            name,
            model,
            inputs(lambda: (_randn(gen, 4, 3, 32, 32),)),
            f32,
            "nn.Conv2d(3, 16, 3), 4x3x32x32",
        )
    if name == "layernorm":
        model = _module(nn.LayerNorm(256), device)
        return Workload(
            name,
            model,
            inputs(lambda: (_randn(gen, 8, 64, 256),)),
            f32,
            "nn.LayerNorm(256), 8x64x256",
        )
    if name == "multihead_attention":
        # batch_first=False keeps the Python path through _in_projection_packed, where the
        # upstream MPS corruption lived.
        mha = _module(nn.MultiheadAttention(64, 4), device)

        def attend(x: torch.Tensor) -> torch.Tensor:
            return mha(x, x, x, need_weights=False)[0]

        return Workload(
            name,
            attend,
            inputs(lambda: (_randn(gen, 16, 4, 64),)),
            f32,
            "nn.MultiheadAttention(64, 4 heads), self-attention, seq 16, batch 4",
        )
    if name == "transformer_encoder_layer":
        model = _module(
            nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True), device
        )
        return Workload(
            name,
            model,
            inputs(lambda: (_randn(gen, 4, 16, 64),)),
            f32,
            "nn.TransformerEncoderLayer(d_model 64, 4 heads, ff 128), 4x16x64",
        )
    if name == "matmul":
        return Workload(
            name,
            torch.matmul,
            inputs(lambda: (_randn(gen, 64, 128), _randn(gen, 128, 64))),
            f32,
            "torch.matmul 64x128 @ 128x64",
        )
    if name == "bmm":
        return Workload(
            name,
            torch.bmm,
            inputs(lambda: (_randn(gen, 8, 32, 64), _randn(gen, 8, 64, 32))),
            f32,
            "torch.bmm 8x32x64 @ 8x64x32",
        )
    if name == "linalg_solve":
        return Workload(
            name,
            torch.linalg.solve,
            inputs(lambda: (_well_conditioned(gen, 8, 32), _randn(gen, 8, 32, 4))),
            f32,
            "torch.linalg.solve, 8 systems 32x32, 4 right-hand sides",
        )
    if name == "lu_factor":
        return Workload(
            name,
            torch.linalg.lu_factor,
            inputs(lambda: (_well_conditioned(gen, 8, 32),)),
            f32,
            "torch.linalg.lu_factor, 8 matrices 32x32 (LU and pivots)",
        )
    if name == "strided_copy":
        return Workload(
            name,
            _strided_copies,
            inputs(lambda: (_randn(gen, 64, 128),)),
            f32,
            "copies out of/into strided, transposed, narrowed and as_strided views",
        )
    raise ValueError(f"unknown workload {name!r}")
