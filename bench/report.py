"""The benchmark's tables (the guide's, with measured numbers) and its files: Markdown, CSV, JSON
and a PNG plot, each stamped with the command, date, machine and versions. Torch-free.

Every table is built once as (title, columns, rows, note) and rendered both to the terminal and to
Markdown, so the two never disagree.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.cases import Result
from runtime.files import check_output_path, write_bytes_atomic, write_json_atomic
from runtime.tables import Table, cell
from runtime.timing import time_interleaved

_CASE = ("backend", "precision", "fusion", "size", "batch")
_STATS = ("median", "mean", "p90", "p99", "min", "max", "std")  # TimingStats fields, in ms
_PROVENANCE = ("date", "machine", "versions", "command")


@dataclass
class BenchReport:
    """What one `msdeploy bench` run measured. The parameter, FLOP and per-part memory tables come
    from the PyTorch model; where they could not be produced, `unavailable` says why."""

    command: str
    stamp: str
    backbone: str
    settings: dict
    results: list[Result]
    params: list[dict] | None = None  # rows of models.params.parameter_table
    flops: dict[str, list[dict]] | None = None  # fusion -> models.complexity.PartCost rows
    table_size: int = 352  # the input side of the integration, memory, complexity and rate tables
    memory: dict[str, dict[str, float]] | None = None  # fusion -> part -> peak MB added
    memory_note: str = ""
    # the ceilings achieved rates are set against: "cpu fp32", "cuda fp16", ... -> GFLOP/s of a large
    # matrix product on that device and precision, measured in the same run; the note says how
    matmul_rates: dict[str, float] = field(default_factory=dict)
    matmul_note: str = ""
    unavailable: dict[str, str] = field(default_factory=dict)  # table -> why it is missing
    provenance: dict[str, str] = field(default_factory=dict)  # runtime.environment.provenance: the stamp's fields

    # ---- tables -------------------------------------------------------------------------
    def fusions(self) -> list[str]:
        return list(dict.fromkeys(r.case.fusion for r in self.results))

    def variants(self) -> list[str]:
        """Backend and precision pairs with at least one measurement (the rest are in "Not run here")."""
        return list(dict.fromkeys(r.case.variant for r in self.results if r.stats))

    def _cell(self, r: Result | None) -> str:
        if r is None:
            return "-"
        if r.stats is None:
            return "not run"
        speed = f" ({r.speedup:.2f}x)" if r.speedup is not None else ""
        return f"{r.stats.median_ms:.1f}{speed}"

    def inference_time_tables(self) -> list[Table]:
        """The guide's Inference Time table, one per backend and precision: rows input sizes (and
        batches), columns fusion modes, median ms with the speed-up against PyTorch eager."""
        tables = []
        fusions = self.fusions()
        for variant in self.variants():
            rows_of = [r for r in self.results if r.case.variant == variant]
            shapes = list(dict.fromkeys((r.case.size, r.case.batch) for r in rows_of))
            cell = {(r.case.size, r.case.batch, r.case.fusion): r for r in rows_of}
            rows = [
                [f"{s}x{s}" + (f" b{b}" if b != 1 else ""), *(self._cell(cell.get((s, b, f))) for f in fusions)]
                for s, b in shapes
            ]
            compared = any(r.speedup is not None for r in rows_of)
            note = "median ms per batch " + (
                "(speed-up against PyTorch eager on the same device, same run)"
                if compared
                else "(no PyTorch eager row in this run to compare with)"
            )
            tables.append(Table(f"Inference Time: {variant}", ["input", *fusions], rows, note))
        return tables

    def detail_table(self) -> Table:
        rows = []
        for r in self.results:
            c, st = r.case, r.stats
            case = [c.backend, c.precision, c.fusion, str(c.size), str(c.batch)]
            if st is None:
                rows.append([*case, *["-"] * (len(_STATS) + 2), r.skipped])
                continue
            rows.append(
                [
                    *case,
                    *(f"{getattr(st, f'{k}_ms'):.1f}" for k in _STATS),
                    f"{r.throughput:.2f}",
                    "-" if r.speedup is None else f"{r.speedup:.2f}x",
                    f"{st.iterations} runs; {r.timing}",
                ]
            )
        cols = [*_CASE, *(f"{k} ms" for k in _STATS), "images/s", "vs eager", "timing"]
        return Table("All measurements", cols, rows)

    def integration_table(self) -> Table:
        """The guide's Integration Method Comparison: latency per backend at one size, peak memory,
        GFLOPs and parameters per fusion mode."""
        size = self.table_size
        variants = self.variants()
        params = {p["key"]: p["params"] for p in self.params or []}
        rows = []
        for fusion in self.fusions():
            lat = []
            for v in variants:
                r = next(
                    (
                        r
                        for r in self.results
                        if r.case.variant == v and r.case.fusion == fusion and r.case.size == size and r.case.batch == 1
                    ),
                    None,
                )
                lat.append("-" if r is None or r.stats is None else f"{r.stats.median_ms:.1f}")
            mem = (self.memory or {}).get(fusion, {}).get("network")
            flops = _flops_of(self.flops, fusion, "total")
            n = params.get(f"total_{fusion}")
            rows.append(
                [
                    fusion,
                    *lat,
                    "-" if mem is None else f"{mem:.0f}",
                    "-" if flops is None else f"{flops:.1f}",
                    "-" if n is None else f"{n / 1e6:.2f}M",
                ]
            )
        return Table(
            f"Integration Method Comparison ({size}x{size}, batch 1)",
            ["fusion", *(f"{v} ms" for v in variants), "peak memory MB", "GFLOPs", "parameters"],
            rows,
            "peak memory: " + (self.memory_note or "not measured"),
        )

    def memory_table(self) -> Table | None:
        if not self.memory:
            return None
        fusions = list(self.memory)
        parts = list(dict.fromkeys(p for m in self.memory.values() for p in m))
        rows = [[_part_label(p), *(cell(self.memory[f].get(p), ".0f") for f in fusions)] for p in parts]
        return Table(
            f"Memory Usage ({self.table_size}x{self.table_size}, batch 1)",
            ["part", *fusions],
            rows,
            "peak memory MB added by running the part: " + self.memory_note,
        )

    def params_table(self) -> Table | None:
        if not self.params:
            return None
        rows = [[p["component"], f"{p['params']:,}", p.get("guide") or ""] for p in self.params]
        return Table("Parameter Count", ["component", "parameters", "guide claims"], rows)

    def complexity_table(self) -> Table | None:
        if not self.flops:
            return None
        fusions = list(self.flops)
        keys = list(dict.fromkeys(row["key"] for rows in self.flops.values() for row in rows))
        labels = {row["key"]: (row["part"], row["input"]) for rows in self.flops.values() for row in rows}
        rows = [
            [labels[k][0], labels[k][1], *(cell(_flops_of(self.flops, f, k), ".2f") for f in fusions)] for k in keys
        ]
        return Table(
            f"Computational Complexity ({self.table_size}x{self.table_size}, batch 1)",
            ["part", "input", *(f"GFLOPs {f}" for f in fusions)],
            rows,
            "torch FlopCounterMode: convolutions, matrix products, attention; 1 multiply-add = 2 FLOPs",
        )

    def rate_table(self) -> Table | None:
        """Achieved GFLOP/s per measured case against the matmul rate of the device and precision it
        ran at (INT8 against FP32: no INT8 ceiling is measured, so such a share can pass 100%)."""
        if not self.flops:
            return None
        rows = []
        for r in self.results:
            flops = _flops_of(self.flops, r.case.fusion, "total")
            if r.stats is None or flops is None or r.case.size != self.table_size:
                continue
            rate = flops * r.case.batch / (r.stats.median_ms / 1e3)
            ceiling = f"{r.case.device} {r.case.matmul_precision}"
            peak = self.matmul_rates.get(ceiling)
            rows.append(
                [
                    r.case.variant,
                    r.case.fusion,
                    str(r.case.batch),
                    f"{rate:.1f}",
                    ceiling,
                    "not measured" if peak is None else f"{peak:.1f}",
                    "-" if peak is None else f"{rate / peak:.0%}",
                ]
            )
        if not rows:
            return None
        return Table(
            f"Achieved compute rate ({self.table_size}x{self.table_size})",
            ["backend", "fusion", "batch", "GFLOP/s", "against", "matmul GFLOP/s", "share"],
            rows,
            "the model's GFLOPs over its median latency, against the matrix-product rate of the same device "
            "and precision measured in this run (INT8 rows against FP32, so they can pass 100%): "
            + (self.matmul_note or "not measured"),
        )

    def skipped_table(self) -> Table | None:
        seen = dict.fromkeys((r.case.variant, r.skipped) for r in self.results if r.stats is None)
        rows = [[variant, why] for variant, why in seen] + [[name, why] for name, why in self.unavailable.items()]
        return Table("Not run here", ["what", "why"], rows) if rows else None

    def tables(self) -> list[Table]:
        optional = (self.memory_table(), self.params_table(), self.complexity_table(), self.rate_table())
        optional += (self.skipped_table(),)
        return [*self.inference_time_tables(), self.integration_table(), *filter(None, optional), self.detail_table()]

    # ---- files --------------------------------------------------------------------------
    def markdown(self) -> str:
        s = self.settings
        how = (
            f"Timing: {s['warmup']} warm-up rounds, then at least {s['iterations']} rounds"
            + (f" and {s['min_time']} s per model" if s.get("min_time") else "")
            + f"; all models of one input shape interleaved round by round; {s['threads'] or 'default'} threads."
        )
        parts = [f"# Benchmark: {self.backbone}", "", self.stamp, "", how, ""]
        for table in self.tables():
            parts += [table.markdown(), ""]
        return "\n".join(parts)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        stat_cols = [f"{k}_ms" for k in _STATS]
        # every row carries its provenance, so CSVs from several machines can be concatenated
        made = [self.provenance.get(k, "") for k in _PROVENANCE]
        writer.writerow(
            [*_CASE, "iterations", *stat_cols, "images_per_s", "speedup_vs_eager", "timing", "skipped", *_PROVENANCE]
        )
        for r in self.results:
            c, st = r.case, r.stats
            stats = [st.iterations, *(round(getattr(st, f"{k}_ms"), 3) for k in _STATS)] if st else [""] * 8
            tp = "" if r.throughput is None else round(r.throughput, 3)
            sp = "" if r.speedup is None else round(r.speedup, 3)
            writer.writerow(
                [c.backend, c.precision, c.fusion, c.size, c.batch, *stats, tp, sp, r.timing, r.skipped, *made]
            )
        return buf.getvalue()

    def as_dict(self) -> dict:
        return {**asdict(self), "results": [r.as_dict() for r in self.results]}

    def write(self, folder: str | Path, force: bool = False) -> dict[str, Path | str]:
        """bench-BACKBONE.md, .csv, .json and .png in `folder` (each written atomically; an existing
        report is kept unless `force`); the plot's entry is a reason instead of a path when
        matplotlib is missing."""
        paths = check_report_paths(folder, self.backbone, force)
        out: dict[str, Path | str] = {}
        for suffix, text in (("md", self.markdown()), ("csv", self.csv())):
            write_bytes_atomic(paths[suffix], text.encode())
            out[suffix] = paths[suffix]
        write_json_atomic(paths["json"], self.as_dict())
        out["json"] = paths["json"]
        out["png"] = self.plot(paths["png"])
        return out

    def plot(self, path: Path) -> Path | str:
        """Latency against input size, one line per backend, precision and fusion (batch 1)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return "no plot: matplotlib is not installed (pip install matplotlib)"
        fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
        lines = dict.fromkeys((r.case.variant, r.case.fusion) for r in self.results)
        for variant, fusion in lines:
            pts = sorted(
                (r.case.size, r.stats.median_ms)
                for r in self.results
                if r.stats and r.case.variant == variant and r.case.fusion == fusion and r.case.batch == 1
            )
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=f"{variant} {fusion}")
        ax.set_xlabel("input side (pixels, square input)")
        ax.set_ylabel("median latency (ms, batch 1)")
        ax.set_title(f"msdeploy bench, {self.backbone}: latency against input size", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        lines = _stamp_lines(self.provenance, width=170)
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=6, alpha=0.7, va="bottom")
        fig.tight_layout(rect=(0, 0.025 * (len(lines) + 1), 1, 1))
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        write_bytes_atomic(path, buf.getvalue())
        return path


