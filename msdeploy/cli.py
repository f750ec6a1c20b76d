"""`msdeploy` entry point. Each command parses options and calls one library function.

Heavy libraries (torch, onnx) are imported inside the commands, so `msdeploy --help`, `info` and the
runtime commands work on a machine with only the runtime installed.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path

import click

# the libraries' vocabularies; all torch-free, so `msdeploy --help` runs on a runtime-only install
from calibration.int8 import FLOAT_PRECISIONS
from calibration.int8 import LAYOUTS as INT8_LAYOUTS
from calibration.int8 import METHODS as CALIBRATION_METHODS
from calibration.quantize import CALIBRATION_IMAGES, CALIBRATION_METHOD, CALIBRATION_SEED
from export.boards import BOARDS, DEFAULT_BOARD
from msdeploy import __version__
from runtime.backends import AUTO, BACKENDS, FILE_BACKENDS
from runtime.backends import FAMILIES as BACKEND_FAMILIES
from runtime.errors import MSDeployError, UserError
from runtime.metadata import FUSION_NAMES, PRECISIONS, RUN_PRECISIONS
from runtime.openvino_backend import INFERENCE_PRECISIONS
from runtime.tensorrt_common import TARGETS as TENSORRT_TARGETS
from serving.model_repository import INSTANCE_KINDS, TRITON_BACKENDS
from workflows.train_config import TrainConfig

# the [export] extra's modules: a command that needs one on a runtime-only install says which extra to add
# fmt: off
DESKTOP_MODULES = {
    "torch", "timm", "onnx", "onnxscript", "onnxslim", "onnxconverter_common", "safetensors", "py_sod_metrics",
}
# fmt: on


class ReportedError(click.ClickException):
    def __init__(self, exc: MSDeployError):
        super().__init__(str(exc))
        self.exit_code = exc.exit_code


class Group(click.Group):
    """Turns our errors into a one-line message (exit 2 for user errors, 1 for failed checks),
    never a traceback."""

    invocation_args: list[str] = []

    def main(self, args=None, *rest, **kwargs):
        # remembered for the "command:" line of generated reports (CliRunner passes args, a shell sys.argv)
        Group.invocation_args = list(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, **kwargs)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MSDeployError as exc:
            raise ReportedError(exc) from None
        except ModuleNotFoundError as exc:
            if exc.name not in DESKTOP_MODULES:
                raise
            raise ReportedError(
                UserError(
                    f"this command needs {exc.name}, which the runtime-only install leaves out: "
                    "pip install 'multiscale-deploy[export]' (on a board, run infer, bench --models and "
                    "export engine with the exported models instead)"
                )
            ) from None


def invocation() -> str:
    """The command line that is running, as a user would type it."""
    return " ".join(["msdeploy", *(shlex.quote(a) for a in Group.invocation_args)])


def _size(item: str) -> tuple[int, int]:
    """'352' -> (352, 352); '320x240' -> (320, 240)."""
    h, _, w = item.lower().partition("x")
    return int(h), int(w or h)


class CommaList(click.ParamType):
    """The one way the CLI reads a comma list: '256,320' -> (256, 320), each item converted by `item`
    (a ValueError names the option and what was expected)."""

    name = "list"

    def __init__(self, item=str, expected: str = "names") -> None:
        self.item, self.expected = item, expected

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(v.strip()) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"expected comma-separated {self.expected}, got {value!r}", param, ctx)


NAMES = CommaList()
INTS = CommaList(int, "integers")
FLOATS = CommaList(float, "numbers")
SIZES = CommaList(_size, "sizes like 352 or 320x240")
FILE = click.Path(dir_okay=False, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)
FUSION_OPTION = click.option("--fusion", type=click.Choice(FUSION_NAMES), default="hierarchical")
FUSIONS_OPTION = click.option(
    "--fusion", "fusions", type=NAMES, default="hierarchical,absi", help="Comma-separated fusion modes."
)
INFERENCE_PRECISION_OPTION = click.option(
    "--inference-precision",
    type=click.Choice(INFERENCE_PRECISIONS),
    help="openvino-cpu: the precision floats run in; auto = bf16 where the CPU has AVX-512 BF16 or AMX, else f32.",
)


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}
)
@click.version_option(__version__, "--version", prog_name="msdeploy")
@click.option("-v", "--verbose", count=True, show_default=False, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Ship the multi-scale camouflaged-object-detection network: export, quantize, compile, run
    and measure it on CPUs, GPUs, Jetson boards and inference servers."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("msdeploy").setLevel(logging.WARNING - 10 * min(verbose, 2))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """Versions, CPU/GPU, and which backends can run on this machine."""
    from msdeploy.commands.info import show_info

    show_info(as_json)


@main.command()
@click.option("--backbone", default="pvt_v2_b2", help="timm backbone name.")
@click.option("--scales", default="0.5,1.0,1.5", type=FLOATS, help="Comma-separated scales, must contain 1.0.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def params(backbone: str, scales: tuple[float, ...], as_json: bool) -> None:
    """Parameter count per component, beside the guide's claims."""
    from msdeploy.commands.model import show_params

    show_params(backbone, scales, as_json)


