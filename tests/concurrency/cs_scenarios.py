"""Scenarios, each run in its own child process by cs_child.py.

A scenario takes (params, reporter) and reports named sections with figures and failures; the
pytest checks in this directory turn those into pass/fail. `params` always holds "device" and
"profile" (cs_config.Profile as a dict).
"""

from __future__ import annotations

import contextlib
import platform
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch
from cs_batch_queue import installed_batch_queue, load_batch_queue
from cs_checker import compare, golden_outputs, run_parallel_check, summarize
from cs_config import (
    BATCH_QUEUE_MAX_BATCH,
    BATCH_QUEUE_MAX_DELAY_MS,
    CLIENTS,
    SELFTEST_ENV,
)
from cs_handoff import HANDOFF_CASES, HandoffOps
from cs_report import Reporter, Section
from cs_streams import (
    STREAM_CHECKS,
    StreamBackend,
    missing_per_thread_api,
    missing_stream_api,
    mps_per_thread_mode,
)
from cs_workloads import build_workload, synchronize
from torch import nn

Scenario = Callable[[dict[str, Any], Reporter], None]
SERIES_DIGEST = re.compile(r"mps\.([0-9a-f]{8})")


def prepare_process(params: dict[str, Any]) -> None:
    """Per-child setup. On CPU each worker thread runs torch ops single-threaded.

    The suite's parallelism comes from its own Python threads (up to 96); letting each of them
    also fan out into the shared intra-op pool would oversubscribe small CI machines and
    measure the pool, not thread safety. GPU devices keep torch's defaults.
    """
    if params.get("device") == "cpu":
        torch.set_num_threads(int(params.get("cpu_intra_op_threads", 1)))


def series_digest(version: str) -> str | None:
    """The 8-hex patch-series digest of our wheels ('2.9.1+mps.<digest>'), else None."""
    _, _, local = version.partition("+")
    match = SERIES_DIGEST.fullmatch(local)
    return match.group(1) if match else None


# --------------------------------------------------------------------------- probe


def probe(params: dict[str, Any], rep: Reporter) -> None:
    with rep.section("info") as sec:
        sec.figures.update(
            torch_version=torch.__version__,
            series_digest=series_digest(torch.__version__),
            python=platform.python_version(),
            platform=platform.platform(),
            cuda_available=torch.cuda.is_available(),
            mps_built=torch.backends.mps.is_built(),
            mps_available=torch.backends.mps.is_available(),
            mps_missing_stream_api=missing_stream_api("mps"),
            mps_missing_per_thread_api=missing_per_thread_api(),
            torch_mps_batch_queue=installed_batch_queue() is not None,
        )
    device = params.get("device")
    if device:
        with rep.section("device") as sec:
            sec.figures.update(device_usable_detail(device))


def device_usable_detail(device: str) -> dict[str, Any]:
    """A real allocation and a computed result checked against the CPU.

    Hosted macOS runners report MPS as available while every allocation fails, so
    is_available() alone decides nothing.
    """
    a = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) / 4096
    expected = (a @ a.t() + 1).sum()
    on_device = a.to(device)
    got = (on_device @ on_device.t() + 1).sum().cpu()
    close = bool(torch.isclose(got, expected, rtol=1e-4))
    detail: dict[str, Any] = {"usable": close, "result": float(got), "expected": float(expected)}
    if device == "cuda":
        detail["name"] = torch.cuda.get_device_name()
    if not close:
        detail["reason"] = f"computed {float(got)} on {device}, expected {float(expected)}"
    return detail


# --------------------------------------------------------------------------- correctness


Variant = tuple[Callable[[], Any], Any, Callable[[], Any]]


def _variants(device: str) -> dict[str, Variant]:
    """Execution variants: (mode entered around each call, per-thread scope factory, scope
    around the whole run)."""
    plain = contextlib.nullcontext
    variants: dict[str, Variant] = {
        "eval": (plain, None, plain),
        "inference_mode": (torch.inference_mode, None, plain),
    }
    # CUDA and MPS threads share the default stream unless they opt in; cover both.
    if device == "cuda" or (device == "mps" and not missing_stream_api("mps")):
        module: Any = torch.cuda if device == "cuda" else torch.mps

        def own_stream(_: int) -> Any:
            return module.stream(module.Stream())

        variants["inference_mode+own_stream"] = (torch.inference_mode, own_stream, plain)
    if device == "mps" and not missing_per_thread_api():
        variants["inference_mode+per_thread_mode"] = (
            torch.inference_mode,
            None,
            lambda: mps_per_thread_mode(device),
        )
    return variants