def check_report_paths(folder: str | Path, backbone: str, force: bool) -> dict[str, Path]:
    """The report's files in `folder`, refused before any timing if one exists and not `force`."""
    return {
        suffix: check_output_path(Path(folder) / f"bench-{backbone}.{suffix}", force, what="report")
        for suffix in ("md", "csv", "json", "png")
    }


def _stamp_lines(made: dict[str, str], width: int) -> list[str]:
    """The stamp as short lines for the foot of a picture."""
    import textwrap

    text = [f"{k}: {v}" for k, v in made.items() if v]
    return [line for t in text for line in textwrap.wrap(t, width)]


def _flops_of(flops: dict[str, list[dict]] | None, fusion: str, key: str) -> float | None:
    for row in (flops or {}).get(fusion, []):
        if row["key"] == key:
            return row["gflops"]
    return None


def _part_label(key: str) -> str:
    if key.startswith("backbone@"):
        return f"Backbone at {key.split('@')[1]}x"
    return {"fusion": "Integration (fusion and refinement)", "network": "Whole network"}.get(key, key)


def measure_matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """float32 matrix-product rate of this machine (numpy's BLAS, all its threads), best of several
    products: the ceiling the achieved GFLOP/s of a model is compared with."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    # one warm-up product (thread pool start), then products until `seconds` have passed
    stats = time_interleaved({"matmul": lambda: a @ b}, warmup=1, iterations=1, min_time=seconds)["matmul"]
    return 2 * n**3 / (stats.min_ms / 1e3) / 1e9