@main.command()
@click.option("--backbone", default="pvt_v2_b0", help="timm backbone name.")
@FUSIONS_OPTION
@click.option("--sizes", default="256,320,352,416", type=INTS, help="Comma-separated square input sizes.")
@click.option(
    "--output-dir",
    type=FOLDER,
    default=Path("demo-output"),
    help="Where the demo writes its models (reused on the next run).",
)
@click.option("--force", is_flag=True, help="Export again even if the demo folder holds the models.")
@click.option("--random-init", is_flag=True, help="Random weights instead of the packaged demo checkpoint.")
def demo(backbone: str, fusions: str, sizes: tuple[int, ...], output_dir: Path, force: bool, random_init: bool) -> None:
    """The main job on the embedded default (CPU, ONNX Runtime): build the network, show its
    parameters and output shapes, export both fusion modes to ONNX (with the packaged demo checkpoint,
    trained on synthetic camouflage images) and check them against PyTorch."""
    from msdeploy.commands.model import run_demo_command
    from workflows.demo import DemoOptions

    if not run_demo_command(DemoOptions(backbone, fusions, sizes, output_dir, force, random_init)):
        raise SystemExit(1)


def _parse_hw(ctx, param, value: str | None) -> tuple[int, int] | None:
    return None if value is None else SIZES.convert(value, param, ctx)[0]


@main.group()
def export() -> None:
    """Export the network: ONNX models and TensorRT engines."""