def correctness(params: dict[str, Any], rep: Reporter) -> None:
    device, profile = params["device"], params["profile"]
    workload = build_workload(params["workload"], device)
    for variant, (mode, per_thread, around) in _variants(device).items():
        with rep.section(variant) as sec, around():
            goldens = golden_outputs(workload.call, workload.inputs, mode)
            synchronize(device)
            per_count = run_parallel_check(
                workload.call,
                workload.inputs,
                goldens,
                thread_counts=profile["thread_counts"],
                iterations=profile["iterations"],
                mode=mode,
                per_thread=per_thread,
            )
            totals = summarize(per_count)
            sec.figures.update(
                workload=workload.description,
                dtype=str(workload.dtype).removeprefix("torch."),
                totals=totals,
                per_thread_count=per_count,
            )
            _fail_on_dirty(sec, per_count)


def _fail_on_dirty(sec: Section, per_count: list[dict[str, Any]]) -> None:
    for entry in per_count:
        if entry["mismatches"]:
            sec.fail(
                f"{entry['threads']} threads: {entry['mismatches']} of "
                f"{entry['outputs_checked']} outputs differ from the golden output "
                f"(worst abs diff {entry['worst_abs_diff']} at {entry['worst_at']})"
            )
        if entry["error_count"]:
            sec.fail(
                f"{entry['threads']} threads: {entry['error_count']} raised; first: "
                + "\n".join(entry["errors"][:1])
            )
        if entry["hung_threads"]:
            sec.fail(f"{entry['threads']} threads: {entry['hung_threads']} threads never finished")
        if entry["outputs_checked"] != entry["expected_outputs"] and not entry["error_count"]:
            sec.fail(
                f"{entry['threads']} threads: checked {entry['outputs_checked']} outputs, "
                f"expected {entry['expected_outputs']}"
            )


