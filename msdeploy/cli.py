"""`msdeploy` entry point. Each command parses options and calls one library function.

Heavy libraries (torch, onnx) are imported inside the commands, so `msdeploy --help`, `info` and the
runtime commands work on a machine with only the runtime installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from msdeploy import __version__
from runtime.errors import MSDeployError


class ReportedError(click.ClickException):
    def __init__(self, exc: MSDeployError):
        super().__init__(str(exc))
        self.exit_code = exc.exit_code


class Group(click.Group):
    """Turns our errors into a one-line message (exit 2 for user errors, 1 for failed checks),
    never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MSDeployError as exc:
            raise ReportedError(exc) from None


def _parse_floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _parse_ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="msdeploy")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
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
@click.option("--backbone", default="pvt_v2_b2", show_default=True, help="timm backbone name.")
@click.option(
    "--scales",
    default="0.5,1.0,1.5",
    show_default=True,
    callback=lambda c, p, v: _parse_floats(v),
    help="Comma-separated scales, must contain 1.0.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def params(backbone: str, scales: tuple[float, ...], as_json: bool) -> None:
    """Parameter count per component, beside the guide's claims."""
    from msdeploy.commands.model import show_params

    show_params(backbone, scales, as_json)


@main.command()
@click.option("--backbone", default="pvt_v2_b0", show_default=True, help="timm backbone name.")
@click.option(
    "--fusion", "fusions", default="hierarchical,absi", show_default=True, help="Comma-separated fusion modes."
)
@click.option(
    "--sizes",
    default="256,320,352,416",
    show_default=True,
    callback=lambda c, p, v: _parse_ints(v),
    help="Comma-separated square input sizes.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Where the demo writes its models (reused on the next run).",
)
@click.option("--force", is_flag=True, help="Export again even if the demo folder holds the models.")
def demo(backbone: str, fusions: str, sizes: tuple[int, ...], output_dir: Path, force: bool) -> None:
    """The main job on the embedded default (CPU, ONNX Runtime): build the network, show its
    parameters and output shapes, export both fusion modes to ONNX and check them against PyTorch."""
    from msdeploy.commands.model import run_demo

    names = tuple(f.strip() for f in fusions.split(",") if f.strip())
    if not run_demo(backbone, names, sizes, output_dir, force):
        raise SystemExit(1)


def _parse_sizes(value: str) -> tuple[tuple[int, int], ...]:
    """'256,320x240' -> ((256, 256), (320, 240))."""
    sizes = []
    for item in (v.strip().lower() for v in value.split(",") if v.strip()):
        try:
            h, _, w = item.partition("x")
            sizes.append((int(h), int(w or h)))
        except ValueError:
            raise click.BadParameter(f"expected sizes like 352 or 320x240, got {item!r}") from None
    return tuple(sizes)


def _parse_hw(ctx, param, value: str | None) -> tuple[int, int] | None:
    return None if value is None else _parse_sizes(value)[0]


FUSION_CHOICES = ("hierarchical", "absi", "concat", "average")


@main.group()
def export() -> None:
    """Export the network: ONNX models (and, later, engines, bundles, Triton repositories)."""


@export.command("onnx")
@click.option("--fusion", type=click.Choice(FUSION_CHOICES), default="hierarchical", show_default=True)
@click.option("--backbone", default="pvt_v2_b2", show_default=True, help="timm backbone name.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint of the network (ours or the original).")
@click.option("--scales", default="0.5,1.0,1.5", show_default=True, callback=lambda c, p, v: _parse_floats(v))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file [default: BACKBONE_FUSION.onnx].")
@click.option("--opset", type=int, default=20, show_default=True, help="ONNX opset.")
@click.option("--static", callback=_parse_hw, metavar="HxW", help="Fix the spatial size (batch stays dynamic).")
@click.option("--features", is_flag=True, help="Also output the four fused feature maps.")
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Simplify with onnxslim.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def export_onnx_cmd(fusion, backbone, weights, scales, output, opset, static, features, simplify, force) -> None:
    """Export the network to ONNX (dynamic batch, height and width), verified against PyTorch with
    ONNX Runtime at several sizes before anything is written."""
    from export.onnx_export import ExportOptions
    from msdeploy.commands.export_cmds import run_export_onnx

    run_export_onnx(
        ExportOptions(
            fusion=fusion,
            backbone=backbone,
            scales=scales,
            weights=weights,
            output=output,
            opset=opset,
            static=static,
            features=features,
            simplify=simplify,
            force=force,
        )
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--sizes",
    default="256,320,352,416",
    show_default=True,
    callback=lambda c, p, v: _parse_sizes(v),
    help="Input sizes: 352 or HxW, comma-separated.",
)
@click.option(
    "--batch",
    "batches",
    default="1,2",
    show_default=True,
    callback=lambda c, p, v: _parse_ints(v),
    help="Batch sizes, comma-separated.",
)
@click.option("--weights", type=click.Path(dir_okay=False), help="The checkpoint the model was exported from.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def parity(model, sizes, batches, weights, as_json) -> None:
    """Run MODEL and the PyTorch network on the same inputs; per output and size: errors, cosine,
    the smallest tolerance that passes, PASS/FAIL. Exit code 1 on FAIL."""
    from msdeploy.commands.export_cmds import run_parity

    if not run_parity(model, sizes, batches, weights, as_json):
        raise SystemExit(1)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--precision",
    type=click.Choice(["fp16"]),
    required=True,
    help="Target precision, written into the graph (INT8 with calibration: not yet).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file [default: MODEL.PRECISION.onnx].")
@click.option("--weights", type=click.Path(dir_okay=False), help="The checkpoint MODEL was exported from.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def quantize(model, precision, output, weights, force) -> None:
    """Write a lower-precision ONNX model (FP32 inputs and outputs), checked against PyTorch before
    it is written. TensorRT and ONNX Runtime run the precision the graph carries."""
    from msdeploy.commands.export_cmds import run_quantize

    run_quantize(model, precision, output, weights, force)


if __name__ == "__main__":
    main()
