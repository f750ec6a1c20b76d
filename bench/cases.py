"""Latency benchmark core (torch-free, so it runs on a board with the runtime install only).

A benchmark is a list of cases (backend, precision, fusion, input size, batch). Cases of the same
input shape are timed together, interleaved round by round (runtime.timing), so that a noisy
machine hurts them alike, and the speed-up against PyTorch eager comes from the same run. Cases
that cannot run here are kept with the reason, so a table says "not run: why" instead of leaving
a hole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from runtime.backends import BACKENDS
from runtime.timing import TimingStats, time_interleaved


@dataclass(frozen=True)
class Case:
    backend: str  # torch-cpu, torch-cuda, torch-cuda-graphs, onnxruntime-cpu, openvino-cpu, tensorrt, ...
    precision: str
    fusion: str
    size: int  # square input side
    batch: int

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.fusion} {self.size}x{self.size} b{self.batch}"

    @property
    def variant(self) -> str:
        """Backend and precision: one line of the plot, one Inference Time table."""
        return f"{self.backend} {self.precision}"

    @property
    def file_precision(self) -> str:
        """The precision of the model file the case runs: BF16 runs the FP32 file (in BF16)."""
        return "fp32" if self.precision == "bf16" else self.precision

    @property
    def device(self) -> str:
        """Where the case runs: "cuda" or "cpu"."""
        return BACKENDS[self.backend].device

    @property
    def matmul_precision(self) -> str:
        """The precision of the matmul rate the case's achieved rate is set against: its own, but
        FP32 for INT8 (no INT8 ceiling is measured)."""
        return "fp32" if self.precision == "int8" else self.precision


@dataclass
class Target:
    """A model ready to run one case: `run()` does one inference on an input already in memory and
    returns None (the host clock measures it) or its own time in seconds (CUDA events)."""

    run: Callable[[], object]
    timing: str  # how the time is measured, in words, for the report
    close: Callable[[], None] = lambda: None


@dataclass
class Result:
    case: Case
    stats: TimingStats | None = None
    timing: str = ""
    skipped: str = ""  # why the case did not run ("" when it ran)
    speedup: float | None = None  # against the eager reference at the same shape and fusion

    @property
    def throughput(self) -> float | None:
        """Images per second at the median latency."""
        return None if self.stats is None else self.case.batch / (self.stats.median_ms / 1e3)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["throughput"] = self.throughput
        return d


@dataclass
class Settings:
    warmup: int = 3
    iterations: int = 10
    min_time: float | None = None
    threads: int | None = None


def run_cases(
    cases: Sequence[Case],
    make_target: Callable[[Case], Target],
    skipped: dict[Case, str],
    settings: Settings,
    progress: Callable[[int, int, str], None] | None = None,
    reference: Callable[[Case], Case | None] | None = None,
) -> list[Result]:
    """Time every runnable case, one input shape at a time (all its backends, precisions and
    fusions interleaved). `make_target` builds a case's Target; an exception there skips the case
    with the message. `reference(case)` names the case its speed-up is measured against."""
    results: dict[Case, Result] = {c: Result(c, skipped=skipped[c]) for c in cases if c in skipped}
    shapes = sorted({(c.size, c.batch) for c in cases if c not in skipped})
    rounds_total = len(shapes) * (settings.iterations + settings.warmup)
    done = 0
    for size, batch in shapes:
        group = [c for c in cases if (c.size, c.batch) == (size, batch) and c not in skipped]
        targets: dict[Case, Target] = {}
        for case in group:
            try:
                targets[case] = make_target(case)
            except Exception as exc:  # a backend's own error types; reported in the table
                results[case] = Result(case, skipped=f"failed to load: {str(exc).splitlines()[0][:200]}")
        if targets:
            label = f"{size}x{size} batch {batch}: {len(targets)} models interleaved"

            def tick(r: int, total: int, label=label, start=done + settings.warmup) -> None:
                if progress:
                    progress(start + r, rounds_total - settings.iterations + total, label)

            if progress:
                progress(done, rounds_total, label + " (warm-up)")
            stats = time_interleaved(
                {c.label: t.run for c, t in targets.items()},
                warmup=settings.warmup,
                iterations=settings.iterations,
                min_time=settings.min_time,
                progress=tick,
            )
            for case, target in targets.items():
                results[case] = Result(case, stats[case.label], target.timing)
                target.close()
        done += settings.iterations + settings.warmup
    ordered = [results[c] for c in cases]
    if reference:
        by_case = {r.case: r for r in ordered}
        for r in ordered:
            ref = reference(r.case)
            base = by_case.get(ref) if ref else None
            if r.stats and base and base.stats:
                r.speedup = base.stats.median_ms / r.stats.median_ms
    return ordered
