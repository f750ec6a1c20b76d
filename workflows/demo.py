"""The demo (`msdeploy demo`): the main job on the embedded default (CPU, ONNX Runtime).

Parameters and shapes of the network, an FP32 ONNX export of each fusion mode (the packaged demo
checkpoint, trained on synthetic camouflage images), parity against PyTorch, a short latency table
against PyTorch eager, and masks for held-out images with a preview sheet. Each result is handed to
`show` as soon as it exists (a Table, a ParityReport or a BenchReport) and returned at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.tables import Table

log = logging.getLogger("msdeploy")
PHOTO_SIZES = ((352, 352), (300, 400), (420, 320), (256, 256))  # held-out images of their own sizes


@dataclass
class DemoOptions:
    backbone: str = "pvt_v2_b0"
    fusions: Sequence[str] = ("hierarchical", "absi")
    sizes: Sequence[int] = (256, 320, 352, 416)
    output_dir: Path = Path("demo-output")
    force: bool = False  # export again even where the folder holds the models
    random_init: bool = False  # random weights instead of the packaged demo checkpoints


@dataclass
class DemoResult:
    parity: dict = field(default_factory=dict)  # fusion -> runtime.compare.ParityReport
    latency: object = None  # bench.report.BenchReport
    masks: Table | None = None
    preview: Path | None = None

    @property
    def passed(self) -> bool:
        return all(report.passed for report in self.parity.values())


def parameter_table(backbone: str, scales: Sequence[float]) -> Table:
    """Parameters per component, beside the guide's claims (also `msdeploy params`)."""
    from models.params import parameter_table as rows_of

    rows = [[r.component, f"{r.params:,}", f"{r.params / 1e6:.3f}M", r.guide or "-"] for r in rows_of(backbone, scales)]
    title = f"Parameter count ({backbone}, scales {', '.join(map(str, scales))})"
    return Table(title, ["component", "parameters", "measured", "guide claims"], rows)


def shape_tables(backbone: str, fusions: Sequence[str], sizes: Sequence[int]) -> list[Table]:
    """The scaled copies per input size, and every fused map and the mask per fusion and size."""
    import torch

    from models import DEFAULT_SCALES, build_model, scaled_size

    def shape(s) -> str:
        return "(" + ",".join(map(str, s)) + ")"

    tables = [
        Table(
            "Scaled inputs (0.5x / 1.0x / 1.5x)",
            ["input", *(f"{s}x" for s in DEFAULT_SCALES)],
            [[f"{n}x{n}", *("x".join(map(str, scaled_size(n, n, s))) for s in DEFAULT_SCALES)] for n in sizes],
        )
    ]
    for fusion in fusions:
        model = build_model(backbone, fusion)
        rows = []
        with torch.inference_mode():
            for n in sizes:
                logits, feats = model.forward_features(torch.randn(1, 3, n, n))
                rows.append([f"{n}x{n}", *(shape(f.shape) for f in feats), shape(logits.shape)])
        tables.append(
            Table(
                f"Output shapes, {backbone}, {fusion} fusion (batch 1)",
                ["input", *(f"level {i}" for i in range(1, 5)), "mask logits"],
                rows,
                "shapes are [B, C, H, W]; levels 1-4 are the fused maps at strides 4, 8, 16, 32",
            )
        )
    return tables


def demo_weights(backbone: str, fusion: str) -> str | None:
    """The packaged demo checkpoint (trained masks) where one exists for this backbone and fusion."""
    from models.demo_weights import DEMO_BACKBONE, demo_checkpoint
    from runtime.errors import UserError

    try:
        return str(demo_checkpoint(fusion)) if backbone == DEMO_BACKBONE else None
    except UserError:  # no checkpoint for this fusion: random init
        return None


