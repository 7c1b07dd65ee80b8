"""scripts/bench_batching.py: the floors it measures finish and count every client, and a
quick run writes every figure the README table reads (with the series' BatchQueue, on CPU)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import bench_batching  # noqa: E402

WAIT = 60  # seconds: a floor that hangs fails instead of blocking the suite
SHORT = argparse.Namespace(warmup=0.05, seconds=0.3)


def finishes(measure: Callable[[], float]) -> float:
    """Run ``measure`` on a thread; fail when it has not returned within WAIT seconds."""
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(measure()), daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), f"the floor did not finish within {WAIT} s (clients stuck)"
    assert result, "the floor raised (see the thread's traceback above)"
    return result[0]


@pytest.mark.parametrize("clients", [1, 3])
@pytest.mark.parametrize("name", list(bench_batching.FLOORS))
def test_floor_finishes_with_every_client_served(name: str, clients: int) -> None:
    measure, _ = bench_batching.FLOORS[name]
    us = finishes(lambda: measure(clients, SHORT))
    assert 0 < us < 1e5, f"{name} floor: {us} us per request"


def test_threads_floor_passes_the_baton_to_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each client of the threads floor completes requests: the ring really goes round."""
    seen: list[list[list[tuple[float, float, int]]]] = []
    sample = bench_batching.Window.sample

    def record(self: bench_batching.Window, records: list) -> bench_batching.Sample:
        seen.append(records)
        return sample(self, records)

    monkeypatch.setattr(bench_batching.Window, "sample", record)
    finishes(lambda: bench_batching.floor_threads_run(4, SHORT))
    counts = [len(per_client) for per_client in seen[0]]
    assert min(counts) > 0 and max(counts) - min(counts) <= 1, counts


def test_quick_run_writes_every_figure(patched_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    status = bench_batching.main([
        "--device", "cpu", "--quick", "--clients", "1,2", "--models", "mlp",
        "--seconds", "0.2", "--warmup", "0.05",
        "--batch-queue-file", str(patched_tree / "torch" / "mps" / "batch_queue.py"),
        "--json", str(out),
    ])  # fmt: skip
    assert status == 0
    report = json.loads(out.read_text())
    modes = {(row["mode"], row["clients"]) for row in report["results"]}
    assert modes == {(mode, n) for mode in bench_batching.MODES for n in (1, 2)}
    overhead = report["noop_overhead"]
    for figure in ("closed_loop_us_per_request", "asyncio_us_per_request"):
        assert set(overhead[figure]) == {"1", "2"}, figure
    assert set(overhead["floor_us_per_request"]) == set(bench_batching.FLOORS)
    for name, per_count in overhead["floor_us_per_request"].items():
        assert set(per_count) == {"1", "2"} and min(per_count.values()) > 0, name
    for per_clients in report["round_ratios"].values():
        for entry in per_clients.values():
            for spread in entry.values():
                assert len(spread["rounds"]) == 1  # --quick: one round
    assert set(report["round_ratios"]["mlp"]["1"]) == set(report["ratios"]["mlp"]["1"])
    assert report["side_stream_check"].get("correct") is not False
    assert report["host_output_check"] == {"checked": False,
                                           "reason": "outputs are on the host already"}  # fmt: skip


def test_round_ratios_pair_each_rounds_windows() -> None:
    """Each round's ratio divides that round's windows: the machine slowed down 2x in round 2
    and 4x in round 3 for both modes alike, and the queue's own speed moved 0.9x, 1.2x, 0.5x."""
    results = [
        {"model": "mlp", "mode": "locked", "clients": 1, "round_rps": [100.0, 50.0, 25.0]},
        {"model": "mlp", "mode": "batchqueue", "clients": 1, "round_rps": [90.0, 60.0, 12.5]},
        {"model": "mlp", "mode": "threads", "clients": 1, "round_rps": [1.0, 1.0, 1.0]},
    ]
    table = bench_batching.round_ratios(results)
    assert set(table["mlp"]["1"]) == {"batchqueue_vs_locked"}
    spread = table["mlp"]["1"]["batchqueue_vs_locked"]
    assert spread["rounds"] == pytest.approx([0.9, 1.2, 0.5])
    assert (spread["median"], spread["min"], spread["max"]) == pytest.approx((0.9, 0.5, 1.2))


def test_large_transformer_is_a_choice_but_not_a_default() -> None:
    """The device-bound model runs when asked for: on CPU it would take minutes per mode."""
    args = bench_batching.parse_args(["--json", "x.json", "--models", "large-transformer"])
    assert args.models == ["large-transformer"]
    assert "large-transformer" not in bench_batching.parse_args(["--json", "x.json"]).models


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--sizes", "1k,2"], "--sizes '1k,2'"), (["--sizes", "0"], "--sizes '0'"),
     ([], "no CUDA device")],
)  # fmt: skip
def test_host_copy_bench_refuses_bad_sizes_and_a_machine_without_cuda(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench_host_copy

    if not argv and bench_host_copy.torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be shown here")
    assert bench_host_copy.main(argv) == 2
    assert message in capsys.readouterr().err


def test_one_client_bench_compares_versions_and_restores_what_it_timed(
    patched_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench_one_client.py prints a lock-relative row per version and the stages of the first,
    and leaves the timed module as it found it (its wrappers would skew later runs)."""
    import bench_one_client

    queue_file = patched_tree / "torch" / "mps" / "batch_queue.py"
    copy = tmp_path / "batch_queue.py"  # the same name from another tree: its own row
    copy.write_text(queue_file.read_text())
    status = bench_one_client.main(["--device", "cpu", "--model", "mlp", "--calls", "5",
                                    "--blocks", "2", "--batch-queue-file", str(queue_file),
                                    "--batch-queue-file", str(copy), "--stages"])  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "throughput / locked" in line]
    assert [row.split()[0] for row in rows] == ["locked", str(queue_file), str(copy)], rows
    stages = {line.split()[0] for line in out.split("stages of", 1)[1].splitlines()[1:]}
    assert {"total", "model", "_make_request", "_solo_output"} <= stages, stages

    module = bench_batching.load_module(queue_file, "bq_restored")
    before = dict(vars(module.BatchQueue))
    make, shape = bench_batching.MODELS["mlp"]
    torch = bench_batching.torch
    with torch.inference_mode():
        bench_one_client.time_stages(module, make().eval(), torch.device("cpu"),
                                     torch.randn(1, *shape), 3)  # fmt: skip
    assert dict(vars(module.BatchQueue)) == before
    assert "copy" not in vars(module._streams)  # the instance uses its class's methods again
