"""`msdeploy params` and `msdeploy demo`: the PyTorch model side (needs the [export] extra)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msdeploy.commands.export_cmds import run_export_onnx, run_parity
from msdeploy.output import console, millions, print_table


def show_params(backbone: str, scales: Sequence[float], as_json: bool = False) -> None:
    from models.params import parameter_table

    rows = parameter_table(backbone, scales)
    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in rows]))
        return
    print_table(
        f"Parameter count ({backbone}, scales {', '.join(map(str, scales))})",
        ["component", "parameters", "measured", "guide claims"],
        ((r.component, f"{r.params:,}", millions(r.params), r.guide or "-") for r in rows),
        right=(1, 2),
    )


def output_shapes(backbone: str, fusion: str, sizes: Sequence[int]) -> list[tuple[int, list[tuple], tuple]]:
    """(size, fused feature shapes, mask shape) per square size, for batch 1."""
    import torch

    from models import build_model

    model = build_model(backbone, fusion)
    out = []
    with torch.inference_mode():
        for size in sizes:
            logits, feats = model.forward_features(torch.randn(1, 3, size, size))
            out.append((size, [tuple(f.shape) for f in feats], tuple(logits.shape)))
    return out


def _shape(shape: tuple) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def run_demo(
    backbone: str,
    fusions: Sequence[str],
    sizes: Sequence[int],
    output_dir: Path,
    force: bool,
    random_init: bool = False,
) -> bool:
    """Parameters, shapes, then export each fusion mode and check it against PyTorch."""
    from models.scaling import DEFAULT_SCALES, scaled_size

    show_params(backbone, DEFAULT_SCALES)
    print_table(
        "Scaled inputs (0.5x / 1.0x / 1.5x)",
        ["input", *(f"{s}x" for s in DEFAULT_SCALES)],
        ((f"{n}x{n}", *("x".join(map(str, scaled_size(n, n, s))) for s in DEFAULT_SCALES)) for n in sizes),
    )
    for fusion in fusions:
        print_table(
            f"Output shapes, {backbone}, {fusion} fusion (batch 1)",
            ["input", *(f"level {i}" for i in range(1, 5)), "mask logits"],
            (
                (f"{n}x{n}", *(_shape(s) for s in feats), _shape(mask))
                for n, feats, mask in output_shapes(backbone, fusion, sizes)
            ),
            caption="shapes are [B, C, H, W]; levels 1-4 are the fused maps at strides 4, 8, 16, 32",
        )
    passed = True
    for fusion in fusions:
        weights = None if random_init else demo_weights(backbone, fusion)
        path = demo_export(backbone, fusion, output_dir, force, weights)
        passed &= run_parity(str(path), [(n, n) for n in sizes], (1, 2), weights, as_json=False)
    demo_latency(backbone, fusions, sizes, output_dir)
    demo_masks(backbone, fusions, output_dir)
    return passed


DEMO_PHOTO_SIZES = ((352, 352), (300, 400), (420, 320), (256, 256))


def demo_masks(backbone: str, fusions: Sequence[str], output_dir: Path) -> Path:
    """Masks and overlays for a few held-out synthetic images with each exported model (what
    `msdeploy infer` writes), and one preview sheet: image, true mask, then each model's overlay."""
    from calibration.synthetic import make_sample
    from models.demo_training import HELD_OUT_SEED
    from runtime.files import write_bytes_atomic
    from runtime.inference_job import InferOptions, run_inference
    from runtime.postprocess import encode_png

    photos = output_dir / "photos"
    truth = output_dir / "photos-truth"
    rng = np.random.default_rng(HELD_OUT_SEED)
    for folder in (photos, truth):
        folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(DEMO_PHOTO_SIZES):
        sample = make_sample(rng, size)
        write_bytes_atomic(photos / f"photo{i}.png", encode_png(sample.image))
        write_bytes_atomic(truth / f"photo{i}.png", encode_png(sample.mask))
    rows = []
    for fusion in fusions:
        model = output_dir / f"{backbone}_{fusion}.onnx"
        out = output_dir / f"masks-{fusion}"
        summary = run_inference(InferOptions(model=model, inputs=[photos], output=out, force=True))
        net = summary.latency("network_ms")
        rows.append((fusion, len(summary.results), f"{net['mean']:.0f} ms", str(out)))
    print_table(
        "msdeploy infer on held-out synthetic images (mask and overlay PNGs at each image's size)",
        ["fusion", "images", "mean network latency", "written to"],
        rows,
    )
    sheet = output_dir / "masks-preview.png"
    write_bytes_atomic(sheet, encode_png(_preview_sheet(output_dir, fusions)))
    console.print(f"[green]preview[/] {sheet}: each row is an image, its true mask, then the overlay of each model")
    return sheet


