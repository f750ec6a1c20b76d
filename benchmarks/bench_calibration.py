"""INT8 calibration cost: time and peak memory of `msdeploy quantize --precision int8` per method and
image count, against the time ONNX Runtime takes to run the FP32 model on the same images.

Each quantization runs as its own process, exactly as a user types it (calibrate from scratch, write
the Q/DQ model, verify it, write it), so its wall time and peak resident memory (the child's own
rusage, as `/usr/bin/time -v` reports it) are the whole command's. The FP32 reference runs in a
process of its own on the first 64 chosen images: the same preprocessing, `session.run` timed alone.
Random-init weights: the cost does not depend on them. The timed process also reads its images (the
synthetic calibration set, 352x352 PNGs). Writes docs/results/calibration-<backbone>.md/json.

    python benchmarks/bench_calibration.py [--backbone pvt_v2_b2] [--methods max,percentile,entropy]
        [--counts 64,512] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.scripts import script_command, script_parser, write_result
from calibration.int8 import METHODS
from calibration.quantize import CALIBRATION_IMAGES, CALIBRATION_METHOD, CALIBRATION_SEED
from runtime.environment import stamp
from runtime.metadata import sidecar_path
from runtime.tables import Table

# The goals this benchmark checks (default method): the whole command within this multiple of the
# FP32 inference time on the same 64 images, and within this peak memory at every image count.
TIME_GOAL = 2.5
MEMORY_GOAL_GB = 4.0


# Runs the command from a fresh, small Python and reports its child's peak memory. Measured from this
# process instead, the peak would include this process's own memory (PyTorch, the exported model):
# Linux counts what a child shares with its parent at fork until the child execs.
_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident GB of the command's process (as `/usr/bin/time -v` reports it) and
    its output."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{output[-3000:]}")
    peak_kb = int(done.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return seconds, peak_kb / 2**20, done.stdout.rsplit("PEAK_KB", 1)[0]


def fp32_inference(model: Path, images: Path, count: int, size: int) -> dict:
    """In this process: ONNX Runtime's FP32 session over the first `count` chosen images, runs timed."""
    import onnxruntime as ort

    from calibration.data import load_calibration_set
    from runtime.metadata import read_model_metadata

    meta = read_model_metadata(model)[0]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    seconds, done = 0.0, 0
    for feed in load_calibration_set(images, meta, count=count, seed=CALIBRATION_SEED, size=(size, size)):
        start = time.perf_counter()
        session.run(None, feed)
        seconds += time.perf_counter() - start
        done += 1
    return {"images": done, "seconds": seconds}


def main() -> None:
    parser = script_parser(__doc__, work="calibration-bench-work", fusions=False)
    parser.add_argument("--backbone", default="pvt_v2_b2")
    parser.add_argument("--fusion", default="hierarchical")
    parser.add_argument("--size", type=int, default=352, help="square input side")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--counts", default=f"{CALIBRATION_IMAGES},512", help="calibration image counts")
    parser.add_argument("--fp32-child", nargs=3, metavar=("MODEL", "IMAGES", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fp32_child:
        model, images, count = args.fp32_child
        print(json.dumps(fp32_inference(Path(model), Path(images), int(count), args.size)))
        return

    from calibration.synthetic import synthetic_calibration_images
    from export.variants import export_fp32

    methods = [m for m in args.methods.split(",") if m]
    counts = [int(c) for c in args.counts.split(",") if c]
    command = script_command(__file__)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(work / f"{args.backbone}_{args.fusion}.onnx", args.backbone, args.fusion, say=print)
    images = synthetic_calibration_images(work / "calibration", max(counts))

    reference_count = min(counts)
    argv = [sys.executable, __file__, "--fp32-child", str(fp32), str(images), str(reference_count)]
    _, _, out = run_measured([*argv, "--size", str(args.size)])
    reference = json.loads(out.strip().splitlines()[-1])
    print(f"FP32 inference: {reference['seconds']:.1f} s for {reference['images']} images")

    runs = []
    for count in counts:
        for method in methods:
            output = work / f"int8-{method}-{count}.onnx"
            cli = [sys.executable, "-m", "msdeploy", "quantize", str(fp32), "--precision", "int8"]
            cli += ["--calib-data", str(images), "--method", method, "--calib-count", str(count)]
            cli += ["--size", f"{args.size}x{args.size}", "-o", str(output), "--calib-cache"]
            cli += [str(work / f"calib-{method}-{count}.json"), "--recalibrate", "--force"]
            seconds, peak_gb, _ = run_measured(cli)
            parity = json.loads(sidecar_path(output).read_text())["parity"]
            runs.append({"method": method, "images": count, "seconds": seconds, "peak_gb": peak_gb, "parity": parity})
            print(f"{method} x{count}: {seconds:.0f} s, {peak_gb:.2f} GB")

    per_image = reference["seconds"] / reference["images"]
    rows = []
    for r in runs:
        ratio = r["seconds"] / (per_image * r["images"])
        r["times_fp32_inference"] = ratio
        judged = r["method"] == CALIBRATION_METHOD
        fast_enough = r["images"] != reference_count or ratio <= TIME_GOAL
        verdict = "PASS" if r["peak_gb"] <= MEMORY_GOAL_GB and fast_enough else "FAIL"
        rows.append(
            [
                r["method"] + (" (default)" if judged else ""),
                str(r["images"]),
                f"{r['seconds']:.0f}",
                f"{r['seconds'] / r['images']:.2f}",
                f"{ratio:.2f}x",
                f"{r['peak_gb']:.2f}",
                f"{r['parity']['min_cosine']:.5f}",
                verdict if judged else "",
            ]
        )
    note = (
        f"FP32 reference: ONNX Runtime ran the FP32 model on the first {reference['images']} chosen images in "
        f"{reference['seconds']:.1f} s ({per_image * 1000:.0f} ms per image, runs alone). Goals for the default "
        f"method: the whole command within {TIME_GOAL}x that time at {reference_count} images, and at most "
        f"{MEMORY_GOAL_GB:.0f} GB peak resident memory at every count."
    )
    columns = ["method", "images", "whole command s", "s per image", "x FP32 inference", "peak memory GB"]
    columns += ["INT8 vs FP32 cosine", "goal"]
    lines = [
        f"# INT8 calibration cost ({args.backbone}, {args.fusion})",
        "",
        stamp(command),
        "",
        f"`msdeploy quantize --precision int8` from scratch (`--recalibrate`): calibrate at {args.size}x{args.size} "
        "on synthetic images, write the TensorRT-layout Q/DQ model, verify it against FP32, write it. One process "
        "per row; wall time and the process's peak resident memory.",
        "",
        Table("Time and memory per method and image count", columns, rows, note).markdown(),
    ]
    md = "\n".join(lines) + "\n"
    stem = args.output / f"calibration-{args.backbone}"
    write_result(stem, md, {"command": command, "fp32_inference": reference, "runs": runs})
    print(md)


if __name__ == "__main__":
    main()
