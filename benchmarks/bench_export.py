"""Export benchmark (issue 3): export time and peak memory per fusion mode, then ONNX Runtime CPU
latency against PyTorch eager at one size, interleaved in the same run.

    .venv/bin/python benchmarks/bench_export.py --backbone pvt_v2_b2 --output docs/results

Each export runs in its own process so its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.environment import collect_environment  # noqa: E402
from runtime.files import write_bytes_atomic, write_json_atomic  # noqa: E402

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

    from export.parity import rebuild_reference
    from runtime import load
    from runtime.timing import time_interleaved

    torch.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    xt = torch.from_numpy(x)
    fns = {}
    for fusion, path in models.items():
        runner = load(path, threads=threads, providers=["CPUExecutionProvider"])
        net = rebuild_reference(runner.metadata, None)

        def eager(net=net):
            with torch.inference_mode():
                net(xt)

        fns[f"torch-eager/{fusion}"] = eager
        fns[f"onnxruntime/{fusion}"] = lambda runner=runner: runner.infer(x)
    stats = time_interleaved(fns, warmup=warmup, iterations=iters)
    return {name: s.as_dict() for name, s in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="pvt_v2_b2")
    parser.add_argument("--fusions", default="hierarchical,absi")
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]

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
    lines = [
        f"# ONNX export benchmark: {s['backbone']}",
        "",
        "Generated by `benchmarks/bench_export.py`; do not edit by hand.",
        "",
        f"- command: `{r['command']}`",
        f"- date: {r['date']}",
        f"- machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, GPUs: {r['machine']['gpus'] or 'none'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v),
        "",
        "## Export (each in its own process)",
        "",
        "| fusion | total s | torch.export + ONNX s | simplify s | verify s | peak RSS MB | file MB "
        "| parity max abs (logits) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fusion, e in r["exports"].items():
        p = e["phases_s"]
        lines.append(
            f"| {fusion} | {e['total_s']:.0f} | {p.get('export', 0):.0f} | {p.get('simplify', 0):.0f} | "
            f"{p.get('verify', 0):.0f} | {e['peak_rss_mb']:.0f} | {e['size_mb']:.1f} | "
            f"{e['parity_max_abs']['mask_logits']:.1e} |"
        )
    lines += [
        "",
        f"## Latency at {s['size']}x{s['size']}, batch {s['batch']}, {s['threads']} threads "
        f"({s['iterations']} interleaved iterations after {s['warmup']} warm-up; {s['timing']})",
        "",
        "| fusion | backend | median ms | mean ms | p90 ms | min ms | max ms | speed-up vs eager |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in r["latency"].items():
        backend, fusion = name.split("/")
        eager = r["latency"][f"torch-eager/{fusion}"]["median_ms"]
        lines.append(
            f"| {fusion} | {backend} | {t['median_ms']:.1f} | {t['mean_ms']:.1f} | {t['p90_ms']:.1f} | "
            f"{t['min_ms']:.1f} | {t['max_ms']:.1f} | {eager / t['median_ms']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
