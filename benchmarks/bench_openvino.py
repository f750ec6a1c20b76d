"""x86 CPU without a GPU: our `openvino-cpu` rows (FP32, BF16, INT8) beside ONNX Runtime and PyTorch
eager, and OpenVINO's own recipe for a PyTorch model (`convert_model`, then NNCF; see `make_recipe`),
all timed in one interleaved run per input size, with each row's agreement with the FP32 model.

For each fusion mode: export pvt_v2_b2 (random init: speed does not depend on the weights), calibrate
INT8 once on synthetic images (all three Q/DQ layouts come from the one calibration), run OpenVINO's
recipe with the same images, then time every row at every size (batch 1) and compare every row's
logits with ONNX Runtime FP32 on held-out synthetic images at --size. The goal: our fastest
row at that size at least --goal times faster than the recipe's fastest, both at mask IoU >= 0.98.
Writes docs/results/openvino-<backbone>.md/json.

    python benchmarks/bench_openvino.py [--sizes 256,320,352,416] [--fusions hierarchical,absi]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.scripts import _names, script_command, script_parser, write_result
from calibration.quantize import CALIBRATION_IMAGES
from runtime.environment import stamp
from runtime.openvino_backend import CACHE_ENV
from runtime.tables import Table
from runtime.timing import time_interleaved

MIN_IOU = 0.98  # "equal accuracy": mask IoU against the FP32 model

# OpenVINO's own recipe for a PyTorch model, as OpenVINO's and NNCF's documentation give it: the peer.
# 1. `openvino.convert_model(network, example_input=...)`: the PyTorch network traced to an OpenVINO
#    model (FP32 weights), compiled at the CPU plugin's default inference precision (BF16 on CPUs with
#    AMX, FP32 on most others); also reshaped to the static input size, as its docs show for speed.
# 2. `nncf.quantize(model, nncf.Dataset(images))`: post-training INT8 of that model with the same
#    calibration images our INT8 uses; NNCF's default preset, and the variant its documentation
#    recommends for transformer models (`model_type=nncf.ModelType.TRANSFORMER`).
# Compiled with the same settings as ours (latency hint, the same thread count): only the model differs.


def convert(network, size: int):
    """`openvino.convert_model` of the PyTorch network, traced with one example image."""
    import openvino as ov
    import torch

    network.eval()
    with torch.no_grad():
        return ov.convert_model(network, example_input=torch.zeros(1, 3, size, size))


def quantize(model, images: Sequence[np.ndarray], transformer: bool = False):
    """`nncf.quantize` with `images` (preprocessed [1, 3, H, W] float32 arrays) as the calibration set."""
    import nncf

    dataset = nncf.Dataset(list(images))
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    return nncf.quantize(model, dataset, subset_size=len(images), **extra)


def compile_default(model, threads: int | None):
    """Compiled for the CPU at the plugin's default inference precision (the recipe sets none)."""
    import openvino as ov

    config: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(model, "CPU", config)


def make_recipe(
    network, images: Sequence[np.ndarray], size: int, keep: Path, say=print
) -> dict[str, tuple[object, float]]:
    """Every recipe variant as an uncompiled OpenVINO model, with the seconds it took to make. Each is
    saved under `keep` (OpenVINO IR, with the seconds) and read back by a later run."""
    import json

    import openvino as ov

    made = {}
    for variant in ("fp", "int8", "int8-transformer"):
        xml, log = keep.with_name(f"{keep.name}-{variant}.xml"), keep.with_name(f"{keep.name}-{variant}.json")
        if xml.is_file() and log.is_file():
            say(f"OpenVINO recipe: reusing {xml.name}")
            made[variant] = (ov.Core().read_model(xml), json.loads(log.read_text())["seconds"])
            continue
        start = time.perf_counter()
        if variant == "fp":
            model = convert(network, size)
        else:
            say(f"OpenVINO recipe: nncf.quantize ({variant}) on {len(images)} images")
            model = quantize(made["fp"][0], images, transformer=variant == "int8-transformer")
        made[variant] = (model, time.perf_counter() - start)
        ov.save_model(model, xml, compress_to_fp16=False)
        log.write_text(json.dumps({"seconds": made[variant][1], "images": len(images), "size": size}))
    return made


@dataclass(frozen=True)
class Row:
    label: str
    side: str  # "ours", "ours, before tuning" or "OpenVINO recipe"
    open: Callable[[int], Callable[[np.ndarray], np.ndarray]]  # size -> (input -> logits)