class UnsafeScratchModule(nn.Module):
    """CONTROL: a module that is NOT thread-safe on purpose.

    It parks its input on `self` and reads it back after a short sleep, the way a module that
    caches per-call state on itself does. The sleep hands the GIL to other threads, so with two
    or more threads one call reads another call's input. The correctness checker must flag this.
    """

    def __init__(self, inner: nn.Module, safe: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.scratch: torch.Tensor | None = None
        self.lock = threading.Lock() if safe else contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.scratch = x
            time.sleep(0.002)  # force a thread switch while the shared state is live
            return self.inner(self.scratch)


def control(params: dict[str, Any], rep: Reporter) -> None:
    """Run the checker on the unsafe module; it must report mismatches with 2+ threads."""
    import os

    device, profile = params["device"], params["profile"]
    selftest = os.environ.get(SELFTEST_ENV)
    safe = selftest == "safe-control"
    base = build_workload("linear", device)
    module = UnsafeScratchModule(base.call, safe=safe)
    counts = sorted({1, 2, 4, 8, *[t for t in profile["thread_counts"] if t <= 16]})
    with rep.section("control") as sec:
        if selftest == "crash-control":
            import signal

            os.kill(os.getpid(), signal.SIGSEGV)
        goldens = golden_outputs(module, base.inputs, torch.inference_mode)
        synchronize(device)
        per_count = run_parallel_check(
            module,
            base.inputs,
            goldens,
            thread_counts=counts,
            iterations=max(3, profile["iterations"]),
            mode=torch.inference_mode,
        )
        sec.figures.update(selftest_safe_control=safe, per_thread_count=per_count)
        single = next(e for e in per_count if e["threads"] == 1)
        racing = [e for e in per_count if e["threads"] >= 2]
        detected = sum(e["mismatches"] for e in racing)
        sec.figures["mismatches_detected"] = detected
        sec.check(
            single["mismatches"] == 0 and single["error_count"] == 0,
            "the checker flags the control even with one thread: the check itself is wrong",
        )
        sec.check(
            detected > 0,
            "the correctness checker did NOT detect the deliberately unsafe shared module "
            "(0 mismatches with 2+ threads): the suite has no teeth",
        )
        sec.check(all(e["error_count"] == 0 for e in per_count), "the control raised errors")


# --------------------------------------------------------------------------- lifecycle


def _sum_check_op(device: str) -> tuple[torch.Tensor, Callable[[int], bool]]:
    base = torch.arange(256, dtype=torch.float32, device=device)
    total = float(torch.arange(256).sum())

    def run(k: int) -> bool:
        return float((base * k).sum().cpu()) == k * total  # integers < 2**24: exact

    return base, run


def _stream_id_or_none(device: str) -> int | None:
    if device == "cpu" or missing_stream_api(device):
        return None
    return StreamBackend(device).sid(StreamBackend(device).current())


def lifecycle_short_lived(params: dict[str, Any], rep: Reporter) -> None:
    """Many threads that each run one op and exit; at most 64 alive at a time."""
    device, total = params["device"], params["profile"]["short_lived_threads"]
    _, run = _sum_check_op(device)
    synchronize(device)
    slots = threading.BoundedSemaphore(64)
    lock = threading.Lock()
    counts = {"wrong": 0, "errors": 0}
    stream_ids: set[int] = set()
    first_error: list[str] = []

    def short_lived(tid: int) -> None:
        try:
            ok = run(tid % 7 + 1)
            sid = _stream_id_or_none(device)
            with lock:
                counts["wrong"] += not ok
                if sid is not None:
                    stream_ids.add(sid)
        except Exception as exc:
            with lock:
                counts["errors"] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()

    # On MPS with per-thread mode every thread takes and gives back a worker stream.
    with rep.section("short_lived_threads") as sec, mps_per_thread_mode(device):
        started = time.perf_counter()
        threads = []
        for tid in range(total):
            slots.acquire()
            thread = threading.Thread(target=short_lived, args=(tid,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=60)
        seconds = time.perf_counter() - started
        hung = sum(t.is_alive() for t in threads)
        sec.figures.update(
            threads=total,
            seconds=round(seconds, 3),
            threads_per_s=round(total / seconds, 1),
            wrong=counts["wrong"],
            errors=counts["errors"],
            hung=hung,
            distinct_stream_ids=len(stream_ids) if stream_ids else None,
        )
        sec.check(counts["wrong"] == 0, f"{counts['wrong']} of {total} threads computed wrong")
        sec.check(counts["errors"] == 0, f"{counts['errors']} threads raised; first: {first_error}")
        sec.check(hung == 0, f"{hung} threads never finished")
        sec.check(run(3), "the main thread computes wrong after the short-lived threads")


def _request_model(device: str) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """A small 3-layer MLP serving one-row requests, with its inputs and golden outputs."""
    torch.manual_seed(99)
    model = (
        nn.Sequential(
            nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 16)
        )
        .to(device)
        .eval()
    )
    gen = torch.Generator().manual_seed(7)
    rows = [torch.randn(1, 256, generator=gen).to(device) for _ in range(CLIENTS)]
    with torch.inference_mode():
        goldens = [model(row).cpu() for row in rows]
    synchronize(device)
    return model, rows, goldens


def lifecycle_oversubscribed(params: dict[str, Any], rep: Reporter) -> None:
    """More threads alive at once than a device has streams (32 per pool)."""
    device, profile = params["device"], params["profile"]
    workload = build_workload("mlp", device)
    count = profile["oversubscribed_threads"]
    stream_ids: set[int] = set()
    lock = threading.Lock()

    @contextlib.contextmanager
    def note_stream(_: int) -> Any:
        sid = _stream_id_or_none(device)  # on MPS: the stream this thread was given
        if sid is not None:
            with lock:
                stream_ids.add(sid)
        yield

    with rep.section("more_threads_than_streams") as sec, mps_per_thread_mode(device):
        goldens = golden_outputs(workload.call, workload.inputs, torch.inference_mode)
        synchronize(device)
        per_count = run_parallel_check(
            workload.call,
            workload.inputs,
            goldens,
            thread_counts=[count],
            iterations=max(4, profile["iterations"]),
            mode=torch.inference_mode,
            per_thread=note_stream,
        )
        sec.figures.update(per_count[0])
        sec.figures["distinct_stream_ids"] = len(stream_ids) if stream_ids else None
        _fail_on_dirty(sec, per_count)


def lifecycle_executor(params: dict[str, Any], rep: Reporter) -> None:
    """ThreadPoolExecutor(max_workers=64) must finish every request, correctly, without hanging."""
    device, total = params["device"], params["profile"]["executor_requests"]
    model, rows, goldens = _request_model(device)

    def request(i: int) -> bool:
        with torch.inference_mode():
            out = model(rows[i % len(rows)]).cpu()
        return compare((out,), (goldens[i % len(rows)],)).matches

    with rep.section("executor_64_workers") as sec:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=64) as pool:
            futures = [pool.submit(request, i) for i in range(total)]
            done, not_done = wait(futures, timeout=240)
        seconds = time.perf_counter() - started
        failed = [f for f in done if f.exception() is not None]
        wrong = sum(1 for f in done if f.exception() is None and not f.result())
        sec.figures.update(
            requests=total,
            finished=len(done),
            seconds=round(seconds, 3),
            requests_per_s=round(len(done) / seconds, 1),
            wrong=wrong,
            errors=len(failed),
        )
        sec.check(not not_done, f"{len(not_done)} of {total} requests never finished (deadlock?)")
        sec.check(wrong == 0, f"{wrong} of {total} requests returned wrong outputs")
        sec.check(
            not failed,
            f"{len(failed)} requests raised; first: "
            + (repr(failed[0].exception()) if failed else ""),
        )


