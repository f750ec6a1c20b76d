"""`msdeploy export bundle`: one folder to copy to a Jetson (or any target): the ONNX models with
their FP16/INT8 variants and metadata, the calibration cache, the project wheel for a runtime-only
install, a README for the board, and the one command that builds the engine there.

Engines are not portable across TensorRT versions or GPUs; the ONNX is. So the bundle carries ONNX
and the build settings, and the engine is built on the device. The folder is assembled beside its
destination and renamed into place only when complete.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from calibration.quantize import CALIBRATION_IMAGES, CALIBRATION_METHOD
from calibration.verified import fp32_source
from export.boards import DEFAULT_BOARD, board, format_bytes
from runtime.errors import UserError
from runtime.files import move_dir_into_place, sha256_file, write_bytes_atomic, write_json_atomic
from runtime.metadata import PRECISIONS, model_sha256, sidecar_path
from runtime.tensorrt_common import format_shape

BUILD_SCRIPT = "build_engine.sh"
MANIFEST = "manifest.json"


@dataclass
class BundleOptions:
    model: Path  # an FP32 ONNX model written by `msdeploy export onnx`
    output: Path
    precisions: tuple[str, ...] = ()  # default: fp32, fp16, and int8 where calib_data is given
    engine_precision: str | None = None  # the variant build_engine.sh compiles [fp16 when bundled, else fp32]
    calib_data: Path | None = None
    calib_count: int = CALIBRATION_IMAGES
    method: str = CALIBRATION_METHOD
    weights: Path | None = None  # the checkpoint MODEL came from: the FP16 variant is checked against it
    batches: tuple[int, ...] = (1,)
    max_size: int | None = None  # largest image side (default 1024); lower it on 8 GB boards. Not for DLA
    board: str = DEFAULT_BOARD  # export.boards: the memory budget the build on the board checks
    workspace: str | None = None  # builder workspace limit written into the build command [the board's]
    dla_core: int | None = None
    wheel: bool = True
    command: str = ""
    force: bool = False


@dataclass
class BundleResult:
    path: Path
    files: list[dict] = field(default_factory=list)
    build_command: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _with_defaults(options: BundleOptions) -> BundleOptions:
    precisions = options.precisions or (PRECISIONS if options.calib_data else PRECISIONS[:2])
    engine = options.engine_precision or ("fp16" if "fp16" in precisions else "fp32")
    workspace = options.workspace or board(options.board).workspace
    return replace(options, precisions=tuple(precisions), engine_precision=engine, workspace=workspace)


def _check(options: BundleOptions) -> None:
    unknown = sorted(set(options.precisions) - set(PRECISIONS))
    if unknown:
        raise UserError(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    if "fp32" not in options.precisions:
        raise UserError("a bundle always carries the FP32 model (the reference and the source of the others)")
    if "int8" in options.precisions and options.calib_data is None:
        raise UserError("INT8 needs calibration images: pass --calib-data DIR, or leave int8 out of --precision")
    if options.engine_precision not in options.precisions:
        raise UserError(
            f"--engine-precision {options.engine_precision} is not among the bundled precisions "
            f"({', '.join(options.precisions)})"
        )
    chosen = board(options.board)
    if options.dla_core is not None and options.dla_core >= chosen.dla_cores:
        raise UserError(
            f"--dla-core {options.dla_core}: the {chosen.description} has {chosen.dla_cores} DLA core(s); "
            "drop --dla-core, or name the board with --board"
        )
    if options.dla_core is not None and options.max_size is not None:
        raise UserError(
            "--max-size does not apply to a DLA engine: DLA takes one fixed input size (the model's default); "
            "drop --max-size, or drop --dla-core for a GPU engine that takes a range of sizes"
        )
    fp32_source(options.model)  # the variants are made from the FP32 model
    output = options.output
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} is a file; give a folder")
    if output.is_dir() and any(output.iterdir()) and not options.force:
        raise UserError(f"output folder {output} is not empty; pass --force to replace it")


def _copy_model(source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copy2(source, target)
    shutil.copy2(sidecar_path(source), sidecar_path(target))
    return target


def create_bundle(options: BundleOptions, progress: Callable[[str], None] | None = None) -> BundleResult:
    """Assemble the bundle in a temporary folder beside `options.output`, then move it into place."""
    from export.tensorrt_build import DEFAULT_MAX_SIDE, EngineOptions, model_metadata, resolve_profile

    say = progress or (lambda message: None)
    options = _with_defaults(options)
    _check(options)
    start = time.perf_counter()
    meta = model_metadata(options.model)
    batches = tuple(sorted(set(options.batches)))
    if options.dla_core is not None:  # DLA takes one fixed shape: the model's default size
        profile = resolve_profile(meta, EngineOptions(model=options.model, batches=batches, dla_core=options.dla_core))
    else:
        side = options.max_size or DEFAULT_MAX_SIDE
        largest = (batches[-1], 3, side, side)
        profile = resolve_profile(meta, EngineOptions(model=options.model, batches=batches, max_shape=largest))
    result = BundleResult(path=options.output)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{options.output.name}.", dir=options.output.parent))
    try:
        fp32 = _copy_model(options.model, folder)
        variants = {"fp32": fp32}
        for precision in ("fp16", "int8"):
            if precision in options.precisions:
                variants[precision] = _variant(options, fp32, precision, say, result.notes)
        if options.wheel:
            say("building the project wheel (runtime-only install on the board)")
            from export.project_wheel import build_project_wheel

            wheel = build_project_wheel(folder / "wheels").name
        else:
            wheel = None
        engine_model = variants[options.engine_precision]
        result.build_command = build_command(engine_model.name, profile, options)
        script = "#!/bin/sh\n" + BUILD_SCRIPT_BODY.format(command=result.build_command)
        write_bytes_atomic(folder / BUILD_SCRIPT, script.encode())
        (folder / BUILD_SCRIPT).chmod(0o755)
        readme = board_readme(meta, variants, engine_model.name, profile, options, wheel, result.build_command)
        write_bytes_atomic(folder / "README.md", readme.encode())
        result.files = [
            {"file": str(p.relative_to(folder)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
        write_json_atomic(
            folder / MANIFEST,
            {
                "format": "msdeploy-bundle/1",
                "command": options.command,
                "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "source_model": {"file": options.model.name, "sha256": model_sha256(options.model)},
                "backbone": meta.backbone,
                "fusion": meta.fusion,
                "variants": {k: v.name for k, v in variants.items()},
                "engine": {
                    "precision": options.engine_precision,
                    "profile": profile.as_dict(),
                    "workspace": options.workspace,
                    "board": options.board,
                    "dla_core": options.dla_core,
                    "command": result.build_command,
                },
                "files": result.files,
            },
        )
        move_dir_into_place(folder, options.output)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # still there only when something failed
    result.seconds = time.perf_counter() - start
    return result


def _variant(options: BundleOptions, fp32: Path, precision: str, say: Callable[[str], None], notes: list[str]) -> Path:
    """A variant made in the bundle folder; one already made from this FP32 model beside it is copied
    (its parity was checked when it was written), and so is its calibration cache."""
    from calibration.cache import default_cache_path
    from export.variants import Int8Settings, made_from, make_variant, variant_output

    int8 = Int8Settings("tensorrt", options.method, options.calib_count, options.calib_data)
    existing = variant_output(options.model, "fp16")
    if precision == "fp16" and made_from(existing, options.model, precision):
        notes.append(f"FP16: reused {existing} (made from this FP32 model; checked when it was written)")
        return _copy_model(existing, fp32.parent)
    if precision == "int8" and default_cache_path(options.model, options.method).is_file():
        # reused below only if its key matches this model and these images
        shutil.copy2(default_cache_path(options.model, options.method), default_cache_path(fp32, options.method))
    weights = str(options.weights) if options.weights else None
    made = make_variant(fp32, precision, weights=weights, int8=int8, force=True, say=say)
    if made.detail:
        notes.append(f"{precision.upper()}: {made.detail}")
    return made.path


def build_command(model_name: str, profile, options: BundleOptions) -> str:
    engine = model_name[: -len(".onnx")] + ".engine"
    parts = ["msdeploy", "export", "engine", model_name]
    if options.dla_core is None:
        parts += ["--min-shape", format_shape(profile.min), "--opt-shape", format_shape(profile.opt)]
        parts += ["--max-shape", format_shape(profile.max)]
    else:  # one fixed shape; a later --opt-shape on build_engine.sh's command line replaces it
        parts += ["--opt-shape", format_shape(profile.opt), "--dla-core", str(options.dla_core)]
    parts += ["--workspace", str(options.workspace), "--board", options.board]
    parts += ["--output", engine]
    return shlex.join(parts)


def trtexec_command(model_name: str, profile, options: BundleOptions) -> str:
    """The same build with NVIDIA's trtexec, for users who check with TensorRT's own tool."""
    from export.tensorrt_build import parse_size

    shape = "{}:{}".format
    parts = [
        "trtexec",
        f"--onnx={model_name}",
        f"--saveEngine={model_name[: -len('.onnx')]}.trtexec.engine",
        "--stronglyTyped",
        f"--minShapes={shape(profile.input, format_shape(profile.min))}",
        f"--optShapes={shape(profile.input, format_shape(profile.opt))}",
        f"--maxShapes={shape(profile.input, format_shape(profile.max))}",
        f"--memPoolSize=workspace:{parse_size(str(options.workspace)) >> 20}M",
    ]
    if options.dla_core is not None:
        parts += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    return shlex.join(parts)


BUILD_SCRIPT_BODY = """\
# Build the TensorRT engine for THIS device from the bundle's ONNX model. Engines are not portable
# across TensorRT versions or GPUs, so run this on the board itself (once; a timing cache is kept).
# Extra arguments go to `msdeploy export engine`, e.g. --force to rebuild.
set -eu
cd "$(dirname "$0")"
exec {command} "$@"
"""


def board_readme(
    meta, variants: dict[str, Path], engine_model: str, profile, options: BundleOptions, wheel: str | None, command: str
) -> str:
    engine = engine_model[: -len(".onnx")] + ".engine"
    chosen = board(options.board)
    models = "\n".join(
        f"| `{path.name}` | {precision} | {_describe(precision)} |" for precision, path in variants.items()
    )
    install = (
        f'pip install "wheels/{wheel}[jetson]"    # the board: Pillow, polygraphy; TensorRT comes with JetPack\n'
        f'pip install "wheels/{wheel}[runtime]"   # a CPU machine: ONNX Runtime instead of TensorRT'
        if wheel
        else 'pip install "multiscale-deploy[jetson]"  # from a source checkout of the project'
    )
    if options.dla_core is not None:
        sizes = (
            f"The engine runs on DLA core {options.dla_core}; layers the DLA cannot run fall back to the GPU. "
            f"DLA has no dynamic dimensions, so the engine takes one input shape, {format_shape(profile.opt)}; "
            "the runner resizes photos to it and refuses other sizes. For another size, rebuild with "
            f"`sh {BUILD_SCRIPT} --opt-shape 1x3x256x256 --force`. Workspace limit {options.workspace}."
        )
        bench_sizes = str(profile.opt[2])  # bench takes square sides; default sizes are square
    else:
        sizes = (
            f"Input sizes from {format_shape(profile.min)} to {format_shape(profile.max)} (optimised for "
            f"{format_shape(profile.opt)}); the runner refuses other sizes with the allowed range. The engine "
            "runs on the GPU. On Orin NX / AGX Orin, `--board orin-nx --dla-core 0` (or the AGX's board, core 1) "
            "when bundling offloads to a DLA, with GPU fallback, at one fixed size; Orin Nano has no DLA."
        )
        bench_sizes = "256,352"
    return f"""# {meta.backbone} {meta.fusion}: deploy bundle

