"""Load test of the Python-backend model on the bundled tritonserver: dynamic batching on and off, 1 and 2 instances.

For each setting, `msdeploy export triton --backend python` writes a repository entry for the demo
checkpoint's FP32 ONNX (hierarchical fusion, pvt_v2_b0), `serving.server.TritonServer` starts
the real server on loopback, and N concurrent clients (threads, one HTTP connection each) send R
requests in all, one JPEG per request, cycling through held-out synthetic images of several sizes.
Every response is checked against `runtime.Predictor` on the same bytes (batch 1, same threads):
a response is wrong when a probability differs by more than PROB_TOLERANCE, or a mask pixel
differs where the direct probability is not within PROB_TOLERANCE of the threshold (a batched
network call may round differently from a single one). Reports throughput, latency percentiles,
failures, wrong and bit-identical responses, and the mean batch Triton formed (its statistics).
Writes docs/results/triton-load-pvt_v2_b0.md/json.

    python benchmarks/bench_triton.py [--model demo-output/pvt_v2_b0_hierarchical.onnx]
        [--requests 1000] [--clients 8] [--threads 2]
"""

from __future__ import annotations

import io
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.scripts import ROOT, script_command, script_parser, write_result
from calibration.synthetic import make_sample
from models.demo_weights import HELD_OUT_SEED
from runtime import Predictor
from runtime.environment import collect_environment, stamp
from runtime.errors import UserError
from runtime.metadata import read_sidecar
from runtime.tables import Table
from serving.client import ImageClient
from serving.model_repository import TritonOptions, write_triton_model
from serving.server import ServerOptions, TritonServer, free_port

SIZES = ((352, 352), (300, 400), (480, 360), (240, 320))
IMAGES = 16
PROB_TOLERANCE = 1e-4
# (label, dynamic batching, instances); each instance gets cores / instances ONNX Runtime threads
SETTINGS = (
    ("1 instance, dynamic batching (max batch 8, queue delay 1 ms)", True, 1),
    ("1 instance, no dynamic batching", False, 1),
    ("2 instances, dynamic batching (max batch 8, queue delay 1 ms)", True, 2),
)


def payloads() -> list[bytes]:
    rng = np.random.default_rng(HELD_OUT_SEED)
    out = []
    for index in range(IMAGES):
        buffer = io.BytesIO()
        Image.fromarray(make_sample(rng, SIZES[index % len(SIZES)]).image).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def check(mask: np.ndarray, probability: np.ndarray, expected) -> tuple[bool, bool, float]:
    """(right, bit-identical, max |probability difference|) of one response."""
    if probability.shape != expected.probability.shape:
        return False, False, float("inf")
    diff = float(np.abs(probability - expected.probability).max())
    decided = np.abs(expected.probability - expected.threshold) > PROB_TOLERANCE
    masks_agree = bool((mask[decided] == expected.mask_png()[decided]).all())
    identical = diff == 0.0 and bool((mask == expected.mask_png()).all())
    return diff <= PROB_TOLERANCE and masks_agree, identical, diff


