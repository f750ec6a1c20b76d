"""Accuracy of FP16 and INT8 against FP32 on the demo checkpoints' held-out synthetic set.

For each fusion mode: export the demo checkpoint (pvt_v2_b0) to ONNX, convert to FP16, quantize to
INT8 with every calibration method (TensorRT layout) and with percentile (the default) for the CPU layout, then run
`evaluate_models` on the held-out images and judge the precision bounds (INT8: mask IoU >= 0.98 and
S-measure drop <= 0.01; FP16: max abs logit error <= 1e-2). Writes docs/results/accuracy-demo-*.md/json.

    python benchmarks/bench_accuracy.py [--fusions hierarchical,absi] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.accuracy import evaluate_models, quantization_sensitivity  # noqa: E402
from calibration.data import load_calibration_set  # noqa: E402
from calibration.quantize import Int8Options, quantize_int8  # noqa: E402
from calibration.synthetic import write_dataset  # noqa: E402
from export.onnx_export import ExportOptions, export_onnx  # noqa: E402
from export.precision import convert_fp16  # noqa: E402
from models.demo_training import HELD_OUT_SEED, HELD_OUT_SIZE, demo_checkpoint  # noqa: E402
from msdeploy.commands.precision_cmds import report_markdown  # noqa: E402
from runtime.errors import VerificationError  # noqa: E402
from runtime.files import write_bytes_atomic, write_json_atomic  # noqa: E402
from runtime.metadata import read_sidecar  # noqa: E402

CALIB_SEED = 7  # calibration images: neither training (seeds 0-2) nor held-out (HELD_OUT_SEED) images
METHODS = ("entropy", "max", "percentile")
BOUNDS = {"int8_mask_iou": 0.98, "int8_s_drop": 0.01, "fp16_max_abs": 1e-2}


def build_variants(fusion: str, work: Path, calib: Path) -> tuple[list[Path], list[str], list[dict]]:
    weights = demo_checkpoint(fusion)
    fp32 = work / f"demo_{fusion}.onnx"
    sidecar = read_sidecar(fp32) if fp32.exists() else None
    if not sidecar or sidecar.get("weights", {}).get("file_sha256") is None:
        export_onnx(ExportOptions(backbone="pvt_v2_b0", fusion=fusion, weights=weights, output=fp32, force=True))
    fp16 = convert_fp16(fp32, weights=weights, force=True).path
    paths, names, refused = [fp32, fp16], ["fp32", "fp16"], []
    variants = [(method, "tensorrt", f"int8-{method}") for method in METHODS] + [("percentile", "cpu", "int8-cpu")]
    for method, target, suffix in variants:
        name = f"int8 ({method}, {target})"
        try:
            r = quantize_int8(
                Int8Options(
                    model=fp32,
                    calib_data=calib,
                    method=method,
                    target=target,
                    size=HELD_OUT_SIZE,
                    force=True,
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
    base = report.variants[0].ground_truth["s_measure"]
    rows = []
    for v in report.variants[1:]:
        if v.precision == "fp16":
            rows.append(
                {
                    "model": v.name,
                    "criterion": f"max abs logit error <= {BOUNDS['fp16_max_abs']}",
                    "measured": v.max_abs,
                    "passed": v.max_abs <= BOUNDS["fp16_max_abs"],
                }
            )
        else:
            drop = base - v.ground_truth["s_measure"]
            rows.append(
                {
                    "model": v.name,
                    "criterion": f"mask IoU vs FP32 >= {BOUNDS['int8_mask_iou']}",
                    "measured": v.mask_iou_mean,
                    "passed": v.mask_iou_mean >= BOUNDS["int8_mask_iou"],
                }
            )
            rows.append(
                {
                    "model": v.name,
                    "criterion": f"S-measure drop <= {BOUNDS['int8_s_drop']}",
                    "measured": drop,
                    "passed": drop <= BOUNDS["int8_s_drop"],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fusions", default="hierarchical,absi")
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench-accuracy")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    command = " ".join(["python", "benchmarks/bench_accuracy.py", *sys.argv[1:]])
    args.work.mkdir(parents=True, exist_ok=True)
    held_out, calib = args.work / "held-out", args.work / "calib"
    if not held_out.exists():
        write_dataset(held_out, args.held_out, size=HELD_OUT_SIZE, seed=HELD_OUT_SEED)
    if not calib.exists():
        write_dataset(calib, args.calib_count, size=HELD_OUT_SIZE, seed=CALIB_SEED)

    for fusion in (f.strip() for f in args.fusions.split(",") if f.strip()):
        print(f"== {fusion}", flush=True)
        paths, names, refused = build_variants(fusion, args.work, calib / "images")
        report = evaluate_models(paths, held_out, size=HELD_OUT_SIZE, names=names)
        report.data = _shown(report.data)
        meta_feeds = load_calibration_set(held_out / "images", _meta(paths[0]), count=4, size=HELD_OUT_SIZE).feeds
        report.sensitivity = quantization_sensitivity(paths[0], paths[2], meta_feeds, 10)
        report.sensitivity_model = names[2]
        verdicts = judge(report) + [
            {"model": r["model"], "criterion": "written (INT8 write gate)", "measured": float("nan"), "passed": False}
            for r in refused
        ]
        md = report_markdown(report, command)
        md += "\n## Bounds\n\n| model | criterion | measured | result |\n|---|---|---:|---|\n"
        md += "".join(
            f"| {r['model']} | {r['criterion']} | {r['measured']:.4g} | {'PASS' if r['passed'] else 'FAIL'} |\n"
            for r in verdicts
        )
        md += "".join(f"\n{r['model']} was refused by the write gate: {r['reason']}\n" for r in refused)
        md += (
            f"\nDemo checkpoint `{demo_checkpoint(fusion).name}`; held-out images: seed {HELD_OUT_SEED}, "
            f"calibration images: seed {CALIB_SEED}, {args.calib_count} images.\n"
        )
        stem = args.output / f"accuracy-demo-pvt_v2_b0-{fusion}"
        write_bytes_atomic(stem.with_suffix(".md"), md.encode())
        write_json_atomic(stem.with_suffix(".json"), {**asdict(report), "bounds": verdicts, "command": command})
        print(md, flush=True)


def _shown(path) -> str:
    """A data path as results name it: relative to the repository, never the machine's own path."""
    path, root = Path(path).resolve(), ROOT.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def _meta(path: Path):
    import runtime

    return runtime.load(path).require_metadata()


if __name__ == "__main__":
    main()
