"""What NVIDIA's TensorRT-RTX parser and builder make of our graphs, built ahead of time on this CPU.

1. Per fusion x precision (pvt_v2_b2 by default: the guide's network), the default engine profile
   (128..1024, batch 1): parses or not, network and engine layers, compute layers by precision,
   fused attention kernels, build time, engine size, activation and weights memory, warnings. The
   precisions are FP32, FP16, INT8 (TensorRT layout: FP16 float islands) and INT8 with FP32 float
   islands (`--high-precision fp32`, the layout before the builder showed what it costs).
2. Activation memory against the profile's largest side and batch, per backbone and fusion, for the
   FP16 and INT8 graphs: what decides which profile fits a board (export/boards.py).

Writes docs/results/tensorrt-rtx-<backbone>.md/json and docs/results/tensorrt-rtx-memory.md/json.
Models are random-init (the builder's choices do not depend on the weights) and kept in --work.

    python benchmarks/bench_tensorrt_rtx.py [--backbone pvt_v2_b2] [--memory-backbones pvt_v2_b0,pvt_v2_b2]
        [--parts builds,memory]
"""

from __future__ import annotations

from pathlib import Path

from bench.scripts import script_command, script_parser
from export.boards import format_bytes
from runtime.environment import stamp
from runtime.files import write_bytes_atomic, write_json_atomic
from runtime.tables import Table

FUSIONS = ("hierarchical", "absi")
# label -> (ONNX variant, --high-precision of the INT8 layout)
PRECISIONS = {
    "fp32": ("fp32", None),
    "fp16": ("fp16", None),
    "int8": ("int8", "fp16"),
    "int8 (fp32 islands)": ("int8", "fp32"),
}


def variant(backbone: str, fusion: str, label: str, work: Path, calib: Path, count: int) -> Path:
    """The ONNX file of one precision, through the variants pipeline (made once, kept in `work`)."""
    from export.variants import Int8Settings, export_fp32, make_variant

    fp32 = export_fp32(work / f"{backbone}_{fusion}.onnx", backbone, fusion, say=print)
    kind, islands = PRECISIONS[label]
    if kind == "fp32":
        return fp32
    int8 = Int8Settings(images=count, calib_data=calib, float_precision=islands if islands == "fp32" else None)
    return make_variant(fp32, kind, int8=int8, say=print).path


def build(model: Path, engine: Path, max_shape: tuple[int, ...] | None = None, report: bool = True):
    """One ahead-of-time TensorRT-RTX build; (result, None) or (None, the refusal)."""
    from export.tensorrt_build import EngineOptions, build_engine
    from runtime.errors import UserError

    options = EngineOptions(
        model=model, target="tensorrt-rtx", max_shape=max_shape, output=engine, force=True, report=report
    )
    try:
        return build_engine(options), None
    except UserError as exc:
        return None, str(exc)


def survey(backbone: str, work: Path, calib: Path, count: int) -> tuple[list[Table], list[dict]]:
    """The builds table, one precision table per engine, and the records for the JSON file."""
    rows, records, precision_tables = [], [], []
    for fusion in FUSIONS:
        for label in PRECISIONS:
            model = variant(backbone, fusion, label, work, calib, count)
            print(f"building {fusion} {label}", flush=True)
            result, refusal = build(model, work / "engines" / (model.name[: -len(".onnx")] + ".engine"))
            if result is None:
                rows.append([fusion, label, "no", *["-"] * 9])
                records.append({"fusion": fusion, "precision": label, "parsed": False, "error": refusal})
                continue
            report = result.report
            rows.append(
                [
                    fusion,
                    label,
                    "yes",
                    str(report.network_layers),
                    str(len(report.layers)),
                    report.precision_counts(),
                    str(sum(layer.fused_attention for layer in report.layers)),
                    f"{report.build_seconds:.0f}",
                    format_bytes(report.engine_bytes),
                    format_bytes(report.memory["activation_bytes"]),
                    format_bytes(report.memory["weights_bytes"]),
                    str(sum(n for _, n in report.warnings)),
                ]
            )
            table = report.precision_table()
            # the per-layer listing stays in the engine's own report (ENGINE.report.json): here, the summary
            summary = {k: v for k, v in report.as_dict().items() if k != "layers"}
            compute_layers = [dict(zip(table.columns, row)) for row in table.rows]
            records.append(
                {"fusion": fusion, "precision": label, "parsed": True, **summary, "compute_layers": compute_layers}
            )
            table.title = f"{fusion} {label}: engine compute layers by precision"
            precision_tables.append(table)
    builds = Table(
        f"{backbone}: TensorRT-RTX builds (profile 1x3x128x128 .. 1x3x1024x1024, opt 352)",
        ["fusion", "precision", "parses", "network layers", "engine layers", "compute layers by precision"]
        + ["fused attention", "build s", "engine", "activations", "weights", "warnings"],
        rows,
        "Activation memory is for the profile's largest shape. 'int8': the TensorRT INT8 layout (Q/DQ on "
        "Conv/MatMul/Gemm inputs, unquantized layers in FP16); 'int8 (fp32 islands)': the same Q/DQ with the "
        "unquantized layers left in FP32 (`msdeploy quantize --high-precision fp32`). Build time on this "
        "machine, single-threaded builder.",
    )
    return [builds, *precision_tables], records


