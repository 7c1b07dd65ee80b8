"""Thread lifecycle: many short-lived threads, more threads than streams, a 64-worker pool."""

from __future__ import annotations

from typing import Any

from cs_checks import judge_section


def test_short_lived_threads(scenario, figures: dict[str, Any]) -> None:
    judge_section(scenario("lifecycle_short_lived"), "short_lived_threads", figures)
    figures["summary"] = f"{figures['threads']} threads, {figures['threads_per_s']} threads/s"


def test_more_threads_than_streams(scenario, figures: dict[str, Any]) -> None:
    judge_section(scenario("lifecycle_oversubscribed"), "more_threads_than_streams", figures)
    figures["summary"] = (
        f"{figures['threads']} threads alive at once, {figures['outputs_checked']} outputs, "
        f"{figures['mismatches']} mismatches"
    )


def test_thread_pool_executor_64_workers(scenario, figures: dict[str, Any]) -> None:
    judge_section(scenario("lifecycle_executor"), "executor_64_workers", figures)
    figures["summary"] = (
        f"{figures['finished']}/{figures['requests']} requests, {figures['requests_per_s']}/s"
    )
