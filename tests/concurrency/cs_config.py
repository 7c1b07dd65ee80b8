"""Settings shared by the suite's parent process and its child processes.

This module imports nothing heavy (no torch): the parent process, which only runs pytest and
starts child processes, never touches the device, so a crash on the device can only ever take a
child down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Per-dtype tolerances, the ONE place they are stated. An output matches its golden output iff
# |out - golden| <= atol + rtol * |golden| elementwise (torch.isclose, NaN never matches).
# Golden and threaded outputs come from the same device and the same kernels, so they are
# normally bit-identical; the tolerance only absorbs kernels whose reduction order may vary
# between runs (atomics, split-K). Races produce differences of order 1 (the upstream
# TransformerEncoderLayer corruption was 0.484), far above these bounds.
TOLERANCES: dict[str, tuple[float, float]] = {
    # dtype name: (rtol, atol)
    "float32": (1e-4, 1e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (2e-2, 2e-2),
}
# Integer and bool outputs (pivots, indices) must be exactly equal.

# Skip reasons that start with this prefix are reported as "not applicable": never a pass,
# never silently dropped. Any other skip is reported as a failure.
NOT_APPLICABLE_PREFIX = "not applicable:"

DEVICES = ("auto", "mps", "cuda", "cpu")

# Environment variable for the project's own tests of the suite, never set in a real run:
# "safe-control" makes the control scenario lock its shared state (the control then goes
# undetected and the suite must fail); "crash-control" makes the control's child die by SIGSEGV
# (the suite must fail that check and name the signal).
SELFTEST_ENV = "CONCURRENCY_SUITE_SELFTEST"


@dataclass(frozen=True)
class Profile:
    """How hard each check pushes; --quick trims counts, never removes a model or a check."""

    name: str
    thread_counts: tuple[int, ...]
    iterations: int  # M: forward passes per thread per thread count
    short_lived_threads: int
    executor_requests: int
    oversubscribed_threads: int  # more threads than the 32 streams of an MPS/CUDA pool
    batch_queue_requests_per_client: int
    throughput_requests: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


FULL = Profile(
    name="full",
    thread_counts=(1, 2, 4, 8, 16, 32, 64),
    iterations=10,
    short_lived_threads=10_000,
    executor_requests=10_000,
    oversubscribed_threads=96,
    batch_queue_requests_per_client=40,
    throughput_requests=4_000,
)

QUICK = Profile(
    name="quick",
    thread_counts=(1, 2, 8, 64),
    iterations=3,
    short_lived_threads=10_000,
    executor_requests=10_000,
    oversubscribed_threads=96,
    batch_queue_requests_per_client=8,
    throughput_requests=1_024,
)

# Parallel-correctness workloads (built in cs_workloads.build_workload); each is one check.
WORKLOADS: tuple[str, ...] = (
    "linear",
    "linear_half",
    "mlp",
    "conv2d",
    "layernorm",
    "multihead_attention",
    "transformer_encoder_layer",
    "matmul",
    "bmm",
    "linalg_solve",
    "lu_factor",
    "strided_copy",
)

CLIENTS = 64  # BatchQueue clients and worker threads of the throughput table
BATCH_QUEUE_MAX_BATCH = 32
BATCH_QUEUE_MAX_DELAY_MS = 2.0


def profile_for(quick: bool) -> Profile:
    return QUICK if quick else FULL


# Sub-checks of the stream-semantics scenario (cs_streams.STREAM_CHECKS holds the code; the
# parent lists the names here so that it never imports torch).
STREAM_CHECK_NAMES: tuple[str, ...] = (
    "main_thread_default_stream",
    "new_thread_default_stream",
    "per_thread_current_stream",
    "set_stream_and_scoping",
    "device_synchronize_all_streams",
    "events_across_streams",
    "record_stream",
    "accelerator_route",
    "torch_stream_route",
)

BATCH_QUEUE_SECTIONS: tuple[str, ...] = (
    "load",
    "clients_64_single_row",
    "clients_64_multi_row_two_inputs",
    "errors_and_close",
)

# Wall-clock limit for one child scenario; past it the child is killed and reported as hung.
SCENARIO_TIMEOUT_S = {"quick": 240.0, "full": 480.0}

# The plugin that scripts/concurrency_suite.py registers carries a SuiteOptions under this
# attribute name; without it the tests in this directory are not collected at all.
PLUGIN_ATTRIBUTE = "concurrency_suite_options"


@dataclass
class SuiteOptions:
    device: str  # resolved: mps, cuda or cpu
    quick: bool
    require_patched: bool
    batch_queue_file: str | None
    info: dict[str, object]  # the probe child's "info" section figures
    device_check: dict[str, object]  # the probe child's real allocation + result on `device`
    device_reason: str = ""
    cpu_intra_op_threads: int = 1

    @property
    def profile(self) -> Profile:
        return profile_for(self.quick)

    def scenario_params(self) -> dict[str, object]:
        return {
            "device": self.device,
            "profile": self.profile.as_dict(),
            "batch_queue_file": self.batch_queue_file,
            "cpu_intra_op_threads": self.cpu_intra_op_threads,
        }

    @property
    def timeout_s(self) -> float:
        return SCENARIO_TIMEOUT_S[self.profile.name]


# Hand-off checks (cs_handoff.HANDOFF_CASES holds the code): a tensor made by one thread or
# stream and read by another, against a golden run on one thread. The names avoid the words
# other groups are selected by (-k control/streams/batch_queue/mlp) so selections stay exact.
HANDOFF_CASE_NAMES: tuple[str, ...] = (
    "executor_result_to_main",
    "queue_input_from_async_op",
    "dataloader_pin_memory",
    "global_lock_program",
    "autograd_backward_on_worker",
    "in_place_writes_across_threads",
    "per_thread_mode_to_main",
    "explicit_stream_to_main",
    "missing_wait_is_detected",
)
# Cases that need a device with streams (N/A on CPU); the first needs MPS's per-thread mode.
HANDOFF_STREAM_CASES: tuple[str, ...] = (
    "per_thread_mode_to_main",
    "explicit_stream_to_main",
    "missing_wait_is_detected",
)
# The unsafe hand-off control runs on MPS with the backend's tracking off (CUDA semantics).
MPS_NO_TRACKING_ENV = {"PYTORCH_MPS_STREAM_TRACKING": "0"}
