"""`msdeploy export onnx`, `export bundle`, `export triton` and `msdeploy parity`."""

from __future__ import annotations

import json
from collections.abc import Sequence

from msdeploy.output import console, print_table, progress_status


def run_export_onnx(options) -> None:
    from export.onnx_export import export_onnx

    with progress_status("exporting") as progress:
        result = export_onnx(options, progress=progress)
    show_parity(result.parity)
    took = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(
        f"[green]exported[/] {result.path} ({result.size_bytes / 1e6:.1f} MB; {took}); metadata in {result.sidecar}"
    )


def show_parity(report, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    tol = report.tolerance
    has_exact = any(r.agreement.reference_error is not None for r in report.rows)
    print_table(
        f"Parity: {report.model} ({report.backend}, {report.precision}) against {report.reference}",
        ["output", "input", "max abs", "limit", "mean abs", "cosine", "reference vs f64", "model vs f64", "result"],
        (
            (
                r.output,
                "x".join(map(str, r.shape)),
                f"{r.agreement.max_abs:.2e}",
                f"{r.agreement.limit:.2e}",
                f"{r.agreement.mean_abs:.2e}",
                f"{r.agreement.cosine:.7f}",
                "-" if r.agreement.reference_error is None else f"{r.agreement.reference_error:.2e}",
                "-" if r.agreement.exact_error is None else f"{r.agreement.exact_error:.2e}",
                "PASS" if r.agreement.passed else "FAIL",
            )
            for r in report.rows
        ),
        right=(2, 3, 4, 5, 6, 7),
        caption=f"PASS: {tol.describe(reference_error=has_exact)} ({report.precision} tolerance); "
        "max abs is the distance to the reference, 'model vs f64' what is judged when a float64 run exists",
    )


def run_parity(
    model: str,
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    weights,
    as_json: bool,
    backend: str = "auto",
    inference_precision: str | None = None,
) -> bool:
    from export.parity import check_model_parity

    report = check_model_parity(model, sizes, batches, weights, backend, inference_precision)
    show_parity(report, as_json)
    return report.passed


def run_bundle(options) -> None:
    from export.bundle import create_bundle

    with progress_status("assembling the bundle") as progress:
        result = create_bundle(options, progress=progress)
    for note in result.notes:
        console.print(note)
    print_table(
        f"Deploy bundle {result.path} ({result.seconds:.0f} s)",
        ["file", "size"],
        ((f["file"], f"{f['bytes'] / 1e6:.2f} MB") for f in result.files),
        right=(1,),
    )
    console.print(f"on the board: [bold]sh {result.path.name}/build_engine.sh[/], which runs\n  {result.build_command}")


def run_export_triton(options) -> None:
    from serving.model_repository import write_triton_model

    result = write_triton_model(options)
    console.print(result.config.read_text(), markup=False, highlight=False)
    for note in result.notes:
        console.print(f"[yellow]{note}[/]")
    checked = "checked against Triton's model-config schema" if result.validated else "not schema-checked"
    console.print(f"[green]wrote[/] {result.folder} ({result.model_file.name}; config {checked})")
