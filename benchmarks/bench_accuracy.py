"""Accuracy of FP16 and INT8 against FP32 on the demo checkpoints' held-out synthetic set.

For each fusion mode: export the demo checkpoint (pvt_v2_b0) to ONNX, convert to FP16, quantize to
INT8 with every calibration method (TensorRT layout) and with percentile (the default) for the CPU layout, then run
`evaluate_models` on the held-out images at 352x352 and judge the precision bounds (every variant: mask
IoU against FP32 >= 0.98 and S-measure drop <= 0.01; FP16 also logit cosine >= 0.9999). Writes
docs/results/accuracy-demo-*.md/json.

    python benchmarks/bench_accuracy.py [--fusions hierarchical,absi] [--work DIR]
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from bench.scripts import script_command, script_parser, write_result
from calibration.accuracy import evaluate_models, quantization_sensitivity
from calibration.data import load_calibration_set
from calibration.int8 import METHODS
from calibration.quantize import CALIBRATION_IMAGES, Int8Options, quantize_int8
from calibration.synthetic import SYNTHETIC_CALIBRATION_SEED, synthetic_calibration_images, write_dataset
from export.variants import export_fp32, make_variant
from models.demo_weights import DEMO_BACKBONE, HELD_OUT_SEED, HELD_OUT_SIZE, demo_checkpoint
from runtime.errors import VerificationError
from runtime.files import display_path
from runtime.metadata import read_model_metadata
from runtime.tables import Table

# FP16 is also held to near-identical logits. Cosine, not an absolute error: a trained model's logits
# reach the head's clamp (15), where FP16's own rounding step is already 0.008.
BOUNDS = {"mask_iou": 0.98, "s_drop": 0.01, "fp16_cosine": 0.9999}


def build_variants(fusion: str, work: Path, calib: Path, count: int) -> tuple[list[Path], list[str], list[dict]]:
    weights = demo_checkpoint(fusion)
    fp32 = export_fp32(work / f"demo_{fusion}.onnx", DEMO_BACKBONE, fusion, weights, say=print)
    fp16 = make_variant(fp32, "fp16", weights=weights, say=print).path
    paths, names, refused = [fp32, fp16], ["fp32", "fp16"], []
    variants = [(method, "tensorrt", f"int8-{method}") for method in METHODS] + [("percentile", "cpu", "int8-cpu")]
    for method, target, suffix in variants:
        name = f"int8 ({method}, {target})"
        try:
            r = quantize_int8(
                Int8Options(
                    model=fp32,
                    calib_data=calib,
                    calib_count=count,
                    method=method,
                    target=target,
                    size=HELD_OUT_SIZE,
                    force=True,
                    recalibrate=True,  # the work folder's cache may be for an earlier checkpoint's export
                    output=work / f"demo_{fusion}.{suffix}.onnx",
                )
            )
        except VerificationError as exc:  # the write gate refused it: a result to report, not a crash
            failing = [line for line in str(exc).splitlines() if line.endswith("FAIL")]
            refused.append({"model": name, "reason": "; ".join(failing) or str(exc)[:300]})
            continue
        paths.append(r.path)
        names.append(name)
    return paths, names, refused


def judge(report) -> list[dict]:
    """Every variant: mask IoU against the FP32 masks and the S-measure drop against the true masks;
    FP16 also the logits' cosine similarity."""
    base = report.variants[0].ground_truth["s_measure"]
    rows = []
    for v in report.variants[1:]:
        drop = base - v.ground_truth["s_measure"]
        checks = [
            (f"mask IoU vs FP32 >= {BOUNDS['mask_iou']}", v.mask_iou_mean, v.mask_iou_mean >= BOUNDS["mask_iou"]),
            (f"S-measure drop <= {BOUNDS['s_drop']}", drop, drop <= BOUNDS["s_drop"]),
        ]
        if v.precision == "fp16":
            bound = BOUNDS["fp16_cosine"]
            checks.append((f"min logit cosine vs FP32 >= {bound}", v.cosine_min, v.cosine_min >= bound))
        rows += [{"model": v.name, "criterion": c, "measured": m, "passed": bool(p)} for c, m, p in checks]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, work=".bench-accuracy")
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--calib-count", type=int, default=CALIBRATION_IMAGES)
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)
    args.work.mkdir(parents=True, exist_ok=True)
    # named by size, so a folder written at another size is never reused (delete --work after changing the data)
    held_out, calib = args.work / f"held-out-{HELD_OUT_SIZE[0]}", args.work / "calib"
    if not held_out.exists():
        write_dataset(held_out, args.held_out, size=HELD_OUT_SIZE, seed=HELD_OUT_SEED)
    calib_images = synthetic_calibration_images(calib, args.calib_count)

    for fusion in args.fusions:
        print(f"== {fusion}", flush=True)
        paths, names, refused = build_variants(fusion, args.work, calib_images, args.calib_count)
        report = evaluate_models(paths, held_out, size=HELD_OUT_SIZE, names=names)
        report.data = display_path(report.data)
        meta, _ = read_model_metadata(paths[0])
        meta_feeds = load_calibration_set(held_out / "images", meta, count=4, size=HELD_OUT_SIZE).feeds
        report.sensitivity = quantization_sensitivity(paths[0], paths[2], meta_feeds, 10)
        report.sensitivity_model = names[2]
        verdicts = judge(report) + [
            {"model": r["model"], "criterion": "written (INT8 write gate)", "measured": float("nan"), "passed": False}
            for r in refused
        ]
        bounds = Table(
            "Bounds",
            ["model", "criterion", "measured", "result"],
            [[r["model"], r["criterion"], f"{r['measured']:.4g}", "PASS" if r["passed"] else "FAIL"] for r in verdicts],
        )
        md = report.markdown(command) + "\n" + bounds.markdown() + "\n"
        md += "".join(f"\n{r['model']} was refused by the write gate: {r['reason']}\n" for r in refused)
        md += (
            f"\nDemo checkpoint `{demo_checkpoint(fusion).name}`; held-out images: seed {HELD_OUT_SEED}, "
            f"calibration images: seed {SYNTHETIC_CALIBRATION_SEED}, {args.calib_count} images.\n"
        )
        stem = args.output / f"accuracy-demo-pvt_v2_b0-{fusion}"
        write_result(stem, md, {**asdict(report), "bounds": verdicts, "command": command})
        print(md, flush=True)


if __name__ == "__main__":
    main()
