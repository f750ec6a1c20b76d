"""`msdeploy quantize` (FP16, INT8) and `msdeploy accuracy`."""

from __future__ import annotations

from pathlib import Path

from msdeploy.commands.export_cmds import show_parity
from msdeploy.output import console, print_markdown_table, progress_status


def run_quantize_fp16(model: str, output, weights, force: bool) -> None:
    from export.precision import convert_fp16

    with progress_status("converting") as progress:
        result = convert_fp16(model, output, weights=weights, force=force, progress=progress)
    show_parity(result.parity)
    console.print(
        f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB, fp16); metadata in {result.sidecar}"
    )


def run_quantize_int8(options) -> None:
    from calibration.quantize import quantize_int8

    with progress_status("quantizing") as say:
        result = quantize_int8(options, progress=say, calib_progress=lambda i, n: say(f"calibrating: image {i}/{n}"))
    for path, reason in result.skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    show_parity(result.parity)
    counts = result.quantized_nodes
    cache_note = "reused (no calibration run)" if result.cache_reused else "written"
    console.print(
        f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB, int8, target {options.target}, "
        f"method {options.method}); quantized nodes: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}; "
        f"calibration cache {result.cache} {cache_note}"
    )


def run_accuracy(report_path, force: bool, command: str, **options) -> None:
    """`accuracy_report` with one live display for quantizing and evaluating; the report written
    beside when asked (its path checked before minutes of work, not after)."""
    from dataclasses import asdict

    from calibration.accuracy import accuracy_report
    from calibration.quantize import quantize_int8
    from runtime.files import check_output_path, write_bytes_atomic, write_json_atomic

    if report_path:
        check_output_path(report_path, force)
    with progress_status("accuracy") as say:
        report = accuracy_report(
            quantize=lambda int8_options: quantize_int8(int8_options, progress=say),
            progress=lambda i, n: say(f"evaluating: image {i}/{n}"),
            **options,
        )
    for table in report.tables():
        print_markdown_table(table)
    for path, reason in report.skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    if report_path:
        write_bytes_atomic(report_path, report.markdown(command).encode())
        write_json_atomic(Path(report_path).with_suffix(".json"), {**asdict(report), "command": command})
        console.print(f"wrote {report_path}")
