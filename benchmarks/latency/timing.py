"""Timers: one call of a model, host to host (wall clock) or on the device (CUDA events), and interleaved sampling."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

Timer = Callable[[], float]  # one call; returns its duration in ms
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_host_clock = CLOCKS["wall"]


def use_clock(name: str) -> None:
    """Time host calls by the wall clock (latency) or by this process's CPU time (work: on a shared machine,
    the ratios of calls to each other and to the floor without other processes' share of the cores)."""
    global _host_clock
    _host_clock = CLOCKS[name]


def counts_work() -> bool:
    """Whether host calls are timed by CPU time (--clock cpu)."""
    return _host_clock is CLOCKS["cpu"]


def wall_clock(fn: Callable[[], Any]) -> Timer:
    """Host-to-host time of `fn` (which must return only when its results are on the host), by the clock in use."""

    def timed() -> float:
        clock = _host_clock
        start = clock()
        fn()
        return (clock() - start) * 1e3

    return timed


def cuda_events(fn: Callable[[], Any], stream: torch.cuda.Stream | None = None) -> Timer:
    """Device time of the work `fn` enqueues on `stream` (default: the current CUDA stream), by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end)

    return timed


def staged_call(images: np.ndarray, staging: torch.Tensor, execute: Callable[[], Any], outputs: Sequence[torch.Tensor]) -> Timer:
    """Host-to-host time of a call on fixed device buffers: copy `images` into `staging`, `execute`, fetch `outputs`."""
    source = torch.from_numpy(images)

    def run() -> None:
        staging.copy_(source)
        execute()
        [o.cpu() for o in outputs]

    return wall_clock(run)


def sample(timers: list[Timer], warmup: int, iters: int, budget_s: float, min_iters: int = 3) -> list[list[float]]:
    """Warm up, then time the timers in turn, call by call, so that a change of machine load hits all of them
    alike: up to `iters` rounds (at least `min_iters`, no new round after `budget_s`). Times per timer."""
    for _ in range(warmup):
        for timer in timers:
            timer()
    times: list[list[float]] = [[] for _ in timers]
    start = time.perf_counter()
    while len(times[0]) < iters and (len(times[0]) < min_iters or time.perf_counter() - start < budget_s):
        for timer, out in zip(timers, times):
            out.append(timer())
    return times
