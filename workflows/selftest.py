"""The GPU self-test (`msdeploy selftest --gpu`): the one run that verifies the TensorRT path on real hardware.

For each fusion mode: export the demo checkpoint to ONNX, write its FP16 and INT8 (Q/DQ) variants,
build an engine of each (strongly typed: precision from the graph) with every NVIDIA builder installed
(TensorRT, TensorRT-RTX) and, where the installed TensorRT still has them (10.x, e.g. Jetson), the
legacy builds from the FP32 ONNX (FP16 builder flag, implicit INT8 calibrator). A TensorRT-RTX engine
runs only on the GPUs it builds for (RTX-class, compute capability 7.5 to 12.x); elsewhere its row says
it was built and not run. On each engine: parity against PyTorch; held-out synthetic images turned into masks
with `runtime.Predictor` (what `msdeploy infer` does on a board) and compared with PyTorch's; timing
(GPU compute from CUDA events, and end to end with copies). The report goes to docs/results/.
Nothing here can run without TensorRT and a GPU; it says so and exits 2.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.tables import Table
from runtime.timing import time_interleaved

SHAPES = [(1, 3, 352, 352), (2, 3, 320, 320), (1, 3, 257, 190)]
LATENCY_SHAPE = (1, 3, 352, 352)
MASK_IMAGE_SIZES = ((352, 352), (300, 400), (480, 360), (240, 320))  # images of their own sizes, as a user's


@dataclass
class SelftestRow:
    builder: str  # "TensorRT 10.3.0", "TensorRT-RTX 1.7.1.116"
    fusion: str
    precision: str
    engine: str
    parity_passed: bool
    max_abs: float | None  # None where the engine did not run
    min_cosine: float | None
    mask_iou_min: float | None  # engine masks (runtime.Predictor) against PyTorch's, worst image
    gpu_ms_median: float | None
    end_to_end_ms_median: float | None
    build_seconds: float
    ran: bool = True  # False: built, but this GPU is not one the builder targets (TensorRT-RTX on a data-center GPU)


def _require_gpu_stack():
    """The TensorRT modules installed (TensorRT first) and the GPU; each refused with a UserError that says why."""
    from runtime import tensorrt_common
    from runtime.cuda import CudaApi

    targets = tensorrt_common.installed_targets()
    if not targets:
        tensorrt_common.import_tensorrt()  # refuses with how to install
    return [tensorrt_common.import_tensorrt(t) for t in targets], CudaApi().device()


@dataclass(frozen=True)
class EngineVariant:
    label: str  # the report's precision column
    model: Path  # the ONNX the engine is built from
    requested: str | None  # --precision for build_engine (None: the graph's own)
    tolerance: str  # the precision whose parity tolerances apply
    output: Path


def engine_variants(features, work: Path, fusion: str, fp32: Path, fp16: Path, int8: Path) -> list[EngineVariant]:
    """The graph-precision engines everywhere; the legacy builder-flag / calibrator builds only where
    this TensorRT has them, so a Jetson's selftest also checks the fallback it would use."""
    stem = work / f"{fp32.stem}.{features.target}"
    variants = [
        EngineVariant("fp32", fp32, None, "fp32", Path(f"{stem}.engine")),
        EngineVariant("fp16", fp16, None, "fp16", Path(f"{stem}.fp16.engine")),
        EngineVariant("int8", int8, None, "int8", Path(f"{stem}.int8.engine")),
    ]
    if features.weak_fp16:
        variants.append(EngineVariant("fp16 (builder flag)", fp32, "fp16", "fp16", Path(f"{stem}.flag-fp16.engine")))
    if features.implicit_int8:
        variants.append(
            EngineVariant("int8 (implicit calibrator)", fp32, "int8", "int8", Path(f"{stem}.implicit-int8.engine"))
        )
    return variants


def _time_engine(runner, iterations: int, warmup: int) -> tuple[float, float]:
    """Median GPU ms (CUDA events around execution) and end-to-end ms (with copies), from the same calls."""
    x = np.random.default_rng(0).standard_normal(LATENCY_SHAPE, dtype=np.float32)
    gpu: list[float] = []

    def run() -> None:
        runner.infer(x)
        gpu.append(runner.last_gpu_ms)

    wall = time_interleaved({"engine": run}, warmup=warmup, iterations=iterations)["engine"]
    return float(np.median(gpu[warmup:])), wall.median_ms


def mask_agreement(runner, net, sizes=MASK_IMAGE_SIZES) -> float:
    """The worst IoU between the masks `runtime.Predictor` makes with `runner` and PyTorch's masks
    (logits resized by torch, antialiased bilinear) on held-out synthetic images."""
    from calibration.metrics import mask_iou
    from calibration.synthetic import make_sample
    from export.parity import reference_probability
    from models.demo_weights import HELD_OUT_SEED
    from runtime import Predictor

    predictor = Predictor(runner)
    rng = np.random.default_rng(HELD_OUT_SEED)
    worst = 1.0
    for size in sizes:
        sample = make_sample(rng, size)
        mask = predictor.predict(sample.image).mask
        want = reference_probability(net, sample.image, predictor.metadata) >= 0.5
        worst = min(worst, mask_iou(mask, want))
    return worst


@dataclass
class SelftestResult:
    rows: list[SelftestRow]
    table: Table  # the engines, as printed and as written into the report
    report: Path  # the Markdown report (the JSON lies beside it)
    gpu: str

    @property
    def ran(self) -> bool:
        """False where no engine could run on this GPU: nothing was verified."""
        return any(r.ran for r in self.rows)

    @property
    def passed(self) -> bool:
        return self.ran and all(r.parity_passed for r in self.rows if r.ran)