def memory_sweep(backbones, sides, batches, precisions, work, calib, count) -> tuple[list[Table], list[dict]]:
    """Per backbone and precision: activation memory by profile, and how many attention blocks the
    builder fused at each profile (what decides how memory grows)."""
    tables, records = [], []
    columns = ["fusion"] + [f"b{b} {s}" for b in batches for s in sides]
    for backbone in backbones:
        for label in precisions:
            memory_rows, fused_rows = [], []
            for fusion in FUSIONS:
                model = variant(backbone, fusion, label, work, calib, count)
                memory_row, fused_row = [fusion], [fusion]
                for batch in batches:
                    for side in sides:
                        print(f"memory: {backbone} {fusion} {label} batch {batch} side {side}", flush=True)
                        engine = work / "engines" / "sweep.engine"
                        result, refusal = build(model, engine, (batch, 3, side, side))
                        memory = result.sidecar["memory"] if result else {}
                        fused = sum(layer.fused_attention for layer in result.report.layers) if result else None
                        memory_row.append(format_bytes(memory.get("activation_bytes")) if result else "refused")
                        fused_row.append("-" if fused is None else str(fused))
                        records.append(
                            {
                                "backbone": backbone,
                                "fusion": fusion,
                                "precision": label,
                                "batch": batch,
                                "max_side": side,
                                **memory,
                                "fused_attention": fused,
                                "error": refusal,
                            }
                        )
                memory_rows.append(memory_row)
                fused_rows.append(fused_row)
            tables.append(
                Table(
                    f"{backbone} {label}: activation memory by the profile's largest batch (b) and side",
                    columns,
                    memory_rows,
                    "Profile 128x128 .. max, opt 352 (or the max, if smaller). Weights come on top "
                    "(see the builds table).",
                )
            )
            tables.append(
                Table(
                    f"{backbone} {label}: fused attention kernels by profile",
                    columns,
                    fused_rows,
                    "Attention blocks the builder ran as one fused kernel; the others materialize their "
                    "score matrix (the query tokens times the spatially reduced key tokens).",
                )
            )
    return tables, records


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, work=".bench-rtx", fusions=False)
    parser.add_argument("--backbone", default="pvt_v2_b2")
    parser.add_argument("--memory-backbones", default="pvt_v2_b0,pvt_v2_b2")
    parser.add_argument("--sides", default="352,512,768,1024")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--memory-precisions", default="fp16,int8")
    parser.add_argument("--calib-count", type=int, default=8)
    parser.add_argument("--parts", default="builds,memory", help="builds: the per-precision table; memory: the sweep")
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)
    parts = {p.strip() for p in args.parts.split(",")}

    from calibration.synthetic import synthetic_calibration_images
    from runtime.tensorrt_common import import_tensorrt

    import_tensorrt("tensorrt-rtx")  # refuses with the install hint before any export
    (args.work / "engines").mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    calib = synthetic_calibration_images(args.work / "calibration", args.calib_count)

    if "builds" in parts:
        write_builds(args, command, calib)
    if "memory" in parts:
        write_memory(args, command, calib)
    print(f"wrote {', '.join(sorted(parts))} results into {args.output}")


def write_builds(args, command: str, calib: Path) -> None:
    tables, build_records = survey(args.backbone, args.work, calib, args.calib_count)
    text = [f"# TensorRT-RTX builds of {args.backbone}", "", stamp(command), ""]
    text += [t.markdown() + "\n" for t in tables]
    write_bytes_atomic(args.output / f"tensorrt-rtx-{args.backbone}.md", "\n".join(text).encode())
    write_json_atomic(args.output / f"tensorrt-rtx-{args.backbone}.json", {"command": command, "builds": build_records})


def write_memory(args, command: str, calib: Path) -> None:
    sides = [int(s) for s in args.sides.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    backbones = [b for b in args.memory_backbones.split(",") if b]
    precisions = [p for p in args.memory_precisions.split(",") if p]
    tables, records = memory_sweep(backbones, sides, batches, precisions, args.work, calib, args.calib_count)
    text = ["# TensorRT-RTX: activation memory by profile", "", stamp(command), ""]
    text += [t.markdown() + "\n" for t in tables]
    write_bytes_atomic(args.output / "tensorrt-rtx-memory.md", "\n".join(text).encode())
    write_json_atomic(args.output / "tensorrt-rtx-memory.json", {"command": command, "builds": records})


if __name__ == "__main__":
    main()
