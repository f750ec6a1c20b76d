"""`msdeploy accuracy`: FP32, FP16 and INT8 models side by side on images with ground-truth masks.

Three kinds of figures, because each answers a different question:
- tensor agreement with the FP32 model (max abs, cosine, SQNR of the mask logits): did the
  conversion change what the network computes?
- mask agreement with the FP32 model (IoU of the masks thresholded at 0.5, MAE of probabilities):
  would a user see a different mask?
- the field's metrics against ground truth (S-measure, mean E-measure, weighted F, MAE, IoU): did the
  task get worse?
Plus, for an INT8 model, the layers whose quantization costs most (local SQNR of each quantized
tensor on the same images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.metrics import SegmentationMetrics, mask_iou, sigmoid
from runtime.compare import cosine_similarity
from runtime.errors import UserError
from runtime.files import display_path
from runtime.preprocess import IMAGE_SUFFIXES, ImageReadError, load_rgb, preprocess, resize_rgb
from runtime.tables import Table, cell


@dataclass
class LabelledImage:
    image: Path
    mask: Path


def list_labelled(folder: str | Path, count: int | None = None) -> list[LabelledImage]:
    """`folder/images/*` paired with `folder/masks/<same stem>.*` (the layout COD data sets use)."""
    folder = Path(folder)
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise UserError(f"{folder} needs images/ and masks/ subfolders (msdeploy data synth {folder} makes one)")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = [
        LabelledImage(p, masks[p.stem])
        for p in sorted(images_dir.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in masks
    ]
    if not pairs:
        raise UserError(f"no image in {images_dir} has a mask with the same name in {masks_dir}")
    return pairs[:count] if count else pairs


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-30) / noise)


def _resize_prob(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Probability map [h, w] -> [H, W] (bilinear), as a deployed model returns masks at image size."""
    if prob.shape == size:
        return prob
    from PIL import Image

    return np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize(size[::-1], Image.BILINEAR))


@dataclass
class VariantScores:
    name: str
    path: str
    precision: str
    # agreement with the FP32 model, aggregated over images (worst max abs, mean of the rest)
    max_abs: float = 0.0
    cosine_min: float = 1.0
    sqnr_db_mean: float = float("inf")
    mask_iou_mean: float = 1.0
    mask_iou_min: float = 1.0
    prob_mae: float = 0.0
    ground_truth: dict = field(default_factory=dict)


@dataclass
class AccuracyReport:
    data: str
    images: int
    size: tuple[int, int]
    variants: list[VariantScores]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sensitivity: list[dict] = field(default_factory=list)
    sensitivity_model: str | None = None

    def tables(self) -> list[Table]:
        """The report's tables, for the terminal and for Markdown alike."""
        agreement = Table(
            f"Agreement with the FP32 model ({self.images} images at {self.size[0]}x{self.size[1]})",
            ["model", "max abs logit", "min cosine", "mean SQNR dB", "mask IoU mean", "mask IoU min", "prob MAE"],
            [
                [
                    v.name,
                    f"{v.max_abs:.3g}",
                    f"{v.cosine_min:.6f}",
                    cell(v.sqnr_db_mean, ".1f"),
                    f"{v.mask_iou_mean:.4f}",
                    f"{v.mask_iou_min:.4f}",
                    f"{v.prob_mae:.2e}",
                ]
                for v in self.variants
            ],
            "masks: probability >= 0.5; SQNR = 10 log10(sum ref^2 / sum (ref - model)^2) on mask logits",
        )
        base = self.variants[0].ground_truth
        truth = Table(
            "Against ground truth (pysodmetrics)",
            ["model", "S-measure", "ΔS vs FP32", "mean E-measure", "weighted F", "MAE", "IoU@0.5"],
            [
                [
                    v.name,
                    f"{g['s_measure']:.4f}",
                    f"{g['s_measure'] - base['s_measure']:+.4f}",
                    f"{g['e_measure']:.4f}",
                    f"{g['weighted_f']:.4f}",
                    f"{g['mae']:.4f}",
                    f"{g['iou']:.4f}",
                ]
                for v in self.variants
                for g in [v.ground_truth]
            ],
        )
        tables = [agreement, truth]
        if self.sensitivity:
            tables.append(
                Table(
                    f"INT8 sensitivity: quantized tensors with the lowest SQNR ({self.sensitivity_model})",
                    ["tensor", "SQNR dB", "scale", "read by"],
                    [
                        [r["tensor"], cell(r["sqnr_db"], ".1f"), f"{r['scale']:.3g}", ", ".join(r["read_by"][:2])]
                        for r in self.sensitivity
                    ],
                    "SQNR of the FP32 activation against itself rounded with the model's scale; "
                    "exclude the nodes at the top first: msdeploy quantize ... --exclude 'NODE_NAME'",
                )
            )
        return tables

    def markdown(self, command: str) -> str:
        """The report as a Markdown file, stamped with the command, date, machine and versions."""
        from runtime.environment import collect_environment, stamp

        lines = [f"# Accuracy: {Path(self.variants[0].path).name}", "", stamp(command, collect_environment()), ""]
        lines += [f"Data: `{self.data}`, {self.images} images at {self.size[0]}x{self.size[1]}.", ""]
        return "\n".join(lines + [t.markdown() + "\n" for t in self.tables()])


