"""PyTorch -> ONNX, one fusion mode at a time, verified against PyTorch before it is written.

Pipeline: build the network (exportable layers) -> a rewritten copy (export/rewrites.py; the
original is the parity reference) -> torch.onnx.export (dynamo, dynamic batch/H/W,
guards fail loudly instead of becoming silent runtime asserts) -> strip per-node debug metadata ->
ONNX checker (full) -> optional onnxslim -> ONNX Runtime vs PyTorch at sizes other than the
example's -> metadata -> atomic write of the model and its JSON sidecar. Anything that fails leaves
no file behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from calibration.verified import write_verified_model
from export.provenance import export_versions, weights_record
from export.rewrites import rewrite_for_export
from models import DEFAULT_BACKBONE, DEFAULT_FUSION, DEFAULT_SCALES, build_model
from models.checkpoint import state_sha256
from models.network import MultiScaleCODNet
from models.runner import TorchRunner, output_names
from models.scaling import MIN_SIDE
from runtime.compare import ParityReport
from runtime.errors import UserError, VerificationError
from runtime.metadata import ModelMetadata, check_model_output, sidecar_path

log = logging.getLogger("msdeploy")

INPUT_NAME = "image"
DEFAULT_OPSET = 20
EXAMPLE_SHAPE = (2, 3, 288, 320)  # batch > 1: an example batch of 1 silently fixes the batch to 1
# sizes unlike the example's: square, odd, non-square, the minimum side; batches 1 to 3
DYNAMIC_VERIFY_SHAPES = ((1, 3, 352, 352), (2, 3, 97, 131), (3, 3, 257, 190), (1, 3, 32, 48))


@dataclass
class ExportOptions:
    fusion: str = DEFAULT_FUSION
    backbone: str = DEFAULT_BACKBONE
    scales: Sequence[float] = DEFAULT_SCALES
    weights: str | Path | None = None
    output: str | Path | None = None
    opset: int = DEFAULT_OPSET
    static: tuple[int, int] | None = None  # fixed (H, W); batch stays dynamic
    features: bool = False  # also output the four fused feature maps
    simplify: bool = True  # onnxslim: a faster graph; verified after it runs like everything else
    rewrite: bool = True  # export/rewrites.py: same arithmetic, faster layout; verified like the rest
    force: bool = False
    seed: int = 0  # initialisation seed when no weights are given (recorded, so parity can rebuild)
    verify_shapes: Sequence[tuple[int, int, int, int]] | None = None

    def default_output(self) -> Path:
        stem = f"{self.backbone}_{self.fusion}"
        if self.static:
            stem += f"_{self.static[0]}x{self.static[1]}"
        return Path(f"{stem}.onnx")


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    metadata: ModelMetadata
    parity: ParityReport
    seconds: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0


class ExportGraph(nn.Module):
    """What goes into the ONNX file: image -> mask logits (and the fused features if asked)."""

    def __init__(self, net: MultiScaleCODNet, features: bool):
        super().__init__()
        self.net = net
        self.features = features

    def forward(self, image: torch.Tensor):
        if not self.features:
            return self.net(image)
        logits, fused = self.net.forward_features(image)
        return (logits, *fused)


def verification_shapes(static_size: Sequence[int] | None) -> list[tuple[int, int, int, int]]:
    """Input shapes unlike the export example's; for a static model, two batches at its size."""
    if static_size:
        return [(1, 3, *static_size), (3, 3, *static_size)]
    return list(DYNAMIC_VERIFY_SHAPES)


def _validate(options: ExportOptions) -> None:
    if options.static is not None:
        height, width = options.static
        if min(height, width) < MIN_SIDE:
            raise UserError(f"--static {height}x{width} is below the minimum size {MIN_SIDE}x{MIN_SIDE}")
    if not 17 <= options.opset <= 23:
        raise UserError(f"opset {options.opset} is not supported; use 17..23 (default {DEFAULT_OPSET})")


@contextlib.contextmanager
def _guards_fail_loudly() -> Iterator[None]:
    """Make the exporter raise when it would specialise a dynamic size, instead of turning the guard
    into a deferred runtime assert (docs/onnx-export.md). The flag is read from torch.onnx._flags at
    call time; where a torch version lacks it, verification at other sizes still catches the fault."""
    flags = getattr(torch.onnx, "_flags", None)
    name = "PREFER_DEFERRED_RUNTIME_ASSERTS_OVER_GUARDS"
    if flags is None or not hasattr(flags, name):
        yield
        return
    saved = getattr(flags, name)
    setattr(flags, name, False)
    try:
        yield
    finally:
        setattr(flags, name, saved)