def run_selftest(
    work: Path,
    output_dir: Path,
    fusions: tuple[str, ...],
    iterations: int,
    command: str,
    cuda_graphs: bool,
    say: Callable[[str], None] = print,
) -> SelftestResult:
    """Build, check and time every engine this machine can build (see the module text); write the
    report into `output_dir` and return it."""
    from calibration.synthetic import synthetic_calibration_images
    from export.tensorrt_build import EngineOptions, build_engine
    from export.variants import Int8Settings, export_fp32, make_variants
    from models.demo_weights import DEMO_BACKBONE as SELFTEST_BACKBONE
    from models.demo_weights import demo_checkpoint
    from runtime.backends import open_runner
    from runtime.compare import run_parity
    from runtime.environment import stamp
    from runtime.files import write_bytes_atomic, write_json_atomic
    from runtime.tensorrt_backend import TensorRTRunner
    from runtime.tensorrt_common import TensorRTFeatures, format_shape

    modules, device = _require_gpu_stack()
    work.mkdir(parents=True, exist_ok=True)
    calib = synthetic_calibration_images(work / "calibration", Int8Settings().images)
    rows: list[SelftestRow] = []
    with contextlib.ExitStack() as stack:
        for fusion in fusions:
            weights = demo_checkpoint(fusion)
            fp32 = export_fp32(work / f"{SELFTEST_BACKBONE}_{fusion}.onnx", SELFTEST_BACKBONE, fusion, weights, say=say)
            int8_settings = Int8Settings(calib_data=calib)
            made = make_variants(fp32, ("fp16", "int8"), weights=weights, int8=int8_settings, say=say)
            fp16, int8 = made["fp16"], made["int8"]
            # the network fp32 was exported from (closed when the ExitStack ends)
            reference = stack.enter_context(open_runner(fp32, "torch-cpu", weights=weights))
            for trt in modules:
                features = TensorRTFeatures.detect(trt)
                # TensorRT-RTX: for this GPU where it builds for it; otherwise its default set, built, not run
                runs = not features.compute_capabilities or device.compute_capability in features.compute_capabilities
                for variant in engine_variants(features, work, fusion, fp32, fp16, int8):
                    say(f"{fusion}: building the {variant.label} engine with {features.name}")
                    options = EngineOptions(
                        compute_capabilities=("current",) if runs and features.compute_capabilities else (),
                        model=variant.model,
                        precision=variant.requested,
                        max_shape=(2, 3, 1024, 1024),
                        calib_data=calib if variant.requested == "int8" else None,
                        replace_cache_of_old_export=True,  # fp32 is re-exported when the weights change
                        output=variant.output,
                        force=True,
                        target=features.target,
                    )
                    built = build_engine(options, progress=say, trt=trt)
                    row = [features.name, fusion, variant.label, built.path.name]
                    if not runs:
                        say(f"{features.name} does not build for {device.name}: built, not run")
                        rows.append(SelftestRow(*row, False, *[None] * 5, built.seconds, ran=False))
                        continue
                    with TensorRTRunner(str(built.path), cuda_graphs=cuda_graphs, trt=trt) as runner:
                        report = run_parity(runner, reference, SHAPES, precision=variant.tolerance)
                        mask_iou = mask_agreement(runner, reference.module)
                        gpu_ms, wall_ms = _time_engine(runner, iterations, warmup=10)
                    rows.append(
                        SelftestRow(
                            *row,
                            report.passed,
                            max(r.agreement.max_abs for r in report.rows),
                            min(r.agreement.cosine for r in report.rows),
                            mask_iou,
                            gpu_ms,
                            wall_ms,
                            built.seconds,
                        )
                    )
    header = ["builder", "fusion", "precision", "parity vs PyTorch", "max abs", "min cosine"]
    header += ["mask IoU vs PyTorch (worst image)", "GPU ms", "end-to-end ms", "build s"]
    table = [
        [
            r.builder,
            r.fusion,
            r.precision,
            ("PASS" if r.parity_passed else "FAIL") if r.ran else "built, not run on this GPU",
            *(
                (f"{r.max_abs:.3g}", f"{r.min_cosine:.6f}", f"{r.mask_iou_min:.4f}")
                + (f"{r.gpu_ms_median:.3f}", f"{r.end_to_end_ms_median:.3f}")
                if r.ran
                else ("-",) * 5
            ),
            f"{r.build_seconds:.0f}",
        ]
        for r in rows
    ]
    builders = ", ".join(dict.fromkeys(r.builder for r in rows))
    engines = Table(f"{builders} on {device.name}", header, table)
    slug = re.sub(r"[^a-z0-9]+", "-", device.name.lower()).strip("-")
    notes = (
        f"Latency at {format_shape(LATENCY_SHAPE)}, median of {iterations} runs: GPU ms from CUDA events "
        f"around execution only; end-to-end ms includes host-device copies. CUDA graphs: {cuda_graphs}.\n"
        f"Parity shapes: {', '.join(format_shape(s) for s in SHAPES)} ({SELFTEST_BACKBONE} demo checkpoint).\n"
        f"Masks: runtime.Predictor on the engine (as `msdeploy infer`) against PyTorch, held-out synthetic "
        f"images of {', '.join(f'{w}x{h}' for h, w in MASK_IMAGE_SIZES)}, threshold 0.5.\n"
    )
    md = [stamp(command), "", notes, engines.markdown()]
    output_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(output_dir / f"tensorrt-selftest-{slug}.md", ("\n".join(md) + "\n").encode())
    write_json_atomic(
        output_dir / f"tensorrt-selftest-{slug}.json",
        {"command": command, "builders": builders, "gpu": device.__dict__, "rows": [r.__dict__ for r in rows]},
    )
    return SelftestResult(rows, engines, output_dir / f"tensorrt-selftest-{slug}.md", device.name)