def variant_name(runner, path: Path) -> str:
    """'fp32', 'fp16', 'int8 (entropy, tensorrt)' from the model's metadata and sidecar."""
    from runtime.metadata import read_sidecar

    meta = runner.require_metadata()
    name = meta.precision
    int8 = (read_sidecar(path) or {}).get("int8")
    if int8:
        name += f" ({int8['method']}, {int8['target']})"
    return name


def evaluate_models(
    models: Sequence[str | Path],
    data: str | Path,
    *,
    size: tuple[int, int] | None = None,
    count: int | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AccuracyReport:
    """Run every model on every labelled image; the first model must be the FP32 reference."""
    from runtime.backends import open_runner

    if not models:
        raise UserError("give at least the FP32 model")
    runners = [open_runner(m, "onnxruntime-cpu") for m in models]
    metas = [r.require_metadata() for r in runners]
    if metas[0].precision != "fp32":
        raise UserError(f"the first model must be the FP32 reference; {models[0]} is {metas[0].precision}")
    for m, meta in zip(models[1:], metas[1:]):
        if (meta.backbone, meta.fusion, meta.weights.get("state_sha256")) != (
            metas[0].backbone,
            metas[0].fusion,
            metas[0].weights.get("state_sha256"),
        ):
            raise UserError(f"{m} is not derived from the same network as {models[0]} (backbone, fusion or weights)")
    labels = names or [variant_name(r, Path(m)) for r, m in zip(runners, models)]
    pairs = list_labelled(data, count)
    input_size = tuple(size or metas[0].static_size or metas[0].default_size)

    gt_metrics = [SegmentationMetrics() for _ in runners]
    stats: list[dict[str, list[float]]] = [
        {"max_abs": [], "cos": [], "sqnr": [], "iou": [], "mae": []} for _ in runners
    ]
    skipped = []
    done = 0
    try:
        for i, pair in enumerate(pairs):
            try:
                rgb = load_rgb(pair.image)
                gt = load_rgb(pair.mask)[..., 0]
            except ImageReadError as exc:
                skipped.append((str(pair.image), str(exc)))
                continue
            if gt.shape != rgb.shape[:2]:
                gt = resize_rgb(np.repeat(gt[..., None], 3, axis=2), rgb.shape[:2])[..., 0]
            x = preprocess(rgb, metas[0], input_size)
            logits = [r.infer(x)[r.outputs[0].name][0, 0] for r in runners]
            ref = logits[0]
            ref_mask = sigmoid(ref) >= 0.5
            for j, lg in enumerate(logits):
                s = stats[j]
                s["max_abs"].append(float(np.abs(lg - ref).max()))
                s["cos"].append(cosine_similarity(lg, ref))
                s["sqnr"].append(sqnr_db(ref, lg))
                prob = sigmoid(lg)
                s["iou"].append(mask_iou(prob >= 0.5, ref_mask))
                s["mae"].append(float(np.abs(prob - sigmoid(ref)).mean()))
                gt_metrics[j].add(_resize_prob(prob, gt.shape), gt)
            done += 1
            if progress:
                progress(i + 1, len(pairs))
    finally:
        for runner in runners:
            runner.close()
    if not done:
        raise UserError(f"none of the {len(pairs)} labelled images in {data} could be read")

    variants = []
    for label, model, meta, s, gm in zip(labels, models, metas, stats, gt_metrics):
        finite = [v for v in s["sqnr"] if np.isfinite(v)]
        variants.append(
            VariantScores(
                name=label,
                path=display_path(model),
                precision=meta.precision,
                max_abs=max(s["max_abs"]),
                cosine_min=min(s["cos"]),
                sqnr_db_mean=float(np.mean(finite)) if finite else float("inf"),
                mask_iou_mean=float(np.mean(s["iou"])),
                mask_iou_min=min(s["iou"]),
                prob_mae=float(np.mean(s["mae"])),
                ground_truth=gm.results().as_dict(),
            )
        )
    return AccuracyReport(str(data), done, input_size, variants, skipped)


def quantization_sensitivity(
    fp32_model: str | Path, int8_model: str | Path, feeds: Sequence[dict[str, np.ndarray]], top: int = 15
) -> list[dict]:
    """Per quantized tensor: its local SQNR (the FP32 activation against itself rounded with the
    INT8 model's scale and zero-point) on `feeds`, worst first, with the node(s) that read it.
    The layers at the top are the ones to `--exclude` first."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    q_model = onnx.load(str(int8_model))
    float_model = onnx.load(str(fp32_model))
    float_tensors = {o for n in float_model.graph.node for o in n.output} | {i.name for i in float_model.graph.input}
    inits = {i.name: numpy_helper.to_array(i) for i in q_model.graph.initializer}
    quant = {}  # fp32 tensor name -> (scale, zero point, reading nodes)
    q_out_to_src = {}
    # an FP16 graph renames the outputs of the nodes it keeps in FP32 and puts Casts between: find a
    # tensor's producer above the Casts, and take that node's output in the FP32 model
    producer = {out: (n, i) for n in q_model.graph.node for i, out in enumerate(n.output)}
    float_outputs = {n.name: list(n.output) for n in float_model.graph.node}

    def float_name(name: str) -> str:
        while name not in float_tensors and name in producer:
            node, index = producer[name]
            if node.op_type != "Cast":
                return float_outputs.get(node.name, [name] * (index + 1))[index]
            name = node.input[0]
        return name

    for node in q_model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and node.input[1] in inits:
            zp = inits[node.input[2]] if len(node.input) > 2 and node.input[2] in inits else np.zeros((), np.uint8)
            source = float_name(node.input[0])
            quant[source] = (inits[node.input[1]], zp, [])
            q_out_to_src[node.output[0]] = source
    dq_to_src = {
        n.output[0]: q_out_to_src[n.input[0]]
        for n in q_model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_out_to_src
    }
    # an FP16 graph (the TensorRT layout) reads each dequantized tensor through a Cast
    casts = [n for n in q_model.graph.node if n.op_type == "Cast" and n.input[0] in dq_to_src]
    dq_to_src.update({n.output[0]: dq_to_src[n.input[0]] for n in casts})
    for node in q_model.graph.node:
        for name in node.input:
            if name in dq_to_src and node.op_type not in ("QuantizeLinear", "Cast"):
                quant[dq_to_src[name]][2].append(f"{node.op_type} {node.name}")
    if not quant:
        raise UserError(f"{int8_model} holds no quantized activations")

    known = {o.name for o in float_model.graph.output}
    wanted = [name for name in quant if name not in known]
    float_model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted)
    session = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    signal = dict.fromkeys(quant, 0.0)
    noise = dict.fromkeys(quant, 0.0)
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            if name not in quant:
                continue
            scale, zp, _ = quant[name]
            info = np.iinfo(zp.dtype)
            q = np.clip(np.rint(value / scale) + zp.astype(np.int32), info.min, info.max)
            deq = (q - zp.astype(np.int32)) * scale
            signal[name] += float(np.sum(value.astype(np.float64) ** 2))
            noise[name] += float(np.sum((value.astype(np.float64) - deq) ** 2))
    rows = []
    for name, (scale, zp, readers) in quant.items():
        db = float("inf") if noise[name] == 0 else 10 * np.log10(max(signal[name], 1e-30) / noise[name])
        rows.append(
            {
                "tensor": name,
                "sqnr_db": round(db, 2),
                "scale": float(np.max(scale)),
                "zero_point": int(np.max(zp)),
                "read_by": readers,
            }
        )
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows[:top]


def accuracy_report(
    models: Sequence[str | Path],
    data: str | Path,
    *,
    size: tuple[int, int] | None = None,
    count: int | None = None,
    methods: Sequence[str] = (),
    calib_data: str | Path | None = None,
    target: str = "tensorrt",
    sensitivity: int = 10,
    quantize: Callable | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AccuracyReport:
    """`msdeploy accuracy`: `models` (the FP32 reference first), plus the first one quantized to INT8
    with each calibration method in `methods` (into a temporary folder, by `quantize`, default
    quantize_int8), on labelled images; the `sensitivity` INT8 tensors with the lowest SQNR."""
    import tempfile

    from calibration.data import load_calibration_set
    from calibration.quantize import Int8Options, quantize_int8
    from runtime.metadata import read_model_metadata

    if methods and not calib_data:
        raise UserError("--methods needs --calib-data DIR (the images to calibrate on)")
    quantize = quantize or quantize_int8
    with tempfile.TemporaryDirectory(prefix="msdeploy-accuracy-") as tmp:
        paths, names = [Path(m) for m in models], [None] * len(models)
        for method in methods:
            out = Path(tmp) / f"int8-{method}.onnx"
            result = quantize(Int8Options(paths[0], Path(calib_data), method=method, target=target, output=out))
            paths.append(result.path)
            names.append(f"int8 ({method}, {target})" + (" [cache reused]" if result.cache_reused else ""))
        report = evaluate_models(paths, data, size=size, count=count, progress=progress)
        for v, name in zip(report.variants, names):
            v.name = name or v.name
        # the files themselves: a report shows paths relative to where it is written
        int8 = [(v, path) for v, path in zip(report.variants, paths) if v.precision == "int8"]
        if sensitivity and int8:
            meta, _ = read_model_metadata(paths[0])
            feeds = load_calibration_set(Path(data) / "images", meta, count=4, size=report.size).feeds
            report.sensitivity = quantization_sensitivity(paths[0], int8[0][1], feeds, sensitivity)
            report.sensitivity_model = int8[0][0].name
    return report