def _preview_sheet(output_dir: Path, fusions: Sequence[str], cell: int = 192) -> np.ndarray:
    """Rows of [image | true mask | overlay per fusion], each cell `cell` pixels high."""
    from PIL import Image

    rows = []
    for photo in sorted((output_dir / "photos").glob("*.png")):
        tiles = [photo, output_dir / "photos-truth" / photo.name]
        tiles += [output_dir / f"masks-{f}" / f"{photo.stem}_overlay.png" for f in fusions]
        images = [Image.open(t).convert("RGB") for t in tiles]
        width = round(images[0].width * cell / images[0].height)
        row = np.concatenate([np.asarray(im.resize((width, cell), Image.BILINEAR)) for im in images], axis=1)
        rows.append(row)
    widest = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 4), (0, widest - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def demo_latency(backbone: str, fusions: Sequence[str], sizes: Sequence[int], models: Path) -> None:
    """The Inference Time tables for the exported models on ONNX Runtime CPU, with PyTorch eager
    timed in the same interleaved run (a short `msdeploy bench`; run that for the full tables)."""
    from msdeploy.commands.bench import run_bench_command
    from runtime.bench_run import BenchOptions

    options = BenchOptions(
        backends=("torch-cpu", "onnxruntime-cpu"),
        fusions=fusions,
        sizes=sizes,
        backbone=backbone,
        models=models,
        warmup=2,
        iterations=5,
        tables=False,
        command=f"msdeploy bench --backbone {backbone} --models {models} --fusion {','.join(fusions)} "
        f"--sizes {','.join(map(str, sizes))} --warmup 2 --iters 5 --no-tables",
    )
    run_bench_command(options, output=None, latency_only=True)


def demo_weights(backbone: str, fusion: str):
    """The packaged demo checkpoint (trained masks) where one exists for this backbone and fusion."""
    from models.demo_training import DEMO_BACKBONE, WEIGHTS_DIR

    path = WEIGHTS_DIR / f"{backbone}_{fusion}.safetensors"
    return str(path) if backbone == DEMO_BACKBONE and path.exists() else None


def demo_export(backbone: str, fusion: str, output_dir: Path, force: bool, weights: str | None = None) -> Path:
    """Export into the demo folder, or reuse the export already there (re-running the demo is quick)."""
    from export.onnx_export import ExportOptions
    from runtime.files import sha256_file
    from runtime.metadata import read_sidecar

    path = output_dir / f"{backbone}_{fusion}.onnx"
    sidecar = read_sidecar(path) if path.exists() else None
    wanted = (backbone, fusion, sha256_file(weights) if weights else None)
    if (
        sidecar
        and not force
        and (sidecar.get("backbone"), sidecar.get("fusion"), sidecar.get("weights", {}).get("file_sha256")) == wanted
    ):
        console.print(f"reusing {path} (pass --force to export again)")
        return path
    # a stale export (other weights) is replaced: the demo folder is ours
    run_export_onnx(
        ExportOptions(backbone=backbone, fusion=fusion, weights=weights, output=path, force=force or path.exists())
    )
    return path


def run_train_demo(fusion, steps, batch, lr, init_from, held_out, seed, output, force) -> None:
    from models.demo_training import TrainConfig, train_demo
    from msdeploy.output import progress_bar

    cfg = TrainConfig(fusion=fusion, steps=steps, batch=batch, lr=lr, init_from=init_from, held_out=held_out, seed=seed)
    with progress_bar(f"training {cfg.backbone} {fusion}", steps) as update:
        path, log = train_demo(cfg, output, force=force, progress=lambda i, n, loss: update(i, f"loss {loss:.4f}"))
    console.print(f"wrote {path} and {path.with_suffix('.train.json')} ({log.seconds:.0f} s of training)")
    print_table(
        "Held-out synthetic images (stored FP16 weights)",
        ["input size", "images", "S-measure", "mean E-measure", "weighted F", "MAE", "IoU@0.5"],
        (
            (
                size,
                s["images"],
                f"{s['s_measure']:.4f}",
                f"{s['e_measure']:.4f}",
                f"{s['weighted_f']:.4f}",
                f"{s['mae']:.4f}",
                f"{s['iou']:.4f}",
            )
            for size, s in log.held_out.items()
            if isinstance(s, dict)
        ),
        right=(1, 2, 3, 4, 5, 6),
    )
