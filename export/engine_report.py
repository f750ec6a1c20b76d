"""What the TensorRT parser and builder said about one build, read from their log: memory figures,
warnings, and the per-layer listing (engine layers, their types, the precision of what they read and
write, and the ONNX nodes each one runs). Written beside the engine as Markdown and JSON.

The listing's format is the builder's: TensorRT-RTX prints one line per layer ("Name: ..., LayerType:
..., Inputs: [...], Constants: [...], Outputs: [...], ..., Metadata: [ONNX Layer: ...]") when the
build asks for detailed profiling verbosity (checked here with the real TensorRT-RTX builder);
TensorRT prints "Layer(Type): name, Tactic: ..., in[Half(1,3,352,352)] -> out[Half(...)]" lines
(its verbose format as public build logs show it; unverified here, no TensorRT builder).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from export.boards import format_bytes
from runtime.files import write_bytes_atomic, write_json_atomic
from runtime.tables import Table

# the builder's INFO lines with the engine's memory, in bytes
_MEMORY_LINES = {
    "activation_bytes": r"Total Activation Memory: (\d+)",
    "weights_bytes": r"Total Weights Memory: (\d+)",
    "scratch_bytes": r"Max Scratch Memory: (\d+)",
    "device_persistent_bytes": r"Total Device Persistent Memory: (\d+)",
    "host_persistent_bytes": r"Total Host Persistent Memory: (\d+)",
}
# engine layer types that compute (as opposed to copies, casts, reshapes, stream signals), by part of
# the name: TensorRT-RTX's correlation/gemm/runtime_fusion, TensorRT's CaskConvolution,
# CudaDepthwiseConvolution, FusedConvActConvolution, MatrixMultiply, CaskGemm..., Myelin (a fused subgraph)
COMPUTE_KINDS = ("correlation", "gemm", "runtime_fusion", "Convolution", "Gemm", "MatrixMultiply", "Myelin")
_RTX_LAYER = re.compile(
    r"Name: (?P<name>.*?), LayerType: (?P<kind>\w+), Inputs: \[(?P<inputs>.*?)\], "
    r"Constants: \[(?P<weights>.*?)\], Outputs: \[(?P<outputs>.*?)\], TacticName: (?P<tactic>.*?), .*?Metadata: "
    r"(?P<meta>.*)$"
)
_TRT_LAYER = re.compile(r"Layer\((?P<kind>\w+)\): (?P<name>.*?), Tactic: (?P<tactic>\S+), (?P<io>.*)$")


@dataclass(frozen=True)
class EngineLayer:
    name: str
    kind: str
    inputs: tuple[str, ...]  # data types of the activations it reads
    weights: tuple[str, ...]  # data types of its constants (empty where the listing does not say)
    outputs: tuple[str, ...]
    onnx_nodes: tuple[str, ...]

    @property
    def fused_attention(self) -> bool:
        return "mha" in self.name.lower()

    @property
    def computes(self) -> bool:
        return any(kind in self.kind for kind in COMPUTE_KINDS) or self.fused_attention

    @property
    def precision(self) -> str:
        """What its arithmetic reads: the first activation's type, else its weights' ('-' if unknown)."""
        return (self.inputs or self.weights or ("-",))[0]


def parse_memory(infos: list[str]) -> dict[str, int | None]:
    """The engine's memory figures from the builder's INFO lines; None where a figure was not logged."""
    found: dict[str, int | None] = dict.fromkeys(_MEMORY_LINES)
    for line in infos:
        for key, pattern in _MEMORY_LINES.items():
            match = re.search(pattern, line)
            if match:
                found[key] = int(match[1])
    return found


def parse_layers(listings: list[str]) -> list[EngineLayer]:
    """Engine layers from the builder's per-layer listing (either product's format)."""
    layers = []
    for listing in listings:
        for line in listing.splitlines():
            rtx = _RTX_LAYER.match(line.strip())
            if rtx:
                layers.append(
                    EngineLayer(
                        rtx["name"],
                        rtx["kind"],
                        _types(rtx["inputs"]),
                        _types(rtx["weights"]),
                        _types(rtx["outputs"]),
                        tuple(re.findall(r"\[ONNX Layer: ([^\]]+)\]", rtx["meta"])),
                    )
                )
                continue
            trt = _TRT_LAYER.match(line.strip())
            if trt:
                reads, _, writes = trt["io"].partition(" -> ")
                nodes = tuple(n.strip() for n in trt["name"].split(" + "))
                layers.append(EngineLayer(trt["name"], trt["kind"], _trt_types(reads), (), _trt_types(writes), nodes))
    return layers


def _types(tensors: str) -> tuple[str, ...]:
    return tuple(re.findall(r"Datatype: (\w+)", tensors))


def _trt_types(tensors: str) -> tuple[str, ...]:
    """'a[Half(1,64,88,88)], b[Float(1,64)]' -> ('Half', 'Float')."""
    return tuple(re.findall(r"\[(\w+)\(", tensors))


def summarize_warnings(warnings: list[str]) -> list[tuple[str, int]]:
    """Distinct warnings with how often each came, in order of first appearance."""
    return list(Counter(w.strip() for w in warnings).items())


@dataclass
class BuildReport:
    engine: str
    onnx: str
    builder: str  # "TensorRT-RTX 1.7.1.116"
    precision: str
    typing: str
    profile: dict
    compute_capabilities: list[str] | None
    network_layers: int  # layers the parser made from the ONNX graph
    build_seconds: float
    engine_bytes: int
    memory: dict[str, int | None]
    warnings: list[tuple[str, int]]
    layers: list[EngineLayer] = field(default_factory=list)
    layer_note: str = ""  # why there is no per-layer listing, where there is none

    def compute_layers(self) -> list[EngineLayer]:
        return [layer for layer in self.layers if layer.computes]

    def precision_table(self) -> Table:
        """Compute layers by kind and by the types they read (activations, weights) and write."""
        counts = Counter(
            (
                "fused attention" if layer.fused_attention else layer.kind,
                "/".join(dict.fromkeys(layer.inputs)) or "-",
                "/".join(dict.fromkeys(layer.weights)) or "-",
                "/".join(dict.fromkeys(layer.outputs)) or "-",
            )
            for layer in self.compute_layers()
        )
        rows = [[*key, str(n)] for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        return Table(
            "Engine compute layers by precision",
            ["layer kind", "reads", "weights", "writes", "layers"],
            rows,
            "One row per combination of the types a compute layer reads, keeps as constants and writes. "
            "'fused attention': the builder's fused multi-head-attention kernels (Q.K^T, softmax, .V in one).",
        )

    def precision_counts(self) -> str:
        """'Int8 240, Half 48': compute layers by the type their arithmetic reads."""
        kinds = Counter(layer.precision for layer in self.compute_layers())
        return ", ".join(f"{k} {v}" for k, v in kinds.most_common()) or "-"

    def summary_table(self) -> Table:
        rows = [
            ["builder", self.builder],
            ["ONNX", self.onnx],
            ["precision", f"{self.precision} ({self.typing}ly typed)"],
            ["profile", " / ".join("x".join(map(str, self.profile[k])) for k in ("min", "opt", "max"))],
            ["compute capabilities", ", ".join(self.compute_capabilities or []) or "the build GPU's"],
            ["network layers (parsed)", str(self.network_layers)],
            ["engine layers", str(len(self.layers)) if self.layers else "-"],
            ["compute layers by precision", self.precision_counts()],
            ["fused attention kernels", str(sum(layer.fused_attention for layer in self.layers))],
            ["activation memory", format_bytes(self.memory.get("activation_bytes"))],
            ["weights memory", format_bytes(self.memory.get("weights_bytes"))],
            ["build time", f"{self.build_seconds:.1f} s"],
            ["engine size", format_bytes(self.engine_bytes)],
            ["warnings", str(sum(n for _, n in self.warnings))],
        ]
        return Table(f"Build report: {self.engine}", ["field", "value"], rows)

    def markdown(self, stamp: str) -> str:
        parts = [stamp, "", self.summary_table().markdown(), ""]
        if self.layers:
            parts += [self.precision_table().markdown(), ""]
        else:
            parts += [f"Per-layer listing: {self.layer_note or 'not given by the builder'}.", ""]
        warnings = Table(
            "Builder warnings", ["warning", "times"], [[w.replace("|", "\\|"), str(n)] for w, n in self.warnings]
        )
        parts += [warnings.markdown() if self.warnings else "### Builder warnings\n\nNone.", ""]
        return "\n".join(parts)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["layers"] = [{**asdict(layer), "precision": layer.precision} for layer in self.layers]
        return data


def report_paths(engine: Path) -> tuple[Path, Path]:
    """model.engine -> model.engine.report.md, model.engine.report.json."""
    return engine.with_name(engine.name + ".report.md"), engine.with_name(engine.name + ".report.json")


def write_report(report: BuildReport, engine: Path, stamp: str) -> tuple[Path, Path]:
    md, js = report_paths(engine)
    write_bytes_atomic(md, report.markdown(stamp).encode())
    write_json_atomic(js, {"stamp": stamp, **report.as_dict()})
    return md, js