def run_demo(
    options: DemoOptions, show: Callable[[object], None] = print, say: Callable[[str], None] = log.info
) -> DemoResult:
    from export.parity import check_model_parity
    from export.variants import export_fp32
    from models.scaling import DEFAULT_SCALES

    result = DemoResult()
    show(parameter_table(options.backbone, DEFAULT_SCALES))
    for table in shape_tables(options.backbone, options.fusions, options.sizes):
        show(table)
    for fusion in options.fusions:
        weights = None if options.random_init else demo_weights(options.backbone, fusion)
        path = options.output_dir / f"{options.backbone}_{fusion}.onnx"
        export_fp32(path, options.backbone, fusion, weights, force=options.force, say=say)
        result.parity[fusion] = check_model_parity(path, [(n, n) for n in options.sizes], (1, 2), weights)
        show(result.parity[fusion])
    result.latency = demo_latency(options, say)
    show(result.latency)
    result.masks, result.preview = demo_masks(options, say)
    show(result.masks)
    return result


def demo_latency(options: DemoOptions, say: Callable[[str], None]):
    """ONNX Runtime CPU against PyTorch eager, timed in the same interleaved run (a short `msdeploy
    bench`; run that for the full tables)."""
    from bench.run import BenchOptions, run_bench

    sizes, fusions = ",".join(map(str, options.sizes)), ",".join(options.fusions)
    bench = BenchOptions(
        backends=("torch-cpu", "onnxruntime-cpu"),
        fusions=options.fusions,
        sizes=options.sizes,
        backbone=options.backbone,
        models=options.output_dir,
        warmup=2,
        iterations=5,
        tables=False,
        command=f"msdeploy bench --backbone {options.backbone} --models {options.output_dir} --fusion {fusions} "
        f"--sizes {sizes} --warmup 2 --iters 5 --no-tables",
    )
    return run_bench(bench, say=say)


def demo_masks(options: DemoOptions, say: Callable[[str], None]) -> tuple[Table, Path]:
    """Masks and overlays for a few held-out synthetic images with each exported model (what
    `msdeploy infer` writes), and one preview sheet: image, true mask, then each model's overlay."""
    from calibration.synthetic import make_sample
    from models.demo_weights import HELD_OUT_SEED
    from runtime.files import write_bytes_atomic
    from runtime.inference_job import InferOptions, run_inference
    from runtime.postprocess import encode_png

    folder = options.output_dir
    photos, truth = folder / "photos", folder / "photos-truth"
    rng = np.random.default_rng(HELD_OUT_SEED)
    for sub in (photos, truth):
        sub.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(PHOTO_SIZES):
        sample = make_sample(rng, size)
        write_bytes_atomic(photos / f"photo{i}.png", encode_png(sample.image))
        write_bytes_atomic(truth / f"photo{i}.png", encode_png(sample.mask))
    rows = []
    for fusion in options.fusions:
        model = folder / f"{options.backbone}_{fusion}.onnx"
        out = folder / f"masks-{fusion}"
        say(f"masks with {model.name}")
        summary = run_inference(InferOptions(model=model, inputs=[photos], output=out, force=True))
        rows.append([fusion, str(len(summary.results)), f"{summary.latency('network_ms')['mean']:.0f}", str(out)])
    sheet = folder / "masks-preview.png"
    write_bytes_atomic(sheet, encode_png(_preview_sheet(folder, options.fusions)))
    table = Table(
        "msdeploy infer on held-out synthetic images (mask and overlay PNGs at each image's size)",
        ["fusion", "images", "mean network ms", "written to"],
        rows,
        f"preview {sheet}: each row is an image, its true mask, then the overlay of each model",
    )
    return table, sheet


def _preview_sheet(folder: Path, fusions: Sequence[str], cell: int = 192) -> np.ndarray:
    """Rows of [image | true mask | overlay per fusion], each cell `cell` pixels high."""
    from PIL import Image

    rows = []
    for photo in sorted((folder / "photos").glob("*.png")):
        tiles = [photo, folder / "photos-truth" / photo.name]
        tiles += [folder / f"masks-{f}" / f"{photo.stem}_overlay.png" for f in fusions]
        images = [Image.open(t).convert("RGB") for t in tiles]
        width = round(images[0].width * cell / images[0].height)
        rows.append(np.concatenate([np.asarray(im.resize((width, cell), Image.BILINEAR)) for im in images], axis=1))
    widest = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 4), (0, widest - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
