"""`msdeploy` entry point. Each command parses options and calls one library function.

Heavy libraries (torch, onnx) are imported inside the commands, so `msdeploy --help`, `info` and the
runtime commands work on a machine with only the runtime installed.
"""

from __future__ import annotations

import logging

import click

from msdeploy import __version__
from runtime.errors import UserError


class UserFacingError(click.ClickException):
    exit_code = 2


class Group(click.Group):
    """Turns our UserError into a one-line message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise UserFacingError(str(exc)) from None


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
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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
    "--fusion", "fusions", default="hierarchical,absi", show_default=True, help="Comma-separated fusion modes to show."
)
@click.option(
    "--sizes",
    default="256,320,352,416",
    show_default=True,
    callback=lambda c, p, v: _parse_ints(v),
    help="Comma-separated square input sizes.",
)
def demo(backbone: str, fusions: str, sizes: tuple[int, ...]) -> None:
    """The main job on the embedded default (CPU): build the network, show its parameters and the
    shapes it produces at the guide's input sizes."""
    from msdeploy.commands.model import run_demo

    run_demo(backbone, tuple(f.strip() for f in fusions.split(",") if f.strip()), sizes)


if __name__ == "__main__":
    main()
