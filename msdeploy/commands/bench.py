"""`msdeploy bench`: the guide's latency, memory, parameter and complexity tables, measured here."""

from __future__ import annotations

from pathlib import Path

from bench.report import BenchReport, check_report_paths
from msdeploy.output import console, err_console, print_markdown_table, progress_bar


def run_bench_command(options, output: Path | None, show_detail: bool = False, force: bool = False) -> BenchReport:
    from bench.run import run_bench

    if output is not None and options.backbone:
        check_report_paths(output, options.backbone, force)  # before minutes of timing, not after
    with progress_bar("timing", total=1) as update:
        report = run_bench(options, say=err_console.log, progress=lambda done, n, label: update(done, label, total=n))
    show_report(report, show_detail)
    if output is not None:
        written = report.write(output, force)
        for kind, where in written.items():
            console.print(f"{kind}: {where}")
    return report


def show_report(report: BenchReport, show_detail: bool = False, latency_only: bool = False) -> None:
    tables = report.inference_time_tables() if latency_only else report.tables()
    if not show_detail:
        tables = [t for t in tables if t.title != "All measurements"]
    for table in tables:
        print_markdown_table(table)
