"""`msdeploy export engine`."""

from __future__ import annotations

from msdeploy.output import console, print_table, progress_status


def run_build_engine(options) -> None:
    from export.tensorrt_build import build_engine
    from runtime.tensorrt_common import format_shape

    with progress_status("building a TensorRT engine") as progress:
        result = build_engine(options, progress=progress)
    side = result.sidecar
    reused = result.calibration_cache_reused
    calibration = (
        [] if reused is None else [("INT8 calibration", "cache reused (no calibration run)" if reused else "ran")]
    )
    profile = side["profile"]
    print_table(
        f"TensorRT engine {result.path}",
        ["field", "value"],
        [
            ("TensorRT", side["tensorrt"]),
            ("GPU", f"{side['gpu']['name']} (compute capability {side['gpu']['compute_capability']})"),
            ("precision", f"{side['precision']} ({side['typing']}ly typed)"),
            ("builder flags", ", ".join(side["builder_flags"]) or "-"),
            ("profile", " / ".join(format_shape(profile[k]) for k in ("min", "opt", "max"))),
            ("ONNX", f"{side['onnx']['file']} (sha256 {side['onnx']['sha256'][:12]})"),
            ("build time", f"{result.seconds:.1f} s"),
            ("timing cache", str(result.timing_cache)),
            *calibration,
        ],
    )
    console.print(f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB) and {result.path.name}.json")
