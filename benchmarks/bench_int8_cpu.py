"""ONNX Runtime CPU: INT8 (`--target cpu`) against FP32, interleaved in one run, with a profile.

For each fusion mode: export pvt_v2_b2 (random init: speed does not depend on the weights), write
synthetic calibration images, quantize with the CPU layout, time FP32 and INT8 in turn at 352,
batch 1, and profile the INT8 model with ONNX Runtime's profiler (time per op type), so the table
shows where the remaining time goes. Writes docs/results/int8-cpu-<backbone>.md/json.

    python benchmarks/bench_int8_cpu.py [--fusions hierarchical,absi] [--work DIR] [--models-from DIR]
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from bench.scripts import script_command, script_parser, write_result
from calibration.quantize import CALIBRATION_IMAGES
from runtime.environment import stamp
from runtime.tables import Table
from runtime.timing import time_interleaved


def ensure_models(backbone: str, fusion: str, work: Path, method: str, count: int) -> tuple[Path, Path]:
    """FP32 and INT8 (CPU layout) through the variants pipeline; INT8 made again for each run."""
    from export.variants import Int8Settings, export_fp32, make_variant

    fp32 = export_fp32(work / f"{backbone}_{fusion}.onnx", backbone, fusion, say=print)
    int8 = Int8Settings(target="cpu", method=method, images=count)
    return fp32, make_variant(fp32, "int8", int8=int8, work=work, force=True, say=print).path


def _neighbours(optimized: Path) -> dict[str, str]:
    """For each QuantizeLinear/DequantizeLinear node of ONNX Runtime's optimized graph, the ops it
    converts between ("Gelu -> Q -> QLinearConv"): which float islands the conversions serve."""
    import onnx

    graph = onnx.load(str(optimized), load_external_data=False).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    readers: dict[str, set[str]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, set()).add(n.op_type)
    short = {"QuantizeLinear": "Q", "DequantizeLinear": "DQ"}
    return {
        n.name: f"{producer.get(n.input[0], 'input')} -> {short[n.op_type]} -> "
        + ",".join(sorted(readers.get(n.output[0], {"output"})))
        for n in graph.node
        if n.op_type in short
    }


def profile_by_op(path: Path, x: np.ndarray, threads: int, runs: int = 5, warmup: int = 3) -> dict:
    """Steady-state profile from ONNX Runtime's node profiler: mean ms per run for each op type
    (`ops`), for the Q/DQ conversions grouped by the ops they sit between (`conversions`), and the
    mean wall time of the profiled runs (`run_ms`: kernels plus the executor's own work).

    Warm-up runs happen in the profiled session itself and their events are dropped: a fresh
    session's first runs pay page faults and allocations that the timed runs above do not, and
    profiling a second, cold session once inflated every op's share."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.log_severity_level = 3  # the optimized copy warns that it is machine-specific; it is only read here
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(warmup + runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
        neighbours = _neighbours(Path(tmp) / "optimized.onnx")
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    last_warmup = model_runs[warmup - 1]
    steady_from = last_warmup["ts"] + last_warmup["dur"]
    ops: dict[str, float] = {}
    conversion_ms: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < steady_from:
            continue
        ms = e["dur"] / 1e3 / runs
        op = e.get("args", {}).get("op_name", "?")
        ops[op] = ops.get(op, 0.0) + ms
        pattern = neighbours.get(e["name"].removesuffix("_kernel_time"))
        if pattern:
            conversion_ms[pattern] = conversion_ms.get(pattern, 0.0) + ms
    nodes = Counter(neighbours.values())
    return {
        "run_ms": float(np.mean([e["dur"] for e in model_runs[warmup:]])) / 1e3,
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "conversions": {
            k: {"ms": ms, "nodes": nodes[k]} for k, ms in sorted(conversion_ms.items(), key=lambda kv: -kv[1])
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, work=".bench-int8", timing=True)
    parser.add_argument("--method", default="max")
    parser.add_argument("--calib-count", type=int, default=CALIBRATION_IMAGES)
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)

    import runtime

    args.work.mkdir(parents=True, exist_ok=True)
    fusions = args.fusions
    models = {f: ensure_models(args.backbone, f, args.work, args.method, args.calib_count) for f in fusions}

    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size), dtype=np.float32)
    fns = {}
    for fusion, (fp32, int8) in models.items():
        for precision, path in (("fp32", fp32), ("int8-cpu", int8)):
            runner = runtime.open_runner(path, "onnxruntime-cpu", threads=args.threads)
            fns[f"{fusion}/{precision}"] = lambda r=runner: r.infer(x)
    print(f"timing {len(fns)} models interleaved ...", flush=True)
    stats = {k: v.as_dict() for k, v in time_interleaved(fns, warmup=args.warmup, iterations=args.iters).items()}
    profiles = {
        f: {"fp32": profile_by_op(fp32, x, args.threads), "int8-cpu": profile_by_op(int8, x, args.threads)}
        for f, (fp32, int8) in models.items()
    }

    lines = [
        f"# ONNX Runtime CPU: INT8 against FP32 ({args.backbone})",
        "",
        stamp(command),
        "",
        f"Batch 1, {args.size}x{args.size}, {args.threads} threads, {args.iters} interleaved iterations after "
        f"{args.warmup} warm-up; host wall clock per call, input already in memory. INT8: `--target cpu`, "
        f"calibration `{args.method}` on {args.calib_count} synthetic images.",
        "",
    ]
    rows = []
    for fusion in models:
        a, b = stats[f"{fusion}/fp32"], stats[f"{fusion}/int8-cpu"]
        speedup = a["median_ms"] / b["median_ms"]
        rows.append([fusion, *(f"{v:.0f}" for v in (a["median_ms"], b["median_ms"])), f"{speedup:.2f}x"])
        rows[-1] += [f"{a['p90_ms']:.0f}", f"{b['p90_ms']:.0f}", "PASS" if speedup >= 1.5 else "FAIL"]
    columns = ["fusion", "FP32 median ms", "INT8 median ms", "speed-up", "FP32 p90 ms", "INT8 p90 ms", "target 1.5x"]
    lines.append(Table("Latency", columns, rows).markdown())
    for fusion, prof in profiles.items():
        fp32_ops, int8_ops = prof["fp32"]["ops"], prof["int8-cpu"]["ops"]
        total = {"fp32": sum(fp32_ops.values()), "int8-cpu": sum(int8_ops.values())}
        # the top op types of each model, so FP32's Conv/MatMul rows show beside INT8's QLinear ones
        shown = list(dict.fromkeys([*list(int8_ops)[:12], *list(fp32_ops)[:8]]))
        times = [(op, fp32_ops.get(op, 0.0), int8_ops.get(op, 0.0)) for op in shown]
        times.append(
            ("other op types", total["fp32"] - sum(t[1] for t in times), total["int8-cpu"] - sum(t[2] for t in times))
        )
        rows = [
            [op, f"{f:.1f}", f"{f / total['fp32']:.0%}", f"{q:.1f}", f"{q / total['int8-cpu']:.0%}"]
            for op, f, q in times
        ]
        rows.append(["total (kernels)", f"{total['fp32']:.0f}", "", f"{total['int8-cpu']:.0f}", ""])
        rows.append(
            ["wall per profiled run", f"{prof['fp32']['run_ms']:.0f}", "", f"{prof['int8-cpu']['run_ms']:.0f}", ""]
        )
        title = f"Where the time goes: {fusion} (ms per run by op type, ONNX Runtime profiler, steady state)"
        columns = ["op type", "FP32 ms", "FP32 share", "INT8 ms", "INT8 share"]
        conversions = [
            [f"`{pattern}`", str(c["nodes"]), f"{c['ms']:.1f}", f"{c['ms'] / total['int8-cpu']:.0%}"]
            for pattern, c in list(prof["int8-cpu"]["conversions"].items())[:8]
        ]
        note = (
            f"INT8 conversions left in the {fusion} graph after ONNX Runtime's fusions, by the ops they sit between "
            "(producer -> Q/DQ -> readers; the float islands that remain)"
        )
        columns2 = ["conversion", "nodes", "ms per run", "share of INT8 kernels"]
        lines += [
            "",
            Table(title, columns, rows).markdown(),
            "",
            Table("Q/DQ left", columns2, conversions, note).markdown(),
        ]
    md = "\n".join(lines) + "\n"
    stem = args.output / f"int8-cpu-{args.backbone}"
    write_result(stem, md, {"command": command, "latency": stats, "profiles": profiles})
    print(md)


if __name__ == "__main__":
    main()
