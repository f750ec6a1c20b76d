"""Export benchmark: export time and peak memory per fusion mode, then ONNX Runtime CPU
latency against PyTorch eager at one size, interleaved in the same run.

    .venv/bin/python benchmarks/bench_export.py --backbone pvt_v2_b2 --output docs/results

Each export runs in its own process so its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.scripts import ROOT, script_command, script_parser
from runtime.environment import collect_environment, provenance, stamp
from runtime.files import write_bytes_atomic, write_json_atomic
from runtime.tables import Table

CHILD = """
import json, resource, sys, time
from export.onnx_export import ExportOptions, export_onnx

start = time.perf_counter()
r = export_onnx(ExportOptions(backbone=sys.argv[1], fusion=sys.argv[2], output=sys.argv[3], force=True))
total = time.perf_counter() - start
print(json.dumps({"total_s": total, "phases_s": r.seconds, "size_mb": r.size_bytes / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "parity_max_abs": r.parity.worst()}))
"""


def export_once(backbone: str, fusion: str, path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, backbone, fusion, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"export of {fusion} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def latency(backbone: str, models: dict[str, Path], size: int, threads: int, warmup: int, iters: int) -> dict:
    import numpy as np
    import torch

    from models.runner import network_for
    from runtime import load
    from runtime.timing import time_interleaved

    torch.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    xt = torch.from_numpy(x)
    fns = {}
    for fusion, path in models.items():
        runner = load(path, threads=threads, providers=["CPUExecutionProvider"])
        net = network_for(runner.metadata, None)

        def eager(net=net):
            with torch.inference_mode():
                net(xt)

        fns[f"torch-eager/{fusion}"] = eager
        fns[f"onnxruntime/{fusion}"] = lambda runner=runner: runner.infer(x)
    stats = time_interleaved(fns, warmup=warmup, iterations=iters)
    return {name: s.as_dict() for name, s in stats.items()}


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, timing=True)
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)
    fusions = args.fusions

    with tempfile.TemporaryDirectory() as tmp:
        exports, models = {}, {}
        for fusion in fusions:
            models[fusion] = Path(tmp) / f"{args.backbone}_{fusion}.onnx"
            print(f"exporting {args.backbone}/{fusion} ...", flush=True)
            exports[fusion] = export_once(args.backbone, fusion, models[fusion])
            print(json.dumps(exports[fusion]), flush=True)
        print(f"timing at {args.size} (batch 1, {args.threads} threads, interleaved) ...", flush=True)
        timings = latency(args.backbone, models, args.size, args.threads, args.warmup, args.iters)

    env = collect_environment()
    record = {
        "benchmark": "export",
        "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": env.cpu, "cores": env.cpu_count, "gpus": env.gpus, "platform": env.platform},
        "versions": {"python": env.python, **env.packages},
        "provenance": provenance(command, env),  # the Markdown stamp, from the same reading
        "settings": {
            "backbone": args.backbone,
            "size": args.size,
            "batch": 1,
            "threads": args.threads,
            "warmup": args.warmup,
            "iterations": args.iters,
            "timing": "host wall clock per call, input already in memory",
        },
        "exports": exports,
        "latency": timings,
    }
    stem = f"export-{args.backbone}"
    write_json_atomic(args.output / f"{stem}.json", record)
    write_bytes_atomic(args.output / f"{stem}.md", render(record).encode())
    print(render(record))


def render(r: dict) -> str:
    s = r["settings"]
    exports = Table(
        "Export (each in its own process)",
        ["fusion", "total s", "torch.export + ONNX s", "simplify s", "verify s", "peak RSS MB", "file MB"]
        + ["parity max abs (logits)"],
        [
            [
                fusion,
                f"{e['total_s']:.0f}",
                *(f"{e['phases_s'].get(k, 0):.0f}" for k in ("export", "simplify", "verify")),
            ]
            + [f"{e['peak_rss_mb']:.0f}", f"{e['size_mb']:.1f}", f"{e['parity_max_abs']['mask_logits']:.1e}"]
            for fusion, e in r["exports"].items()
        ],
    )
    latency = Table(
        f"Latency at {s['size']}x{s['size']}, batch {s['batch']}, {s['threads']} threads",
        ["fusion", "backend", "median ms", "mean ms", "p90 ms", "min ms", "max ms", "speed-up vs eager"],
        [
            [name.split("/")[1], name.split("/")[0], *(f"{t[f'{k}_ms']:.1f}" for k in ("median", "mean", "p90"))]
            + [f"{t['min_ms']:.1f}", f"{t['max_ms']:.1f}"]
            + [f"{r['latency']['torch-eager/' + name.split('/')[1]]['median_ms'] / t['median_ms']:.2f}x"]
            for name, t in r["latency"].items()
        ],
        f"{s['iterations']} interleaved iterations after {s['warmup']} warm-up; {s['timing']}",
    )
    header = [f"# ONNX export benchmark: {s['backbone']}", "", stamp(r["command"], fields=r["provenance"]), ""]
    return "\n".join([*header, exports.markdown(), "", latency.markdown()]) + "\n"


if __name__ == "__main__":
    main()