@export.command("onnx")
@FUSION_OPTION
@click.option("--backbone", default="pvt_v2_b2", help="timm backbone name.")
@click.option("--weights", type=FILE, help="Checkpoint of the network (ours or the original).")
@click.option("--scales", default="0.5,1.0,1.5", type=FLOATS)
@click.option("-o", "--output", type=FILE, help="Output file [default: BACKBONE_FUSION.onnx].")
@click.option("--opset", type=int, default=20, help="ONNX opset.")
@click.option("--static", callback=_parse_hw, metavar="HxW", help="Fix the spatial size (batch stays dynamic).")
@click.option("--features", is_flag=True, help="Also output the four fused feature maps.")
@click.option("--simplify/--no-simplify", default=True, help="Simplify with onnxslim.")
@click.option(
    "--rewrite/--no-rewrite",
    default=True,
    help="Export a rewritten copy that runs faster (channels-first PVT MLPs, BatchNorm folded); "
    "still checked against the original model.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def export_onnx_cmd(**options) -> None:
    """Export the network to ONNX (dynamic batch, height and width), verified against PyTorch with
    ONNX Runtime at several sizes before anything is written."""
    from export.onnx_export import ExportOptions
    from msdeploy.commands.export_cmds import run_export_onnx

    run_export_onnx(ExportOptions(**options))


def _library_parser(name: str):
    """A click callback around a parser of export.tensorrt_build (imported when used: torch-free)."""

    def parse(ctx, param, value: str | None):
        from export import tensorrt_build

        try:
            return None if value is None else getattr(tensorrt_build, name)(value)
        except MSDeployError as exc:
            raise click.BadParameter(str(exc)) from None

    return parse


_parse_shape, _parse_bytes = _library_parser("parse_shape"), _library_parser("parse_size")


def _profile_batch_option(help_text: str):
    """--batch for the commands that lay out a TensorRT optimization profile."""
    return click.option("--batch", "batches", default="1", type=INTS, help=help_text)


def _parse_compute_capabilities(ctx, param, value: str | None) -> tuple[str, ...]:
    """'8.6,8.9,12.0' (or 'current') -> ('8.6', '8.9', '12.0'); checked against the builder later."""
    names = NAMES.convert(value or "", param, ctx)
    bad = [n for n in names if n != "current" and not re.fullmatch(r"\d+\.\d", n)]
    if bad:
        raise click.BadParameter(f"expected compute capabilities like 8.6,8.9,12.0 or 'current', got {bad[0]!r}")
    return names


def _board_option(help_text: str, default: str | None = None):
    return click.option("--board", type=click.Choice(list(BOARDS)), default=default, help=help_text)


@export.command("engine")
@click.argument("model", type=FILE)
@click.option(
    "--target",
    type=click.Choice(list(TENSORRT_TARGETS)),
    help="Which NVIDIA builder: tensorrt (the GPU of this machine, Jetson) or tensorrt-rtx (RTX GPUs; builds "
    "without a GPU) [default: what is installed, TensorRT first].",
)
@click.option(
    "--compute-capability",
    "compute_capabilities",
    callback=_parse_compute_capabilities,
    metavar="LIST",
    help="tensorrt-rtx: the GPUs the engine runs on, e.g. 8.6,8.9,12.0 (7.5 for Turing), or 'current' "
    "[default: the builder's set, 8.6, 8.9, 12.0, 12.1].",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="Default: the ONNX's own (FP16 casts / Q/DQ are built strongly typed). fp16/int8 on an FP32 ONNX "
    "use TensorRT 10's builder flag / implicit calibrator where they exist.",
)
@click.option("--min-shape", callback=_parse_shape, metavar="BxCxHxW", help="Profile minimum [1x3x128x128].")
@click.option("--opt-shape", callback=_parse_shape, metavar="BxCxHxW", help="Profile optimum [1x3xdefault size].")
@click.option("--max-shape", callback=_parse_shape, metavar="BxCxHxW", help="Profile maximum [Bx3x1024x1024].")
@_profile_batch_option("Batch sizes the default profile covers.")
@_board_option("Jetson board the engine is for: its memory budget.")
@click.option(
    "--memory-budget",
    callback=_parse_bytes,
    metavar="SIZE",
    help="Most memory the engine may take (activations + weights, as the builder states them), e.g. 3G; "
    "an engine over it is refused [default: the --board's, else a share of this GPU's memory].",
)
@click.option("--report", is_flag=True, help="Also write ENGINE.report.md/.json: per-layer precision, warnings.")
@click.option("--timing-cache", type=FILE, help="tensorrt: [default: msdeploy.timing-cache beside the engine]")
@click.option("--workspace", callback=_parse_bytes, metavar="SIZE", help="Builder workspace limit, e.g. 4G.")
@click.option("--opt-level", type=click.IntRange(0, 5), help="Builder optimization level (TensorRT default 3).")
@click.option(
    "--dla-core", type=int, help="Run on this DLA core (Jetson) at one fixed input shape, GPU fallback for the rest."
)
@click.option("--calib-data", type=FOLDER, help="Images for implicit INT8 (TensorRT 10).")
@click.option("--calib-count", type=int, default=CALIBRATION_IMAGES)
@click.option("--calib-cache", type=FILE, help="Implicit INT8 cache [MODEL.onnx.calib-...].")
@click.option("--recalibrate", is_flag=True, help="Replace the implicit INT8 cache.")
@click.option("-o", "--output", type=FILE, help="Engine file [default: MODEL.engine].")
@click.option("--force", is_flag=True, help="Overwrite an existing engine.")
def export_engine_cmd(model: Path, **options) -> None:
    """Build a TensorRT or TensorRT-RTX engine from an ONNX model of ours, with a JSON sidecar (builder
    and version, GPU or compute capabilities, precision, profile, memory, ONNX sha256, settings).
    TensorRT: build it on the machine that runs it. TensorRT-RTX: builds here even without a GPU."""
    from export.tensorrt_build import EngineOptions
    from msdeploy.commands.tensorrt_cmds import run_build_engine

    run_build_engine(EngineOptions(model=model, command=invocation(), **options))


@export.command("bundle")
@click.argument("model", type=FILE)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The bundle folder to write.")
@click.option(
    "--precision",
    "precisions",
    type=NAMES,
    default=None,
    help="Comma-separated variants [default: fp32,fp16, plus int8 with --calib-data].",
)
@click.option(
    "--engine-precision",
    type=click.Choice(PRECISIONS),
    help="The variant build_engine.sh compiles on the board [default: fp16 when bundled, else fp32].",
)
@click.option("--calib-data", type=FOLDER, help="INT8: calibration images.")
@click.option("--calib-count", type=int, default=CALIBRATION_IMAGES, help="INT8: images used.")
@click.option("--method", type=click.Choice(CALIBRATION_METHODS), default=CALIBRATION_METHOD)
@click.option("--weights", type=FILE, help="The checkpoint MODEL was exported from (FP16 check).")
@_profile_batch_option("Batch sizes the engine profile covers.")
@click.option(
    "--max-size",
    type=int,
    help="Largest image side [1024]; lower it on 8 GB boards. A DLA engine takes one size, the model's default.",
)
@_board_option("The board the bundle is for: its memory budget and workspace.", default=DEFAULT_BOARD)
@click.option("--workspace", help="Builder workspace limit for the board [default: the board's].")
@click.option(
    "--dla-core", type=int, help="Build for this DLA core (Orin NX/AGX) at one fixed size, with GPU fallback."
)
@click.option("--wheel/--no-wheel", default=True, help="Include the project wheel.")
@click.option("--force", is_flag=True, help="Replace an output folder that is not empty.")
def export_bundle_cmd(workspace, **options) -> None:
    """One folder to copy to a Jetson or server: MODEL (an FP32 ONNX from `export onnx`) with FP16/INT8
    variants, metadata, calibration cache, the project wheel, a README for the board and
    build_engine.sh, the one command that builds the engine there (engines are not portable)."""
    from export.bundle import BundleOptions
    from msdeploy.commands.export_cmds import run_bundle

    if workspace is not None:
        _parse_bytes(None, None, workspace)  # a bad size fails here, not on the board
    run_bundle(BundleOptions(workspace=workspace, command=invocation(), **options))


@export.command("triton")
@click.argument("model", type=FILE)
@click.option("--repository", type=FOLDER, required=True, help="Triton model repository.")
@click.option("--name", help="Model name in the repository [default: the file's stem].")
@click.option(
    "--backend",
    type=click.Choice(TRITON_BACKENDS),
    default="native",
    help="native: the model itself (onnxruntime_onnx / tensorrt_plan), tensors in and out, for NGC containers; "
    "openvino: the ONNX model on Triton's OpenVINO backend (CPU servers; not loadable by the bundled server); "
    "python: our runtime in Triton's Python backend, encoded image in, mask out (serves on a CPU with "
    "`msdeploy serve`).",
)
@click.option("--max-batch-size", type=int, default=8, help="0 disables batching (native only).")
@click.option("--instances", type=int, default=1, help="Model instances (instance_group count).")
@click.option(
    "--kind",
    type=click.Choice(INSTANCE_KINDS),
    default="auto",
    help="Instance kind; auto: cpu for the OpenVINO backend and a Python-backend ONNX model, else gpu.",
)
@click.option("--dynamic-batching/--no-dynamic-batching", default=True)
@click.option("--queue-delay-us", type=int, default=100, help="Longest wait to form a dynamic batch.")
@click.option(
    "--python-env",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Python backend: the environment it runs in (EXECUTION_ENV_PATH) [default: this one].",
)
@click.option(
    "--server-python",
    is_flag=True,
    help="Python backend: run in the server's own Python (an NGC image with multiscale-deploy[runtime] installed).",
)
@click.option("--threads", type=int, help="Python and OpenVINO backends: CPU threads per instance.")
@click.option(
    "--inference-precision",
    type=click.Choice(("bf16",)),
    help="OpenVINO backend: bf16 sets HINT_BF16 [default: the server CPU's own (BF16 on AMX CPUs)].",
)
@click.option("--threshold", type=float, default=0.5, help="Python backend: mask threshold.")
@click.option("--force", is_flag=True, help="Replace a model of the same name in the repository.")
def export_triton_cmd(**options) -> None:
    """Add MODEL (an .onnx or TensorRT .engine of ours) to a Triton model repository: config.pbtxt
    (inputs and outputs from the model's metadata, checked against Triton's schema) and version 1.

    \b
    msdeploy export triton model.onnx --repository repo --name cod                  # NGC containers
    msdeploy export triton model.onnx --repository repo --name cod --backend python # msdeploy serve
    msdeploy export triton model.onnx --repository repo --name cod --backend openvino # CPU servers
    """
    from msdeploy.commands.export_cmds import run_export_triton
    from serving.model_repository import TritonOptions

    run_export_triton(TritonOptions(**options))


@main.command()
@click.option(
    "--repository",
    type=FOLDER,
    required=True,
    help="Model repository written by `msdeploy export triton --backend python`.",
)
@click.option("--http-port", type=int, default=8000)
@click.option("--grpc-port", type=int, default=8001)
@click.option(
    "--host",
    default="127.0.0.1",
    help="Address to listen on; loopback by default (put a proxy or load balancer in front to expose it).",
)
@click.option("--timeout", type=float, default=120.0, help="Seconds to wait for readiness.")
@click.option("--log-file", type=FILE, help="Keep the server's log here (appended to).")
@click.option("--log-verbose", type=int, default=0, help="Triton's log verbosity.")
def serve(timeout, **options) -> None:
    """Serve a model repository with the tritonserver bundled in nvidia-pytriton (CPU, Python backend)
    until Ctrl-C; stops cleanly, leaving no processes or shared memory behind.

    \b
    msdeploy export triton model.onnx --repository repo --name cod --backend python
    msdeploy serve --repository repo
    """
    from msdeploy.commands.serve import run_serve
    from serving.server import ServerOptions

    sys.exit(run_serve(ServerOptions(startup_timeout_s=timeout, **options)))


@main.command()
@click.argument("model", type=FILE)
@click.option("--sizes", default="256,320,352,416", type=SIZES, help="Input sizes: 352 or HxW, comma-separated.")
@click.option("--batch", "batches", default="1,2", type=INTS, help="Batch sizes, comma-separated.")
@click.option("--weights", type=FILE, help="The checkpoint the model was exported from.")
@click.option(
    "--backend",
    type=click.Choice((AUTO, *FILE_BACKENDS)),
    default="auto",
    help="What runs MODEL; auto: ONNX Runtime for .onnx, TensorRT for .engine.",
)
@INFERENCE_PRECISION_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def parity(model, sizes, batches, weights, backend, inference_precision, as_json) -> None:
    """Run MODEL and the PyTorch network on the same inputs; per output and size: errors, cosine,
    the smallest tolerance that passes, PASS/FAIL. Exit code 1 on FAIL. An FP32 model run in BF16
    (--backend openvino-cpu on a CPU with BF16) is judged with the BF16 tolerance."""
    from msdeploy.commands.export_cmds import run_parity

    if not run_parity(model, sizes, batches, weights, as_json, backend, inference_precision):
        raise SystemExit(1)


@main.command()
@click.argument("model", type=FILE)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS[1:]),
    required=True,
    help="Target precision, written into the graph (FP16 casts, or INT8 Q/DQ nodes from calibration).",
)
@click.option(
    "--calib-data", type=click.Path(path_type=Path), help="INT8: folder of calibration images (any format, any size)."
)
@click.option(
    "--method",
    type=click.Choice(CALIBRATION_METHODS),
    default=CALIBRATION_METHOD,
    help="INT8: how activation ranges are chosen from the calibration data.",
)
@click.option("--calib-count", type=int, default=CALIBRATION_IMAGES, help="INT8: images used (a seeded subset).")
@click.option(
    "--seed",
    type=int,
    default=CALIBRATION_SEED,
    help="INT8: seed of the calibration subset and of the activation values sampled from it.",
)
@click.option("--size", callback=_parse_hw, metavar="HxW", help="INT8: calibration input size [default: the model's].")
@click.option(
    "--exclude",
    multiple=True,
    metavar="PATTERN",
    help="INT8: node names (globs) left in FP32; repeat the option. See `msdeploy accuracy --sensitivity`.",
)
@click.option(
    "--quantize-attention/--float-attention",
    default=None,
    help="INT8: quantize the attention MatMuls (two activations) too: a few percent faster on a CPU, "
    "but they cost most of the mask agreement with FP32. Default: float.",
)
@click.option(
    "--target",
    type=click.Choice(tuple(INT8_LAYOUTS)),
    default="tensorrt",
    help="INT8 layout: TensorRT's (symmetric, Q/DQ on Conv/MatMul/Gemm inputs), ONNX Runtime CPU's "
    "fastest (uint8 activations), or OpenVINO's fastest (TensorRT's quantization, FP32 float layers, "
    "Q/DQ placed where OpenVINO fuses it).",
)
@click.option(
    "--high-precision",
    type=click.Choice(FLOAT_PRECISIONS),
    help="INT8: what the unquantized layers run in [default: fp16 for --target tensorrt (TensorRT's INT8 + "
    "FP16; FP32 islands cost TensorRT its fused attention and FP16's memory savings), fp32 for cpu "
    "and openvino].",
)
@click.option(
    "--calib-cache",
    type=FILE,
    help="INT8: calibration cache [default: MODEL.calib-METHOD.json]. Reused when it matches.",
)
@click.option("--recalibrate", is_flag=True, help="INT8: calibrate again and replace the cache.")
@click.option(
    "-o",
    "--output",
    type=FILE,
    help="Output file [default: MODEL.fp16.onnx, MODEL.int8.onnx, MODEL.int8-cpu.onnx, MODEL.int8-openvino.onnx].",
)
@click.option("--weights", type=FILE, help="FP16: the checkpoint MODEL was exported from.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def quantize(precision, exclude, high_precision, weights, **options) -> None:
    """Write a lower-precision ONNX model (FP32 inputs and outputs), checked before it is written:
    FP16 against PyTorch, INT8 against the FP32 model on calibration images. TensorRT and ONNX
    Runtime run the precision the graph carries."""
    from msdeploy.commands.precision_cmds import run_quantize_fp16, run_quantize_int8

    if precision == "fp16":
        run_quantize_fp16(options["model"], options["output"], weights, options["force"])
        return
    from calibration.quantize import Int8Options

    run_quantize_int8(Int8Options(exclude=tuple(exclude), float_precision=high_precision, **options))


@main.command()
@click.argument("models", nargs=-1, required=True, type=FILE)
@click.option("--data", required=True, type=FOLDER, help="Folder with images/ and masks/ (same file names).")
@click.option("--size", callback=_parse_hw, metavar="HxW", help="Input size [default: the model's].")
@click.option("--count", type=int, help="Use the first N labelled images.")
@click.option(
    "--methods",
    type=NAMES,
    help="Also quantize the first model to INT8 with these calibration methods "
    "(comma-separated, e.g. entropy,max,percentile) and compare them; needs --calib-data.",
)
@click.option("--calib-data", type=FOLDER, help="Calibration images for --methods.")
@click.option("--target", type=click.Choice(tuple(INT8_LAYOUTS)), default="tensorrt", help="INT8 layout for --methods.")
@click.option(
    "--sensitivity", type=int, default=10, help="List the N quantized tensors with the lowest SQNR (0: skip)."
)
@click.option("--report", type=FILE, help="Also write the tables as Markdown (and JSON beside).")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
def accuracy(report, force, methods, **options) -> None:
    """FP32 vs FP16 vs INT8 on images with ground-truth masks: agreement with the FP32 model (max abs,
    cosine, SQNR, mask IoU, probability MAE), S-measure / E-measure / weighted F / MAE against the
    ground truth, the INT8 layers that cost most, and a comparison of calibration methods.
    The first MODEL is the FP32 reference."""
    from msdeploy.commands.precision_cmds import run_accuracy

    run_accuracy(report, force, invocation(), methods=methods or (), **options)


def _parse_pixels(ctx, param, value: str | None) -> int | None:
    """'50M' -> 50_000_000 pixels; 'none' lifts the limit."""
    if value is None or value.lower() == "none":
        return None
    text = value.strip().upper()
    try:
        return int(float(text[:-1]) * 1e6) if text.endswith("M") else int(text)
    except ValueError:
        raise click.BadParameter(f"expected a pixel count such as 50M, got {value!r}") from None


@main.command()
@click.argument("model", type=FILE)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default="masks", help="Folder for the masks and overlays."
)
@click.option("--threshold", type=float, default=0.5, help="Probability at which a pixel is in the mask.")
@click.option(
    "--size",
    callback=_parse_hw,
    metavar="HxW",
    help="Network input size [default: the model's; a fixed-shape engine's own].",
)
@click.option(
    "--backend",
    type=click.Choice((AUTO, *FILE_BACKENDS)),
    default="auto",
    help="auto: ONNX Runtime for .onnx (best provider installed), TensorRT for .engine; "
    "openvino-cpu: OpenVINO on an x86 CPU (extra [openvino]).",
)
@click.option("--threads", type=int, help="CPU threads (ONNX Runtime, OpenVINO) [default: all cores].")
@INFERENCE_PRECISION_OPTION
@click.option("--soft", is_flag=True, help="Write probability maps (grey levels) instead of binary masks.")
@click.option("--overlay/--no-overlay", default=True, help="Also write NAME_overlay.png.")
@click.option(
    "--max-pixels",
    callback=_parse_pixels,
    default="50M",
    help="Larger images are decoded at 1/2-1/8 scale (JPEG) or skipped, so memory stays bounded; 'none' lifts it.",
)
@click.option("--force", is_flag=True, help="Write into an output folder that is not empty.")
def infer(inputs, **options) -> None:
    """Turn images into masks: for every image in INPUTS (files or folders, searched recursively)
    write NAME_mask.png and NAME_overlay.png at the image's own size, and summary.json. MODEL is an
    exported .onnx or a TensorRT .engine; preprocessing follows its metadata. Unreadable files are
    reported and skipped."""
    from msdeploy.commands.infer import run_infer_command
    from runtime.inference_job import InferOptions

    code = run_infer_command(InferOptions(inputs=list(inputs), **options))
    if code:
        raise SystemExit(code)