def trace_to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    *,
    outputs: Sequence[str],
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = True,
):
    """torch.export (non-strict) with dynamic batch (and H, W), then ONNX translation.

    Dim.DYNAMIC lets torch.export narrow ranges where the graph needs it (size-1 feature maps below
    about 64 pixels add guards) but raises if a size would become a constant. We call torch.export
    ourselves so that a failure is reported, instead of torch.onnx silently falling back to slower
    capture strategies. The onnxscript optimizer is skipped: onnxslim gives a faster graph in a
    fraction of the optimizer's time (observed while developing, for pvt_v2_b0).
    """
    dynamic = torch.export.Dim.DYNAMIC
    dims = {0: dynamic, 2: dynamic, 3: dynamic} if dynamic_hw else {0: dynamic}
    with _guards_fail_loudly():
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=(dims,), strict=False)
        except Exception as exc:  # torch's own error types; a specialised size lands here
            raise VerificationError(
                "torch.export failed; a dynamic size was probably specialised in the graph: "
                f"{str(exc).splitlines()[0][:500]}"
            ) from exc
        # torch.onnx prints its phases to stdout; keep the CLI's output to our own progress lines
        with contextlib.redirect_stdout(io.StringIO()):
            return torch.onnx.export(
                program,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(outputs),
                opset_version=opset,
                external_data=False,
                optimize=False,
                verbose=False,
            )


def strip_debug_metadata(model) -> None:
    """Drop the exporter's per-node stack traces and class paths: megabytes nobody deploys."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for fn in model.functions:
        for node in fn.node:
            del node.metadata_props[:]
            node.doc_string = ""


def _simplify(model):
    """onnxslim, then merge identical initializers: slim folds Transpose(W) once per backbone call,
    which left three copies of every transposed weight (the file grew by more than half)."""
    import onnx_ir
    import onnxslim
    from onnx_ir.passes.common import DeduplicateHashedInitializersPass

    graph = onnx_ir.from_proto(onnxslim.slim(model))
    DeduplicateHashedInitializersPass()(graph)
    return onnx_ir.to_proto(graph)


def export_onnx(options: ExportOptions, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export, verify and write one model. Raises UserError for bad options, VerificationError when
    the exported model does not compute what PyTorch computes (then nothing is written)."""
    import onnx

    say = progress or (lambda msg: log.info(msg))
    _validate(options)
    output = check_model_output(options.output or options.default_output(), options.force)
    sidecar = sidecar_path(output)
    seconds: dict[str, float] = {}

    say(f"building {options.backbone} / {options.fusion}")
    torch.manual_seed(options.seed)
    net = build_model(options.backbone, options.fusion, options.scales, options.weights, exportable=True)
    exported_net, rewrites = rewrite_for_export(net) if options.rewrite else (net, {})
    if rewrites:
        say("rewrites for export: " + ", ".join(f"{name} x{n}" for name, n in rewrites.items()))
    module = ExportGraph(exported_net, options.features).eval()
    example = torch.randn(EXAMPLE_SHAPE[0], 3, *options.static) if options.static else torch.randn(*EXAMPLE_SHAPE)
    verify_shapes = [tuple(s) for s in (options.verify_shapes or verification_shapes(options.static))]

    say("exporting with torch.onnx (dynamo); this takes a minute or two")
    start = time.perf_counter()
    program = trace_to_onnx(
        module, example, outputs=output_names(options.features), opset=options.opset, dynamic_hw=not options.static
    )
    model = program.model_proto
    seconds["export"] = time.perf_counter() - start

    strip_debug_metadata(model)
    if options.simplify:
        say("simplifying with onnxslim")
        start = time.perf_counter()
        model = _simplify(model)
        seconds["simplify"] = time.perf_counter() - start
    say("checking the graph (onnx.checker, full)")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"the exported graph fails the ONNX checker: {exc}") from exc

    metadata = ModelMetadata(
        fusion=options.fusion,
        backbone=options.backbone,
        scales=list(net.scales),
        channels=list(net.multi_scale_processor.channels_list),
        outputs=output_names(options.features),
        input_name=INPUT_NAME,
        static_size=list(options.static) if options.static else None,
        opset=options.opset,
        weights={**weights_record(options.weights, options.seed), "state_sha256": state_sha256(net)},
        versions=export_versions(),
    )
    say(f"verifying with ONNX Runtime at {', '.join('x'.join(map(str, s)) for s in verify_shapes)}")
    start = time.perf_counter()
    parity, size = write_verified_model(
        model,
        metadata,
        output,
        TorchRunner(net, features=options.features),
        verify_shapes,
        sidecar_extra=lambda: {"export_seconds": _record(seconds, "verify", start), "export_rewrites": rewrites},
    )
    say(f"wrote {output} ({size / 1e6:.1f} MB) and {sidecar.name}")
    return ExportResult(output, sidecar, metadata, parity, seconds, size)


def _record(seconds: dict[str, float], phase: str, start: float) -> dict[str, float]:
    seconds[phase] = time.perf_counter() - start
    return seconds
