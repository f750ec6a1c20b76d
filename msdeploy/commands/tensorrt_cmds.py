"""`msdeploy export engine`."""

from __future__ import annotations

from msdeploy.output import console, print_markdown_table, print_table, progress_status


def run_build_engine(options) -> None:
    from export.boards import format_bytes
    from export.tensorrt_build import build_engine
    from runtime.tensorrt_common import format_shape

    with progress_status("building a TensorRT engine") as progress:
        result = build_engine(options, progress=progress)
    side = result.sidecar
    reused = result.calibration_cache_reused
    gpu = side["gpu"]
    memory = side["memory"]
    budget = side["settings"]["memory_budget"]
    targets = side["compute_capabilities"]
    rows = [
        ("builder", f"{side['target']} {side['tensorrt']}"),
        ("built on", f"{gpu['name']} (compute capability {gpu['compute_capability']})" if gpu else "no GPU (AOT)"),
        *([("runs on compute capabilities", ", ".join(targets))] if targets else []),
        ("precision", f"{side['precision']} ({side['typing']}ly typed)"),
        ("builder flags", ", ".join(side["builder_flags"]) or "-"),
        ("profile", " / ".join(format_shape(side["profile"][k]) for k in ("min", "opt", "max"))),
        ("activation memory", format_bytes(memory.get("activation_bytes"))),
        ("weights memory", format_bytes(memory.get("weights_bytes"))),
        ("memory budget", f"{format_bytes(budget['bytes'])} ({budget['source']})" if budget else "-"),
        ("ONNX", f"{side['onnx']['file']} (sha256 {side['onnx']['sha256'][:12]})"),
        ("build time", f"{result.seconds:.1f} s"),
        *([("timing cache", str(result.timing_cache))] if result.timing_cache else []),
        *([] if reused is None else [("INT8 calibration", "cache reused (no calibration run)" if reused else "ran")]),
    ]
    print_table(f"Engine {result.path}", ["field", "value"], rows)
    if result.report is not None:
        report = result.report
        if report.layers:
            print_markdown_table(report.precision_table())
        console.print(
            f"build report: {', '.join(str(p) for p in result.report_files)} "
            f"({sum(n for _, n in report.warnings)} builder warnings)"
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB) and {result.path.name}.json")