@main.group()
def data() -> None:
    """Data sets: synthetic camouflage images with masks (for demos, tests and calibration)."""


@data.command("synth")
@click.argument("folder", type=FOLDER)
@click.option("--count", type=int, default=100)
@click.option("--size", callback=_parse_hw, default="352", metavar="HxW")
@click.option(
    "--seed", type=int, default=10000, help="10000 is the demo checkpoints' held-out set; training used other seeds."
)
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
def data_synth(folder, count, size, seed, force) -> None:
    """Write FOLDER/images/NNNN.png and FOLDER/masks/NNNN.png: camouflaged objects whose texture
    matches the background, soft edges, varied sizes and positions."""
    from calibration.synthetic import write_dataset
    from msdeploy.output import console

    write_dataset(folder, count, size=size, seed=seed, force=force)
    console.print(f"wrote {count} images and masks ({size[0]}x{size[1]}) to {folder}")


@main.command("train-demo")
@FUSION_OPTION
@click.option("--steps", type=int, default=TrainConfig.steps, help="Optimizer steps.")
@click.option("--batch", type=int, default=TrainConfig.batch, help="Images per step.")
@click.option(
    "--sizes", type=INTS, default=",".join(map(str, TrainConfig.sizes)), help="Square input sizes, one drawn per step."
)
@click.option("--lr", type=float, default=TrainConfig.lr, help="Peak learning rate (AdamW, cosine decay).")
@click.option(
    "--contrast-start",
    type=float,
    default=TrainConfig.contrast_start,
    help="Curriculum: the colour shift of the first steps, falling to the demo contrast.",
)
@click.option(
    "--curriculum", type=float, default=TrainConfig.curriculum, help="Fraction of the steps the curriculum lasts."
)
@click.option(
    "--hard-examples",
    type=click.IntRange(0),
    default=TrainConfig.hard_examples,
    help="Draw this many extra images per step and train on the batch with the highest loss (0: off).",
)
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Start from a demo checkpoint: all of it with the same fusion (more training), else all but the fusion units.",
)
@click.option("--held-out", type=int, default=TrainConfig.held_out, help="Held-out images scored at the end.")
@click.option("--seed", type=int, default=TrainConfig.seed)
@click.option("--threads", type=int, help="CPU threads [default: torch's].")
@click.option(
    "-o", "--output", type=FILE, help="Output .safetensors [default: the packaged demo checkpoint, models/weights/]."
)
@click.option("--resume", is_flag=True, help="Continue the unfinished run saved beside the output (OUTPUT.resume.pt).")
@click.option("--force", is_flag=True, help="Overwrite an existing checkpoint (and drop an unfinished run).")
def train_demo_cmd(output, force, resume, sizes, **config) -> None:
    """Train the small demo checkpoint (pvt_v2_b0) on synthetic camouflage images, on the CPU.
    Writes FP16 weights and a training log with held-out metrics; saves a resume point every
    few dozen steps, so a long run can be continued with --resume."""
    from msdeploy.commands.model import run_train_demo

    run_train_demo(TrainConfig(sizes=tuple(sizes), **config), output, force, resume)