The multi-scale camouflaged-object-detection network ({meta.backbone} backbone, {meta.fusion} fusion,
scales {", ".join(map(str, meta.scales))}), exported and checked against PyTorch on the desktop.
Engines are not portable across TensorRT versions or GPUs, so this folder carries ONNX models and
the engine is built here, on the device.

| file | precision | what |
| --- | --- | --- |
{models}

Every model has a `.json` sidecar (size rules, normalisation, how it was checked); keep it beside
the model. `manifest.json` lists every file with its sha256.

## 1. Install the runtime (no PyTorch, no ONNX)

```bash
python3 -m venv --system-site-packages venv   # system packages: JetPack's TensorRT bindings
. venv/bin/activate
{install}
```

## 2. Build the engine on this device

```bash
sh {BUILD_SCRIPT}
```

which runs

```bash
{command}
```

{sizes}

Memory: this bundle is for the {chosen.description} ({format_bytes(chosen.memory)} shared by CPU and
GPU). The build reads the engine's activation and weights memory from TensorRT's log and refuses an
engine that needs more than {format_bytes(chosen.budget)} (the board's budget, `--board {chosen.name}`),
before writing anything, with the figures and the fix: a smaller largest size (`--max-size` when
bundling, or `--max-shape` here) or batch. Builder workspace limit {options.workspace}. For another
board, bundle again with `--board`, or pass `--board NAME` / `--memory-budget SIZE` to this script.

The same build with TensorRT's own tool (its engine has no msdeploy sidecar; use it to cross-check):

```bash
{trtexec_command(engine_model, profile, options)}
```

## 3. Turn images into masks

```bash
msdeploy infer {engine} photos/ --output masks/      # NAME_mask.png and NAME_overlay.png per image
msdeploy infer {variants["fp32"].name} photos/ --output masks-cpu/   # the same on the CPU (ONNX Runtime)
msdeploy bench --models . --backends tensorrt --precision {options.engine_precision} --sizes {bench_sizes}
```

From Python:

```python
from runtime import Predictor

predictor = Predictor("{engine}")
result = predictor.predict("photo.jpg")
result.mask        # bool [H, W] at the photo's own size
result.overlay()   # the photo with the mask tinted on it
```
"""


def _describe(precision: str) -> str:
    return {
        "fp32": "the reference; ONNX Runtime on a CPU, or an FP32 engine",
        "fp16": "FP16 weights and compute, FP32 inputs and outputs (the Jetson default)",
        "int8": "INT8 Q/DQ from calibration (TensorRT layout); the calibration cache is beside it",
    }[precision]