# --------------------------------------------------------------------------- streams


def streams(params: dict[str, Any], rep: Reporter) -> None:
    backend = StreamBackend(params["device"])
    for name, check in STREAM_CHECKS.items():
        with rep.section(name) as sec:
            check(backend, sec)


# --------------------------------------------------------------------------- hand-offs


def handoff(params: dict[str, Any], rep: Reporter) -> None:
    """The hand-off cases named in params["cases"] (cs_handoff.HANDOFF_CASES), one section each."""
    ops = HandoffOps(params["device"])
    for case in params["cases"]:
        with rep.section(case) as sec:
            HANDOFF_CASES[case](ops, sec, params)


# --------------------------------------------------------------------------- BatchQueue


def _run_clients(clients: int, per_client: int, request: Callable[[int, int], bool]) -> dict:
    """`clients` threads each making `per_client` requests; counts wrong and failed ones."""
    lock = threading.Lock()
    tally = {"wrong": 0, "errors": 0, "done": 0}
    first_error: list[str] = []
    start = threading.Barrier(clients + 1, timeout=60)

    def client(cid: int) -> None:
        start.wait()
        for j in range(per_client):
            try:
                ok = request(cid, j)
            except Exception as exc:
                with lock:
                    tally["errors"] += 1
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                tally["done"] += 1
                tally["wrong"] += not ok

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout=240)
    seconds = time.perf_counter() - began
    return {
        **tally,
        "hung_clients": sum(t.is_alive() for t in threads),
        "seconds": seconds,
        "first_error": first_error[:1],
    }


def _check_clients(sec: Section, tally: dict[str, Any], expected: int) -> None:
    sec.check(tally["wrong"] == 0, f"{tally['wrong']} of {expected} results differ from golden")
    sec.check(tally["errors"] == 0, f"{tally['errors']} requests raised: {tally['first_error']}")
    sec.check(tally["hung_clients"] == 0, f"{tally['hung_clients']} clients never finished")
    sec.check(tally["done"] == expected, f"{tally['done']} of {expected} requests completed")