@main.command()
@click.option("--gpu", is_flag=True, required=True, help="Verify the TensorRT path (needs TensorRT and a GPU).")
@FUSIONS_OPTION
@click.option("--work", type=FOLDER, default="selftest-work")
@click.option("--output", type=FOLDER, default="docs/results")
@click.option("--iters", type=int, default=200, help="Timed runs per engine.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=True)
def selftest(gpu, fusions, work, output, iters, cuda_graphs) -> None:
    """On a machine with TensorRT and a GPU (or a Jetson): build FP32/FP16/INT8 engines of the demo
    checkpoint for each fusion mode, check parity against PyTorch, time them, and write a report to
    docs/results/. Exit 1 if any parity check fails."""
    from msdeploy.output import console, print_markdown_table, progress_status
    from workflows.selftest import run_selftest

    with progress_status("selftest") as say:
        result = run_selftest(work, output, fusions, iters, invocation(), cuda_graphs, say=say)
    print_markdown_table(result.table)
    console.print(f"wrote {result.report} and .json")
    if not result.ran:
        console.print(f"[red]no engine could run on {result.gpu}[/]: nothing was verified")
    if not result.passed:
        raise SystemExit(1)


@main.command()
@click.option(
    "--backends",
    type=NAMES,
    default="torch-cpu,onnxruntime-cpu",
    help=f"Comma-separated: {', '.join(BACKENDS)}; {' and '.join(BACKEND_FAMILIES)} stand for all of theirs. "
    "What cannot run here is listed with the reason.",
)
@click.option(
    "--precision",
    "precisions",
    type=NAMES,
    default="fp32",
    help=f"Comma-separated: {', '.join(RUN_PRECISIONS)} (bf16: the FP32 model on openvino-cpu, floats in BF16).",
)
@FUSIONS_OPTION
@click.option("--sizes", type=INTS, default="256,320,352,416", help="Square input sides.")
@click.option("--batch", "batches", type=INTS, default="1", help="Comma-separated batch sizes.")
@click.option("--backbone", default="pvt_v2_b2", help="timm backbone (with --models: filter).")
@click.option("--weights", type=FILE, help="Checkpoint (default: random init; speed is the same).")
@click.option(
    "--models",
    type=FOLDER,
    help="Folder of exported models (.onnx, .engine with sidecars). Needed where PyTorch is not installed.",
)
@click.option(
    "--work",
    type=FOLDER,
    default=".msdeploy-bench",
    help="Where missing ONNX models are exported (needs PyTorch); reused by later runs.",
)
@click.option("--warmup", type=int, default=3, help="Untimed rounds first.")
@click.option("--iters", type=int, default=10, help="Timed rounds (each model once per round).")
@click.option("--min-time", type=float, help="Also keep timing until each model ran this many seconds.")
@click.option("--threads", type=int, help="CPU threads for PyTorch, ONNX Runtime and OpenVINO [default: all cores].")
@click.option("--tables/--no-tables", default=True, help="Parameter, GFLOPs and memory tables.")
@click.option("--output", type=FOLDER, help="Write bench-BACKBONE.md/.csv/.json/.png into this folder.")
@click.option("--detail", is_flag=True, help="Also print every statistic of every measurement.")
@click.option("--force", is_flag=True, help="Overwrite an existing report in --output.")
def bench(output, detail, force, iters, **options) -> None:
    """Latency tables across input sizes for every backend and precision that runs here, with the
    speed-up against PyTorch eager from the same interleaved run, plus the guide's integration,
    memory, parameter and complexity tables."""
    from bench.run import BenchOptions
    from msdeploy.commands.bench import run_bench_command

    bench_options = BenchOptions(iterations=iters, command=invocation(), **options)
    run_bench_command(bench_options, output, detail, force=force)


if __name__ == "__main__":
    main()
