"""Timing statistics for latency tables (numpy only, so it runs on a board)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    iterations: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> TimingStats:
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        return cls(
            iterations=int(ms.size),
            median_ms=float(np.median(ms)),
            mean_ms=float(ms.mean()),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            std_ms=float(ms.std()),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int = 2,
    iterations: int = 10,
    min_time: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, TimingStats]:
    """Time several callables in turn, one call each per round, so that a noisy machine (another
    process, thermal changes) hurts them alike. Warm-up rounds are not counted. The first timed round
    keeps the given order, later rounds are shuffled (seeded, so a run repeats), so no callable
    keeps the same neighbour (a runtime whose threads keep spinning after its call, or one that
    leaves the caches full of its own data, would otherwise slow the same callable every round).

    A callable that returns a float reports its own time in seconds (CUDA events on a GPU, where
    the host clock would include launch and synchronisation); otherwise the host clock is used.
    `min_time` (seconds): keep adding rounds past `iterations` until every callable has run that
    long in total. `progress(round, rounds)` is called after each round (rounds is the planned
    count; it grows when min_time extends the run)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    shuffler = random.Random(0)
    rounds = 0
    while True:
        for name, fn in order:
            start = time.perf_counter()
            reported = fn()
            elapsed = time.perf_counter() - start
            samples[name].append(reported if isinstance(reported, float) else elapsed)
        rounds += 1
        shuffler.shuffle(order)
        done = rounds >= iterations and (min_time is None or all(sum(s) >= min_time for s in samples.values()))
        if progress:
            progress(rounds, rounds if done else max(iterations, rounds + 1))
        if done:
            return {name: TimingStats.from_seconds(s) for name, s in samples.items()}