def batch_queue(params: dict[str, Any], rep: Reporter) -> None:
    device, per_client = params["device"], params["profile"]["batch_queue_requests_per_client"]
    with rep.section("load") as sec:
        queue_cls, source = load_batch_queue(params.get("batch_queue_file"))
        sec.figures["source"] = source
        sec.check(queue_cls is not None, source)
    if queue_cls is None:
        return
    model, rows, goldens = _request_model(device)
    batch_rows: list[int] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        batch_rows.append(int(x.shape[0]))
        with torch.inference_mode():
            return model(x)

    with rep.section("clients_64_single_row") as sec:
        queue = queue_cls(
            forward, max_batch_size=BATCH_QUEUE_MAX_BATCH, max_delay_ms=BATCH_QUEUE_MAX_DELAY_MS
        )
        with queue:

            def request(cid: int, j: int) -> bool:
                k = (cid + j) % len(rows)
                out = queue.submit(rows[k]).result(timeout=60)
                return compare((out.cpu(),), (goldens[k],)).matches

            tally = _run_clients(CLIENTS, per_client, request)
        expected = CLIENTS * per_client
        sec.figures.update(
            clients=CLIENTS,
            requests=expected,
            batches=len(batch_rows),
            max_batch_rows=max(batch_rows, default=0),
            mean_batch_rows=round(sum(batch_rows) / max(1, len(batch_rows)), 2),
            rows_processed=sum(batch_rows),
            requests_per_s=round(tally["done"] / tally["seconds"], 1),
        )
        _check_clients(sec, tally, expected)
        sec.check(
            max(batch_rows, default=0) > 1,
            "BatchQueue never batched: every forward pass saw one row under 64 clients",
        )
        sec.check(
            max(batch_rows, default=0) <= BATCH_QUEUE_MAX_BATCH,
            f"a batch had {max(batch_rows)} rows, above max_batch_size",
        )
        sec.check(
            sum(batch_rows) == expected,
            f"the model saw {sum(batch_rows)} rows for {expected} one-row requests",
        )

    _batch_queue_multi_input(rep, queue_cls, model, device, per_client)
    _batch_queue_errors(rep, queue_cls, model, rows, goldens)


def _batch_queue_multi_input(
    rep: Reporter, queue_cls: Any, model: nn.Module, device: str, per_client: int
) -> None:
    """Requests of 1-3 rows with two input tensors; each caller gets exactly its rows."""
    gen = torch.Generator().manual_seed(11)
    requests = []
    for i in range(CLIENTS):
        rows = i % 3 + 1
        a = torch.randn(rows, 256, generator=gen).to(device)
        b = torch.randn(rows, 16, generator=gen).to(device)
        with torch.inference_mode():
            requests.append((a, b, (model(a) + b).cpu()))
    synchronize(device)

    def forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(a) + b

    with rep.section("clients_64_multi_row_two_inputs") as sec:
        with queue_cls(
            forward, max_batch_size=BATCH_QUEUE_MAX_BATCH, max_delay_ms=BATCH_QUEUE_MAX_DELAY_MS
        ) as queue:

            def request(cid: int, j: int) -> bool:
                a, b, golden = requests[(cid + j) % len(requests)]
                out = queue.submit(a, b).result(timeout=60)
                return compare((out.cpu(),), (golden,)).matches

            tally = _run_clients(CLIENTS, per_client, request)
        sec.figures.update(clients=CLIENTS, requests=CLIENTS * per_client)
        _check_clients(sec, tally, CLIENTS * per_client)


def _batch_queue_errors(
    rep: Reporter,
    queue_cls: Any,
    model: nn.Module,
    rows: list[torch.Tensor],
    goldens: list[torch.Tensor],
) -> None:
    """A failing forward pass reaches its caller's future; the queue keeps serving; close()."""
    marker = "poisoned request for the suite"

    def forward(x: torch.Tensor) -> torch.Tensor:
        if bool(torch.isnan(x).any()):
            raise ValueError(marker)
        with torch.inference_mode():
            return model(x)

    with rep.section("errors_and_close") as sec:
        queue = queue_cls(
            forward, max_batch_size=BATCH_QUEUE_MAX_BATCH, max_delay_ms=BATCH_QUEUE_MAX_DELAY_MS
        )
        poison = torch.full_like(rows[0], float("nan"))
        error = queue.submit(poison).exception(timeout=60)
        sec.check(
            error is not None and marker in _exception_text(error),
            f"the failing request's future gave {error!r}, not the forward pass's error",
        )
        out = queue.submit(rows[0]).result(timeout=60)
        sec.check(
            compare((out.cpu(),), (goldens[0],)).matches,
            "after a failed batch the queue returns wrong results",
        )
        queue.close()
        try:
            late = queue.submit(rows[0])
        except Exception as exc:
            sec.figures["submit_after_close"] = f"raises {type(exc).__name__}"
        else:
            late_error = late.exception(timeout=10)
            sec.figures["submit_after_close"] = f"future fails with {late_error!r}"
            sec.check(late_error is not None, "submit() after close() ran the request")


def _exception_text(error: BaseException) -> str:
    parts = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 5:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return " | ".join(parts)


# --------------------------------------------------------------------------- throughput