def load(server: TritonServer, name: str, data: list[bytes], expected: list, requests: int, clients: int) -> dict:
    counter = iter(range(requests))
    lock = threading.Lock()
    records: list[tuple[float, bool, bool, float]] = []
    failures: list[str] = []

    def client_loop() -> None:
        client = ImageClient(server.http_url, name)
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                start = time.perf_counter()
                try:
                    mask, probability = client.infer([data[index % len(data)]])
                except Exception as exc:  # every failure is counted and reported, none stops the run
                    with lock:
                        failures.append(str(exc)[:200])
                    continue
                elapsed = (time.perf_counter() - start) * 1e3
                right, identical, diff = check(mask[0], probability[0], expected[index % len(data)])
                with lock:
                    records.append((elapsed, right, identical, diff))
        finally:
            client.close()

    stats_client = ImageClient(server.http_url, name)
    before = _counts(stats_client, name)
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    after = _counts(stats_client, name)
    stats_client.close()
    latencies = sorted(r[0] for r in records)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    return {
        "requests": requests,
        "clients": clients,
        "answered": len(records),
        "failed": len(failures),
        "failures": failures[:5],
        "wrong": sum(not r[1] for r in records),
        "bit_identical": sum(r[2] for r in records),
        "max_prob_diff": max((r[3] for r in records), default=None),
        "wall_s": wall,
        "throughput_rps": len(records) / wall,
        "p50_ms": _percentile(latencies, 50),
        "p90_ms": _percentile(latencies, 90),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        "mean_batch": inferences / executions if executions else None,
    }


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _counts(client: ImageClient, name: str) -> tuple[int, int]:
    stats = client.client.get_inference_statistics(name)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def markdown(rows: list[dict], command: str, model: Path, args, direct_ms: float) -> str:
    sizes = ", ".join(f"{w}x{h}" for h, w in SIZES)
    lines = [
        "# Triton load test: the Python-backend model on the bundled tritonserver (CPU, loopback)",
        "",
        stamp(command, collect_environment()),
        "",
        f"Model: `{model.name}` (FP32 ONNX, demo checkpoint), served by `msdeploy export triton --backend python`",
        f"(ONNX Runtime CPU, {args.threads} threads shared by the instances) on the tritonserver bundled with",
        "nvidia-pytriton, on loopback. Clients: threads of one process on the same 2-core machine, one HTTP",
        f"connection each, one JPEG per request, cycling through {IMAGES} held-out synthetic images",
        f"(seed {HELD_OUT_SEED}; {sizes}). Latency: from sending the request to decoding the mask and",
        "probabilities (client side). Every response is compared with `runtime.Predictor` on the same bytes:",
        f"wrong = a probability off by more than {PROB_TOLERANCE:g}, or a mask pixel off where the direct",
        f"probability is not within {PROB_TOLERANCE:g} of the threshold. Mean batch: Triton's own statistics",
        "(inferences / executions).",
        "",
    ]
    columns = ["setting", "requests", "clients", "failed", "wrong", "bit-identical", "max abs prob diff"]
    columns += ["throughput req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean batch"]
    table = Table(
        "Load",
        columns,
        [
            [str(r[k]) for k in ("setting", "requests", "clients", "failed", "wrong", "bit_identical")]
            + ["-" if r["max_prob_diff"] is None else f"{r['max_prob_diff']:.1e}", f"{r['throughput_rps']:.1f}"]
            + [f"{r[k]:.0f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
            + ["-" if r["mean_batch"] is None else f"{r['mean_batch']:.2f}"]
            for r in rows
        ],
    )
    lines.append(table.markdown())
    verdict = all(r["failed"] == 0 and r["wrong"] == 0 and r["answered"] == r["requests"] for r in rows)
    lines += [
        "",
        f"Zero failed and zero wrong responses in every setting: **{'PASS' if verdict else 'FAIL'}**.",
        "",
        f"Without a server, `runtime.Predictor` on the same images in this process takes {direct_ms:.0f} ms per",
        f"image (median; decode, preprocess, network, resize back), i.e. {1e3 / direct_ms:.1f} images/s one at a time:",
        "the reference for the server's overhead. The clients share the server's two cores.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fusions=False)
    parser.add_argument("--model", type=Path, default=ROOT / "demo-output" / "pvt_v2_b0_hierarchical.onnx")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the served model")
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)
    side = read_sidecar(args.model) if args.model.exists() else None
    if not side or side.get("weights", {}).get("source") != "file":
        raise SystemExit(f"{args.model} is missing or not exported from a checkpoint; run `msdeploy demo` first")
    data = payloads()
    direct = Predictor(args.model, threads=args.threads)
    expected = [direct.predict(item) for item in data]
    reference = [direct.predict(item).total_ms for item in data * 2]  # after the first pass warmed up
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as work:
        for index, (setting, dynamic, instances) in enumerate(SETTINGS):
            repository = Path(work) / f"setting{index}"
            write_triton_model(
                TritonOptions(
                    args.model,
                    repository,
                    name="cod",
                    backend="python",
                    max_batch_size=8,
                    dynamic_batching=dynamic,
                    instances=instances,
                    queue_delay_us=1000,
                    threads=max(1, args.threads // instances),
                )
            )
            print(f"== {setting}", flush=True)
            with TritonServer(ServerOptions(repository, http_port=free_port(), grpc_port=free_port())) as server:
                load(server, "cod", data, expected, len(data), 2)  # warm-up: sessions, allocators, connections
                row = load(server, "cod", data, expected, args.requests, args.clients)
            if server.leftovers():
                raise UserError(f"shared memory left behind: {server.leftovers()}")
            rows.append({"setting": setting, "dynamic_batching": dynamic, "instances": instances, **row})
            print(rows[-1], flush=True)
    md = markdown(rows, command, args.model, args, statistics.median(reference))
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / "triton-load-pvt_v2_b0"
    write_result(
        stem,
        md,
        {
            "command": command,
            "tolerance": PROB_TOLERANCE,
            "direct_ms_per_image": statistics.median(reference),
            "rows": rows,
        },
    )
    print(md, flush=True)


if __name__ == "__main__":
    main()
