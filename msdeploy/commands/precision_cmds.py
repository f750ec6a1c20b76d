"""`msdeploy quantize` (FP16, INT8) and `msdeploy accuracy`."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from msdeploy.commands.export_cmds import show_parity
from msdeploy.output import console, print_markdown_table, progress_bar, progress_status


def run_quantize_fp16(model: str, output, weights, force: bool) -> None:
    from export.precision import convert_fp16

    with progress_status("converting") as progress:
        result = convert_fp16(model, output, weights=weights, force=force, progress=progress)
    show_parity(result.parity)
    console.print(
        f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB, fp16); metadata in {result.sidecar}"
    )


def quantize_with_progress(options):
    """quantize_int8 with a spinner for the steps and a bar for the calibration images."""
    from calibration.quantize import quantize_int8

    with progress_status("quantizing") as say:

        def calib_progress(done: int, total: int) -> None:
            say(f"calibrating: image {done}/{total}")

        return quantize_int8(options, progress=say, calib_progress=calib_progress)


def run_quantize_int8(options) -> None:
    result = quantize_with_progress(options)
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


def show_accuracy(report) -> None:
    for table in report.tables():
        print_markdown_table(table)
    for path, reason in report.skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}")


def run_accuracy(
    models: Sequence[str],
    data,
    size,
    count,
    methods: Sequence[str],
    calib_data,
    target: str,
    sensitivity: int,
    report_path,
    force: bool,
    command: str,
) -> None:
    from dataclasses import asdict

    from calibration.accuracy import evaluate_models, list_labelled, quantization_sensitivity
    from calibration.quantize import Int8Options
    from runtime.errors import UserError
    from runtime.files import check_output_path, write_bytes_atomic, write_json_atomic

    if methods and not calib_data:
        raise UserError("--methods needs --calib-data DIR (the images to calibrate on)")
    if report_path:
        check_output_path(report_path, force)
    with tempfile.TemporaryDirectory(prefix="msdeploy-accuracy-") as tmp:
        paths, names = [Path(m) for m in models], [None] * len(models)
        for method in methods:
            out = Path(tmp) / f"int8-{method}.onnx"
            result = quantize_with_progress(
                Int8Options(model=paths[0], calib_data=Path(calib_data), method=method, target=target, output=out)
            )
            paths.append(result.path)
            names.append(f"int8 ({method}, {target})" + (" [cache reused]" if result.cache_reused else ""))
        with progress_bar("evaluating", len(list_labelled(data, count))) as update:
            report = evaluate_models(paths, data, size=size, count=count, progress=lambda i, n: update(i))
        for v, name in zip(report.variants, names):
            if name:
                v.name = name
        int8 = [v for v in report.variants if v.precision == "int8"]
        if sensitivity and int8:
            import runtime
            from calibration.data import load_calibration_set

            meta = runtime.load(paths[0]).require_metadata()
            feeds = load_calibration_set(Path(data) / "images", meta, count=4, size=report.size).feeds
            report.sensitivity = quantization_sensitivity(paths[0], int8[0].path, feeds, sensitivity)
            report.sensitivity_model = int8[0].name
    show_accuracy(report)
    if report_path:
        write_bytes_atomic(report_path, report.markdown(command).encode())
        write_json_atomic(Path(report_path).with_suffix(".json"), {**asdict(report), "command": command})
        console.print(f"wrote {report_path}")