def throughput(params: dict[str, Any], rep: Reporter) -> None:
    """Requests/s of one-row requests: serial, 64 threads under one lock, 64 free threads,
    64 client threads of a BatchQueue (blocking calls, the API meant for threads, and
    submit().result()). Every output is checked too."""
    device, total = params["device"], params["profile"]["throughput_requests"]
    model, rows, goldens = _request_model(device)
    per_client = max(1, total // CLIENTS)
    requests = per_client * CLIENTS
    table: dict[str, Any] = {}

    def infer(k: int) -> bool:
        with torch.inference_mode():
            out = model(rows[k]).cpu()
        return compare((out,), (goldens[k],)).matches

    with rep.section("throughput") as sec:
        began = time.perf_counter()
        wrong = sum(not infer(i % len(rows)) for i in range(requests))
        serial_s = time.perf_counter() - began
        table["serial"] = _row(requests, serial_s, wrong, 0, threads=1)

        big_lock = threading.Lock()

        def locked(cid: int, j: int) -> bool:
            with big_lock:
                return infer((cid + j) % len(rows))

        tally = _run_clients(CLIENTS, per_client, locked)
        table["locked_threads"] = _row(
            requests, tally["seconds"], tally["wrong"], tally["errors"], threads=CLIENTS
        )
        tally = _run_clients(CLIENTS, per_client, lambda c, j: infer((c + j) % len(rows)))
        table["free_threads"] = _row(
            requests, tally["seconds"], tally["wrong"], tally["errors"], threads=CLIENTS
        )
        table["batch_queue"] = _batch_queue_row(params, model, rows, goldens, per_client, True)
        table["batch_queue_fut"] = _batch_queue_row(params, model, rows, goldens, per_client, False)
        for row in table.values():
            if row.get("requests_per_s"):
                row["vs_serial"] = round(
                    row["requests_per_s"] / table["serial"]["requests_per_s"], 2
                )
        sec.figures.update(
            requests=requests, model="MLP 256-1024-1024-16, one row per request", table=table
        )
        for mode, row in table.items():
            sec.check(row.get("wrong", 0) == 0, f"{mode}: {row.get('wrong')} wrong outputs")
            sec.check(row.get("errors", 0) == 0, f"{mode}: {row.get('errors')} requests raised")


def _row(requests: int, seconds: float, wrong: int, errors: int, threads: int) -> dict[str, Any]:
    return {
        "threads": threads,
        "requests": requests,
        "seconds": round(seconds, 4),
        "requests_per_s": round(requests / seconds, 1),
        "wrong": wrong,
        "errors": errors,
    }


def _batch_queue_row(
    params: dict[str, Any],
    model: nn.Module,
    rows: list[torch.Tensor],
    goldens: list[torch.Tensor],
    per_client: int,
    blocking: bool,
) -> dict[str, Any]:
    """blocking: clients call queue(x) (a queue without __call__, like the suite's own test
    double, gets submit().result() instead); else submit(x).result()."""
    queue_cls, source = load_batch_queue(params.get("batch_queue_file"))
    if queue_cls is None:
        return {"available": False, "reason": source}

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    with queue_cls(
        forward, max_batch_size=BATCH_QUEUE_MAX_BATCH, max_delay_ms=BATCH_QUEUE_MAX_DELAY_MS
    ) as queue:
        blocking = blocking and callable(queue)

        def submit(cid: int, j: int) -> bool:
            k = (cid + j) % len(rows)
            out = queue(rows[k]) if blocking else queue.submit(rows[k]).result(timeout=60)
            return compare((out.cpu(),), (goldens[k],)).matches

        tally = _run_clients(CLIENTS, per_client, submit)
    row = _row(CLIENTS * per_client, tally["seconds"], tally["wrong"], tally["errors"], CLIENTS)
    api = "queue(x)" if blocking else "queue.submit(x).result()"
    return {**row, "available": True, "source": source, "api": api}


SCENARIOS: dict[str, Scenario] = {
    "probe": probe,
    "correctness": correctness,
    "control": control,
    "lifecycle_short_lived": lifecycle_short_lived,
    "lifecycle_oversubscribed": lifecycle_oversubscribed,
    "lifecycle_executor": lifecycle_executor,
    "streams": streams,
    "handoff": handoff,
    "batch_queue": batch_queue,
    "throughput": throughput,
}
