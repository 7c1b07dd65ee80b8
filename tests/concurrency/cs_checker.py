"""The correctness checker: every output of every thread against the golden output.

Goldens are computed on the same device by one thread before any worker starts. Workers start
together at a barrier, so the thread count really runs concurrently, and at iteration i thread t
uses input (t + i) mod K, so concurrent threads work on different inputs: a race that hands one
thread another thread's data shows up as a mismatch instead of hiding behind equal inputs.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any

import torch
from cs_config import TOLERANCES

MAX_ERRORS_KEPT = 3
JOIN_TIMEOUT_S = 180.0


def tolerance(dtype: torch.dtype) -> tuple[float, float] | None:
    """(rtol, atol) for floating dtypes from cs_config.TOLERANCES; None means exact."""
    if not dtype.is_floating_point:
        return None
    name = str(dtype).removeprefix("torch.")
    if name not in TOLERANCES:
        raise ValueError(f"no tolerance stated for {name}; add it to cs_config.TOLERANCES")
    return TOLERANCES[name]


def as_cpu_tuple(output: Any) -> tuple[torch.Tensor, ...]:
    """Copy a tensor or a (named) tuple of tensors to the CPU; waits for the device."""
    if isinstance(output, torch.Tensor):
        return (output.detach().to("cpu"),)
    if isinstance(output, (tuple, list)):
        return tuple(t.detach().to("cpu") for t in output)
    raise TypeError(f"workload returned {type(output).__name__}, expected tensors")


@dataclass
class Comparison:
    matches: bool
    identical: bool
    max_abs_diff: float


def compare(outputs: Sequence[torch.Tensor], goldens: Sequence[torch.Tensor]) -> Comparison:
    """Elementwise comparison within the dtype's tolerance; NaN never matches."""
    if len(outputs) != len(goldens):
        return Comparison(False, False, math.inf)
    matches, identical, worst = True, True, 0.0
    for out, gold in zip(outputs, goldens, strict=True):
        if out.shape != gold.shape or out.dtype != gold.dtype:
            return Comparison(False, False, math.inf)
        if torch.equal(out, gold):
            continue
        identical = False
        tol = tolerance(gold.dtype)
        diff = (out.double() - gold.double()).abs().nan_to_num(nan=math.inf)
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if tol is None:
            matches = False
            continue
        rtol, atol = tol
        if not torch.isclose(out, gold, rtol=rtol, atol=atol, equal_nan=False).all():
            matches = False
    return Comparison(matches, identical, worst)


@dataclass
class ThreadCountStats:
    threads: int
    expected_outputs: int
    outputs_checked: int = 0
    mismatches: int = 0
    identical: int = 0
    worst_abs_diff: float = 0.0
    worst_at: dict[str, int] | None = None
    error_count: int = 0
    hung_threads: int = 0
    seconds: float = 0.0

    def as_dict(self, errors: list[str]) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["worst_abs_diff"] = (
            self.worst_abs_diff if math.isfinite(self.worst_abs_diff) else "inf"
        )
        data["errors"] = errors
        return data

    @property
    def clean(self) -> bool:
        return (
            self.mismatches == 0
            and self.error_count == 0
            and self.hung_threads == 0
            and self.outputs_checked == self.expected_outputs
        )


def run_parallel_check(
    call: Callable[..., Any],
    inputs: Sequence[tuple[torch.Tensor, ...]],
    goldens: Sequence[tuple[torch.Tensor, ...]],
    *,
    thread_counts: Sequence[int],
    iterations: int,
    mode: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    per_thread: Callable[[int], ContextManager[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run `call` from 1..N concurrent threads and count outputs that differ from the goldens.

    `mode` is entered around every call in the worker (grad mode is thread-local, so each
    worker enters it itself); `per_thread(tid)` wraps a worker's whole life (e.g. its stream).
    """
    results = []
    for count in thread_counts:
        stats, errors = _run_threads(call, inputs, goldens, count, iterations, mode, per_thread)
        results.append(stats.as_dict(errors))
    return results


def _run_threads(
    call: Callable[..., Any],
    inputs: Sequence[tuple[torch.Tensor, ...]],
    goldens: Sequence[tuple[torch.Tensor, ...]],
    count: int,
    iterations: int,
    mode: Callable[[], ContextManager[Any]],
    per_thread: Callable[[int], ContextManager[Any]] | None,
) -> tuple[ThreadCountStats, list[str]]:
    stats = ThreadCountStats(threads=count, expected_outputs=count * iterations)
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def record(tid: int, iteration: int, index: int, result: Comparison) -> None:
        with lock:
            stats.outputs_checked += 1
            stats.mismatches += not result.matches
            stats.identical += result.identical
            if result.max_abs_diff > stats.worst_abs_diff:
                stats.worst_abs_diff = result.max_abs_diff
                stats.worst_at = {"thread": tid, "iteration": iteration, "input": index}

    def worker(tid: int) -> None:
        try:
            scope = per_thread(tid) if per_thread else contextlib.nullcontext()
            with scope:
                barrier.wait(timeout=JOIN_TIMEOUT_S)
                for iteration in range(iterations):
                    index = (tid + iteration) % len(inputs)
                    with mode():
                        output = call(*inputs[index])
                    record(tid, iteration, index, compare(as_cpu_tuple(output), goldens[index]))
        except Exception:
            with lock:
                stats.error_count += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"thread {tid}: {traceback.format_exc(limit=6)}")

    threads = [
        threading.Thread(target=worker, args=(tid,), name=f"suite-worker-{tid}", daemon=True)
        for tid in range(count)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stats.hung_threads = sum(thread.is_alive() for thread in threads)
    stats.seconds = round(time.perf_counter() - started, 4)
    return stats, errors


def golden_outputs(
    call: Callable[..., Any],
    inputs: Sequence[tuple[torch.Tensor, ...]],
    mode: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> list[tuple[torch.Tensor, ...]]:
    """Single-threaded reference outputs, computed on the main thread, copied to the CPU."""
    goldens = []
    for args in inputs:
        with mode():
            goldens.append(as_cpu_tuple(call(*args)))
    return goldens


def summarize(per_count: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over all thread counts, for the JSON and the failure message."""
    worst = 0.0
    for entry in per_count:
        value = entry["worst_abs_diff"]
        worst = math.inf if value == "inf" else max(worst, value)
    return {
        "outputs_checked": sum(e["outputs_checked"] for e in per_count),
        "expected_outputs": sum(e["expected_outputs"] for e in per_count),
        "mismatches": sum(e["mismatches"] for e in per_count),
        "errors": sum(e["error_count"] for e in per_count),
        "hung_threads": sum(e["hung_threads"] for e in per_count),
        "worst_abs_diff": worst if math.isfinite(worst) else "inf",
    }
