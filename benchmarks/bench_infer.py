"""Image-to-mask inference with the runtime against PyTorch, on the demo checkpoints.

For each fusion mode and each exported variant (FP32, FP16, INT8 for TensorRT, INT8 for the CPU):
`runtime.Predictor` (ONNX Runtime CPU) turns held-out synthetic images of several sizes into masks
at each image's own size; PyTorch runs the demo checkpoint on the same preprocessed input and
resizes its logits with torch (antialiased bilinear) before the sigmoid. Reports mask IoU and
probability MAE against PyTorch, IoU against the true masks (how good the small demo network is),
and the time per image, and checks the bound: FP32 masks IoU >= 0.99 against PyTorch's.
Writes docs/results/infer-demo-pvt_v2_b0.md/json (`msdeploy demo` draws the preview sheet of masks).

    python benchmarks/bench_infer.py [--work .bench-infer] [--images 24]

Every variant comes from the variants pipeline in --work (made once, reused while it matches): INT8 is
calibrated at the model's size with the project's defaults, on synthetic images of a seed used
neither for training nor for these held-out images.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from bench.scripts import script_command, script_parser, write_result
from calibration.metrics import mask_iou
from calibration.quantize import CALIBRATION_IMAGES
from calibration.synthetic import SYNTHETIC_CALIBRATION_SEED, make_sample
from export.parity import reference_probability
from export.variants import Int8Settings, export_fp32, make_variant
from models import build_model
from models.demo_weights import DEMO_BACKBONE, HELD_OUT_SEED, demo_checkpoint
from runtime import Predictor
from runtime.environment import collect_environment, stamp
from runtime.tables import Table

SIZES = ((352, 352), (300, 400), (480, 360), (240, 320))  # square and not, above and below the network size
FP32_IOU_BOUND = 0.99


def variants(fusion: str, work: Path) -> dict[str, Path]:
    """FP32, FP16 and both INT8 layouts of the demo checkpoint, through the variants pipeline (made
    once, reused after)."""
    weights = demo_checkpoint(fusion)
    fp32 = export_fp32(work / f"demo_{fusion}.onnx", DEMO_BACKBONE, fusion, weights, say=print)
    out = {"fp32": fp32, "fp16": make_variant(fp32, "fp16", weights=weights, say=print).path}
    for target in ("tensorrt", "cpu"):
        out[f"int8 ({target})"] = make_variant(
            fp32, "int8", int8=Int8Settings(target=target), work=work, say=print
        ).path
    return out


def evaluate(fusion: str, models: dict[str, Path], count: int) -> list[dict]:
    net = build_model(DEMO_BACKBONE, fusion, weights=str(demo_checkpoint(fusion)))
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
        f"at the model's size, {CALIBRATION_IMAGES} synthetic images (seed {SYNTHETIC_CALIBRATION_SEED}).",
        "",
    ]
    masks = Table(
        "Masks against PyTorch's",
        ["fusion", "model", "IoU vs PyTorch mean", "IoU vs PyTorch min", "prob MAE", "IoU vs true mask"]
        + ["network ms", "per image ms"],
        [
            [r["fusion"], r["model"], f"{r['iou_vs_torch_mean']:.4f}", f"{r['iou_vs_torch_min']:.4f}"]
            + [f"{r['prob_mae']:.2e}", f"{r['iou_vs_truth']:.3f}"]
            + ["-" if r[k] is None else f"{r[k]:.0f}" for k in ("network_ms", "per_image_ms")]
            for r in rows
        ],
    )
    bound = Table(
        "Bound: FP32 masks against PyTorch's",
        ["fusion", "criterion", "measured", "result"],
        [
            [r["fusion"], f"FP32 mask IoU vs PyTorch >= {FP32_IOU_BOUND} (every image)", f"{r['iou_vs_torch_min']:.4f}"]
            + ["PASS" if r["iou_vs_torch_min"] >= FP32_IOU_BOUND else "FAIL"]
            for r in rows
            if r["model"] == "fp32"
        ],
    )
    lines += [masks.markdown(), "", bound.markdown()]
    lines += [
        "",
        "IoU vs true mask is the small demo network's own quality (a short CPU training from scratch),",
        "not a property of the runtime. Times are medians per image (network alone, and read + preprocess +",
        "network + resize back).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, work=".bench-infer")
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    rows = []
    for fusion in args.fusions:
        print(f"== {fusion}", flush=True)
        rows += evaluate(fusion, variants(fusion, args.work), args.images)
    md = markdown(rows, command, args.images)
    stem = args.output / "infer-demo-pvt_v2_b0"
    write_result(stem, md, {"command": command, "bound": FP32_IOU_BOUND, "rows": rows})
    print(md, flush=True)


if __name__ == "__main__":
    main()