def _ours(models: dict[str, Path], threads: int) -> list[Row]:
    import runtime

    def opener(path: Path, backend: str, precision: str | None = None):
        def open_at(size: int):
            runner = runtime.open_runner(path, backend, threads=threads, inference_precision=precision)
            return lambda x: runner.infer(x)["mask_logits"]

        return open_at

    def dynamic_bf16(size: int):
        """Before the runner compiled per shape: our FP32 ONNX compiled as exported (dynamic sizes)."""
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads}
        compiled = ov.Core().compile_model(str(fp32), "CPU", config)
        request = compiled.create_infer_request()
        return lambda x, compiled=compiled: np.array(request.infer({0: x})[0])  # keeps the compiled model alive

    fp32, trt, cpu, ov = models["fp32"], models["int8-tensorrt"], models["int8-cpu"], models["int8-openvino"]
    return [
        Row("PyTorch eager FP32", "ours", opener(fp32, "torch-cpu")),
        Row("onnxruntime-cpu FP32", "ours", opener(fp32, "onnxruntime-cpu")),
        Row("onnxruntime-cpu INT8 (cpu layout)", "ours", opener(cpu, "onnxruntime-cpu")),
        Row("openvino-cpu FP32", "ours", opener(fp32, "openvino-cpu", "f32")),
        Row("openvino-cpu BF16", "ours", opener(fp32, "openvino-cpu", "bf16")),
        Row("OpenVINO BF16 on our ONNX as exported (dynamic; before)", "ours, before tuning", dynamic_bf16),
        Row("openvino-cpu INT8 (tensorrt layout)", "ours", opener(trt, "openvino-cpu", "auto")),
        Row("openvino-cpu INT8 (cpu layout)", "ours", opener(cpu, "openvino-cpu", "auto")),
        Row("openvino-cpu INT8 (openvino layout)", "ours", opener(ov, "openvino-cpu", "auto")),
    ]


def _recipe(recipe: dict[str, tuple[object, float]], threads: int) -> list[Row]:
    def opener(model, static: bool):
        def open_at(size: int):
            shaped = model
            if static:
                shaped = model.clone()
                shaped.reshape([1, 3, size, size])
            compiled = compile_default(shaped, threads)
            request = compiled.create_infer_request()
            return lambda x, compiled=compiled: np.array(request.infer({0: x})[0])  # keeps it alive

        return open_at

    return [
        Row("convert_model, as traced (dynamic input)", "OpenVINO recipe", opener(recipe["fp"][0], False)),
        Row("convert_model, static input", "OpenVINO recipe", opener(recipe["fp"][0], True)),
        Row("NNCF INT8, static input", "OpenVINO recipe", opener(recipe["int8"][0], True)),
        Row("NNCF INT8 transformer, static input", "OpenVINO recipe", opener(recipe["int8-transformer"][0], True)),
    ]


def make_models(backbone: str, fusion: str, work: Path, count: int) -> dict[str, Path]:
    """FP32, and INT8 in every Q/DQ layout from one calibration (the later ones reuse its cache)."""
    from calibration.int8 import LAYOUTS
    from export.variants import Int8Settings, export_fp32, make_variant

    fp32 = export_fp32(work / f"{backbone}_{fusion}.onnx", backbone, fusion, say=print)
    made = {"fp32": fp32}
    for target in LAYOUTS:
        int8 = Int8Settings(target=target, images=count)
        made[f"int8-{target}"] = make_variant(fp32, "int8", int8=int8, work=work, say=print).path
    return made


def calibration_arrays(fp32: Path, work: Path, count: int, size: int) -> list[np.ndarray]:
    """The images our INT8 calibrates on (the same seeded subset of the synthetic set), preprocessed."""
    from calibration.data import load_calibration_set
    from calibration.quantize import CALIBRATION_SEED
    from calibration.synthetic import synthetic_calibration_images
    from runtime.metadata import read_model_metadata

    meta, _ = read_model_metadata(fp32)
    folder = synthetic_calibration_images(work / "calibration", count)
    chosen = load_calibration_set(folder, meta, count=count, seed=CALIBRATION_SEED, size=(size, size))
    return [feed[meta.input_name] for feed in chosen]


