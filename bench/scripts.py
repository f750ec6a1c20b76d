"""What the scripts in benchmarks/ share: their common arguments, and the command line their results
record (relative to the repository, never the machine's own paths)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the source checkout the scripts run from


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def script_parser(
    doc: str | None, *, work: str | None = None, fusions: bool = True, timing: bool = False
) -> argparse.ArgumentParser:
    """--output (docs/results), and where asked --work (made models and data, reused), --fusions, and
    the latency settings (--backbone, --size, --threads, --warmup, --iters)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results", help="where results are written")
    if work:
        parser.add_argument("--work", type=Path, default=ROOT / work, help="models and data made on the way")
    if fusions:
        parser.add_argument("--fusions", type=_names, default=["hierarchical", "absi"], help="comma-separated")
    if timing:
        parser.add_argument("--backbone", default="pvt_v2_b2")
        parser.add_argument("--size", type=int, default=352, help="square input side")
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--warmup", type=int, default=3)
        parser.add_argument("--iters", type=int, default=15)
    return parser


def script_command(script: str, argv: list[str] | None = None) -> str:
    """How a script in benchmarks/ was run, as its results record it."""
    return " ".join(["python", f"benchmarks/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


def write_result(stem: Path, markdown: str, data: dict) -> None:
    """A script's result: `stem.md` for people and `stem.json` for programs, each written atomically."""
    from runtime.files import write_bytes_atomic, write_json_atomic

    stem.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(stem.with_suffix(".md"), markdown.encode())
    write_json_atomic(stem.with_suffix(".json"), data)
