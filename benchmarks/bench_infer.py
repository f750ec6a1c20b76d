"""Image-to-mask inference with the runtime against PyTorch, on the demo checkpoints.

For each fusion mode and each exported variant (FP32, FP16, INT8 for TensorRT, INT8 for the CPU):
`runtime.Predictor` (ONNX Runtime CPU) turns held-out synthetic images of several sizes into masks
at each image's own size; PyTorch runs the demo checkpoint on the same preprocessed input and
resizes its logits with torch (antialiased bilinear) before the sigmoid. Reports mask IoU and
probability MAE against PyTorch, IoU against the true masks (how good the small demo network is),
and the time per image. Judges issue 7's bound: FP32 masks IoU >= 0.99 against PyTorch's.
Writes docs/results/infer-demo-pvt_v2_b0.md/json and a preview PNG.

    python benchmarks/bench_infer.py [--work .bench-infer] [--images 24]

INT8 variants are calibrated at the network size used here (352x352, the model's default) on 64
synthetic images of a seed used neither for training nor for these held-out images. FP32 and FP16
variants are made in --work, or copied from `benchmarks/bench_accuracy.py`'s folder when they match.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from calibration.metrics import mask_iou  # noqa: E402
from calibration.quantize import Int8Options, quantize_int8  # noqa: E402
from calibration.synthetic import make_sample, write_dataset  # noqa: E402
from export.onnx_export import ExportOptions, export_onnx  # noqa: E402
from export.parity import reference_probability  # noqa: E402
from export.precision import convert_fp16  # noqa: E402
from models import build_model  # noqa: E402
from models.demo_training import HELD_OUT_SEED, demo_checkpoint  # noqa: E402
from runtime import Predictor  # noqa: E402
from runtime.environment import collect_environment, stamp  # noqa: E402
from runtime.files import sha256_file, write_bytes_atomic, write_json_atomic  # noqa: E402
from runtime.metadata import read_sidecar  # noqa: E402

SIZES = ((352, 352), (300, 400), (480, 360), (240, 320))  # square and not, above and below the network size
CALIB_SEED = 7
CALIB_SIZE = (352, 352)  # the network size inference runs at: calibrate where you deploy
FP32_IOU_BOUND = 0.99


def _matches(path: Path, weights: Path) -> bool:
    side = read_sidecar(path) if path.exists() else None
    return bool(side) and side.get("weights", {}).get("file_sha256") == sha256_file(weights)


def variants(fusion: str, work: Path, accuracy_work: Path) -> dict[str, Path]:
    """FP32, FP16 and both INT8 layouts of the demo checkpoint; INT8 calibrated at CALIB_SIZE."""
    weights = demo_checkpoint(fusion)
    fp32 = work / f"demo_{fusion}.onnx"
    fp16 = work / f"demo_{fusion}.fp16.onnx"
    for path in (fp32, fp16):  # the accuracy benchmark's copies, when they come from this checkpoint
        source = accuracy_work / path.name
        if not path.exists() and _matches(accuracy_work / fp32.name, weights) and source.exists():
            for suffix in ("", ".json"):
                shutil.copy2(f"{source}{suffix}", f"{path}{suffix}")
    if not _matches(fp32, weights):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", fusion=fusion, weights=str(weights), output=fp32, force=True))
    out = {"fp32": fp32}
    if not fp16.exists():
        convert_fp16(fp32, fp16, weights=str(weights), force=True)
    out["fp16"] = fp16
    calib = work / "calib"
    if not calib.exists():
        write_dataset(calib, 64, size=CALIB_SIZE, seed=CALIB_SEED)
    int8 = (("int8 (tensorrt)", "tensorrt", "int8-percentile"), ("int8 (cpu)", "cpu", "int8-cpu"))
    for label, target, suffix in int8:
        path = work / f"demo_{fusion}.{suffix}.onnx"
        if not path.exists():
            quantize_int8(
                Int8Options(
                    model=fp32,
                    calib_data=calib / "images",
                    target=target,
                    size=CALIB_SIZE,
                    output=path,
                    force=True,
                )
            )
        out[label] = path
    return out


def evaluate(fusion: str, models: dict[str, Path], count: int) -> list[dict]:
    net = build_model("pvt_v2_b0", fusion, weights=str(demo_checkpoint(fusion)))
    predictors = {name: Predictor(path, threads=2) for name, path in models.items()}
    meta = next(iter(predictors.values())).metadata
    rng = np.random.default_rng(HELD_OUT_SEED)
    scores: dict[str, dict[str, list[float]]] = {
        name: {"iou": [], "mae": [], "truth": [], "net": [], "all": []} for name in models
    }
    truth_torch = []
    for i in range(count):
        size = SIZES[i % len(SIZES)]
        sample = make_sample(rng, size)
        torch_prob = reference_probability(net, sample.image, meta)
        truth = sample.mask > 127
        truth_torch.append(mask_iou(torch_prob >= 0.5, truth))
        for name, predictor in predictors.items():
            result = predictor.predict(sample.image)
            s = scores[name]
            s["iou"].append(mask_iou(result.mask, torch_prob >= 0.5))
            s["mae"].append(float(np.abs(result.probability - torch_prob).mean()))
            s["truth"].append(mask_iou(result.mask, truth))
            s["net"].append(result.network_ms)
            s["all"].append(result.total_ms)
    rows = [
        {
            "fusion": fusion,
            "model": "PyTorch eager (reference)",
            "file": "",
            "images": count,
            "iou_vs_torch_mean": 1.0,
            "iou_vs_torch_min": 1.0,
            "prob_mae": 0.0,
            "iou_vs_truth": statistics.fmean(truth_torch),
            "network_ms": None,
            "per_image_ms": None,
        }
    ]
    for name, s in scores.items():
        rows.append(
            {
                "fusion": fusion,
                "model": name,
                "file": models[name].name,
                "images": count,
                "iou_vs_torch_mean": statistics.fmean(s["iou"]),
                "iou_vs_torch_min": min(s["iou"]),
                "prob_mae": statistics.fmean(s["mae"]),
                "iou_vs_truth": statistics.fmean(s["truth"]),
                "network_ms": statistics.median(s["net"]),
                "per_image_ms": statistics.median(s["all"]),
            }
        )
    return rows


def markdown(rows: list[dict], command: str, count: int) -> str:
    sizes = ", ".join(f"{w}x{h}" for h, w in SIZES)
    lines = [
        "# Image-to-mask inference: runtime against PyTorch (demo checkpoints, pvt_v2_b0)",
        "",
        stamp(command, collect_environment()),
        "",
        f"{count} held-out synthetic images (seed {HELD_OUT_SEED}), sizes cycling through {sizes} (width x height);",
        "the network sees 352x352 and masks are resized back to each image. Runtime: `runtime.Predictor`,",
        "ONNX Runtime CPU, 2 threads. PyTorch: the same preprocessed input, logits resized with torch",
        "(bilinear, antialiased) before the sigmoid. Masks at threshold 0.5. INT8: percentile calibration",
        f"at {CALIB_SIZE[0]}x{CALIB_SIZE[1]}, 64 synthetic images (seed {CALIB_SEED}).",
        "",
        "| fusion | model | IoU vs PyTorch mean | IoU vs PyTorch min | prob MAE | IoU vs true mask "
        "| network ms | per image ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = "-" if r["network_ms"] is None else f"{r['network_ms']:.0f}"
        per = "-" if r["per_image_ms"] is None else f"{r['per_image_ms']:.0f}"
        lines.append(
            f"| {r['fusion']} | {r['model']} | {r['iou_vs_torch_mean']:.4f} | {r['iou_vs_torch_min']:.4f} | "
            f"{r['prob_mae']:.2e} | {r['iou_vs_truth']:.3f} | {ms} | {per} |"
        )
    lines += ["", "## Issue 7 bound", "", "| fusion | criterion | measured | result |", "|---|---|---:|---|"]
    for r in rows:
        if r["model"] == "fp32":
            ok = r["iou_vs_torch_min"] >= FP32_IOU_BOUND
            lines.append(
                f"| {r['fusion']} | FP32 mask IoU vs PyTorch >= {FP32_IOU_BOUND} (every image) | "
                f"{r['iou_vs_torch_min']:.4f} | {'PASS' if ok else 'FAIL'} |"
            )
    lines += [
        "",
        "IoU vs true mask is the small demo network's own quality (a short CPU training from scratch),",
        "not a property of the runtime. Times are medians per image (network alone, and read + preprocess +",
        "network + resize back).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fusions", default="hierarchical,absi")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench-infer")
    parser.add_argument("--accuracy-work", type=Path, default=ROOT / ".bench-accuracy", help="FP32/FP16 to reuse")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    command = " ".join(["python", "benchmarks/bench_infer.py", *sys.argv[1:]])
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    rows = []
    for fusion in (f.strip() for f in args.fusions.split(",") if f.strip()):
        print(f"== {fusion}", flush=True)
        rows += evaluate(fusion, variants(fusion, args.work, args.accuracy_work), args.images)
    md = markdown(rows, command, args.images)
    stem = args.output / "infer-demo-pvt_v2_b0"
    write_bytes_atomic(stem.with_suffix(".md"), md.encode())
    write_json_atomic(stem.with_suffix(".json"), {"command": command, "bound": FP32_IOU_BOUND, "rows": rows})
    print(md, flush=True)


if __name__ == "__main__":
    main()