def held_out_arrays(fp32: Path, count: int, size: int) -> list[np.ndarray]:
    from calibration.synthetic import make_sample
    from models.demo_weights import HELD_OUT_SEED
    from runtime.metadata import read_model_metadata
    from runtime.preprocess import preprocess

    meta, _ = read_model_metadata(fp32)
    rng = np.random.default_rng(HELD_OUT_SEED)
    return [preprocess(make_sample(rng, (size, size)).image, meta, (size, size)) for _ in range(count)]


def agreement(run: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray], references: list[np.ndarray]):
    """Mean mask IoU (logit > 0) and the lowest logit cosine against the FP32 references."""
    from calibration.metrics import mask_iou
    from runtime.compare import cosine_similarity

    ious, cosines = [], []
    for x, ref in zip(images, references):
        got = run(x)
        ious.append(mask_iou(got[0, 0] > 0, ref[0, 0] > 0))
        cosines.append(cosine_similarity(got, ref))
    return float(np.mean(ious)), float(np.min(cosines))


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, work=".bench-openvino", timing=True)
    parser.add_argument("--sizes", type=lambda v: [int(s) for s in _names(v)], default=[256, 320, 352, 416])
    parser.add_argument("--calib-count", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument("--agreement-images", type=int, default=8)
    parser.add_argument("--goal", type=float, default=1.1)
    parser.set_defaults(iters=8)
    args = parser.parse_args(argv)
    args.agreement_size = args.size  # --size: where agreement and the goal are judged (and calibration runs)
    if args.size not in args.sizes:
        parser.error(f"--size {args.size} (where agreement and the goal are judged) must be one of --sizes")
    command = script_command(__file__, argv)
    import torch

    from models.runner import network_for
    from runtime.metadata import read_model_metadata

    torch.set_num_threads(args.threads)
    # steady-state latency is measured, not start-up: no model cache (with it, OpenVINO 2026.4 crashed
    # this process when it held a dozen compiled models, the same network in several precisions)
    os.environ[CACHE_ENV] = "off"
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[Row]] = {}
    made_in: dict[str, dict[str, float]] = {}
    held_out: dict[str, list[np.ndarray]] = {}
    for fusion in args.fusions:
        start = time.perf_counter()
        models = make_models(args.backbone, fusion, args.work, args.calib_count)
        ours_seconds = time.perf_counter() - start
        meta, _ = read_model_metadata(models["fp32"])
        images = calibration_arrays(models["fp32"], args.work, args.calib_count, args.agreement_size)
        keep = args.work / f"recipe-{args.backbone}_{fusion}-{args.calib_count}"
        recipe = make_recipe(network_for(meta, None), images, args.agreement_size, keep)
        made_in[fusion] = {"ours (export, calibration, all INT8 layouts)": ours_seconds}
        made_in[fusion].update({f"recipe {k}": v[1] for k, v in recipe.items()})
        rows[fusion] = _ours(models, args.threads) + _recipe(recipe, args.threads)
        held_out[fusion] = held_out_arrays(models["fp32"], args.agreement_images, args.agreement_size)

    stats: dict[tuple[str, str, int], dict] = {}
    not_run: dict[tuple[str, str, int], str] = {}
    agree: dict[tuple[str, str], tuple[float, float]] = {}
    for size in args.sizes:
        x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
        runs = {}
        for f in rows:
            for r in rows[f]:
                try:
                    run = r.open(size)
                    run(x)  # compiles for this shape (openvino-cpu, the recipe) before timing
                except Exception as exc:  # a model that cannot take this size: said in the table
                    not_run[(f, r.label, size)] = str(exc).strip().splitlines()[-1][:200]
                    continue
                runs[(f, r.label)] = run
        print(f"{size}x{size}: timing {len(runs)} models interleaved", flush=True)
        timed = time_interleaved(
            {f"{f}/{label}": (lambda run=run, x=x: run(x)) for (f, label), run in runs.items()},
            warmup=args.warmup,
            iterations=args.iters,
        )
        for f, label in runs:
            stats[(f, label, size)] = timed[f"{f}/{label}"].as_dict()
        if size == args.agreement_size:
            for f in rows:
                if (f, "onnxruntime-cpu FP32") not in runs:
                    raise SystemExit(
                        f"the FP32 reference did not run at {size}: {not_run[(f, 'onnxruntime-cpu FP32', size)]}"
                    )
                references = [runs[(f, "onnxruntime-cpu FP32")](im) for im in held_out[f]]
                for r in rows[f]:
                    if (f, r.label) in runs:
                        agree[(f, r.label)] = agreement(runs[(f, r.label)], held_out[f], references)
        del runs

    lines = [
        f"# x86 CPU: openvino-cpu beside ONNX Runtime, PyTorch and OpenVINO's own recipe ({args.backbone})",
        "",
        stamp(command),
        "",
        f"Batch 1, {args.threads} threads, {args.iters} interleaved iterations after {args.warmup} warm-up at "
        "each size (every row of both fusion modes in one run); host wall clock per call, input in memory. "
        f"INT8: our calibration (percentile, {args.calib_count} synthetic images) in each Q/DQ layout; the "
        "recipe's NNCF INT8 uses the same images. openvino-cpu compiles each input size as a static shape; "
        "`auto` runs the float layers of an INT8 model in the CPU's default precision. Agreement: "
        f"{args.agreement_images} held-out synthetic images at {args.agreement_size}x{args.agreement_size}, "
        "against ONNX Runtime FP32 (mask = logit > 0; random-init weights, so agreement shows numerical "
        "fidelity, not segmentation quality).",
        "",
    ]
    goal_rows = []
    for f in rows:
        columns = [
            "row",
            "side",
            *(f"{s} ms" for s in args.sizes),
            f"vs eager @{args.agreement_size}",
            "mask IoU",
            "min cosine",
        ]
        table_rows = []
        eager = stats.get((f, "PyTorch eager FP32", args.agreement_size), {}).get("median_ms")
        for r in rows[f]:
            medians = [stats.get((f, r.label, s), {}).get("median_ms") for s in args.sizes]
            here = stats.get((f, r.label, args.agreement_size), {}).get("median_ms")
            iou, cos = agree.get((f, r.label), (float("nan"), float("nan")))
            speed = f"{eager / here:.2f}x" if eager and here else "-"
            shown = ("not run" if m is None else f"{m:.0f}" for m in medians)
            table_rows.append([r.label, r.side, *shown, speed, f"{iou:.4f}", f"{cos:.5f}"])
        lines += [Table(f"{f}: median latency (ms)", columns, table_rows).markdown(), ""]

        def best(side: str, f=f):
            ok = [
                (stats[(f, r.label, args.agreement_size)]["median_ms"], r.label)
                for r in rows[f]
                if r.side == side and (f, r.label) in agree and agree[(f, r.label)][0] >= MIN_IOU
            ]
            return min(ok) if ok else (float("nan"), "none at the accuracy bound")

        (ours_ms, ours_label), (peer_ms, peer_label) = best("ours"), best("OpenVINO recipe")
        ratio = peer_ms / ours_ms
        goal_rows.append(
            [
                f,
                ours_label,
                f"{ours_ms:.0f}",
                peer_label,
                f"{peer_ms:.0f}",
                f"{ratio:.2f}x",
                "PASS" if ratio >= args.goal else "FAIL",
            ]  # fmt: skip
        )
    lines += [
        Table(
            f"Goal at {args.agreement_size}x{args.agreement_size}: our fastest row >= {args.goal}x faster than the "
            f"recipe's fastest, both at mask IoU >= {MIN_IOU}",
            ["fusion", "our fastest", "ms", "recipe's fastest", "ms", "recipe / ours", "goal"],
            goal_rows,
        ).markdown(),
        "",
        Table(
            "Not run",
            ["fusion", "row", "size", "why"],
            [[f, label, str(size), why] for (f, label, size), why in not_run.items()] or [["-", "-", "-", "-"]],
        ).markdown(),
        "",
        Table(
            "Time to make the models (s)",
            ["fusion", "step", "seconds"],
            [[f, step, f"{sec:.0f}"] for f, steps in made_in.items() for step, sec in steps.items()],
        ).markdown(),
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    data = {
        "command": command,
        "stats": [{"fusion": f, "row": label, "size": s, **v} for (f, label, s), v in stats.items()],
        "agreement": [
            {"fusion": f, "row": label, "mask_iou": a[0], "min_cosine": a[1]} for (f, label), a in agree.items()
        ],
        "not_run": [{"fusion": f, "row": label, "size": s, "why": why} for (f, label, s), why in not_run.items()],
        "goal": goal_rows,
        "made_in_seconds": made_in,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_result(args.output / f"openvino-{args.backbone}", markdown, data)


if __name__ == "__main__":
    main()
