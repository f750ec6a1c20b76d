"""`msdeploy bench`: interleaved timing, every output file with the expected rows and columns,
missing backends reported instead of crashed on, and the runtime-only mode (no PyTorch)."""

from __future__ import annotations

import csv
import json
import time

import pytest
from click.testing import CliRunner

import bench.run as bench_run
from bench.cases import Case, Result, Settings, Target, run_cases
from bench.report import BenchReport
from bench.run import BenchOptions, run_bench
from msdeploy.cli import main
from runtime.backends import expand_backends
from runtime.errors import UserError
from runtime.timing import TimingStats, time_interleaved
from tests.helpers import EXPORTED_FUSIONS, SMALL_BACKBONE, copy_model

SIZES = (64, 96)


@pytest.fixture(scope="module")
def models(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-models")
    for path in exported.values():
        copy_model(path, folder / path.name)
    return folder


def test_interleaved_timing_uses_reported_device_time_and_min_time():
    order = []
    fns = {"host": lambda: order.append("host"), "device": lambda: order.append("device") or 0.25}
    stats = time_interleaved(fns, warmup=1, iterations=3)
    # one call each per round, in the given order at first, then shuffled (seeded: a run repeats)
    rounds = [order[i : i + 2] for i in range(0, len(order), 2)]
    assert len(rounds) == 4 and rounds[:2] == [["host", "device"]] * 2
    assert all(sorted(r) == ["device", "host"] for r in rounds)
    many = []
    time_interleaved({str(i): (lambda i=i: many.append(i)) for i in range(6)}, warmup=0, iterations=8)
    neighbours = {(a, b) for r in range(8) for a, b in zip(many[6 * r :][:5], many[6 * r + 1 :][:5])}
    assert len(neighbours) > 12  # a fixed or rotated order gives at most 5 or 6 distinct neighbour pairs
    again = []
    time_interleaved({str(i): (lambda i=i: again.append(i)) for i in range(6)}, warmup=0, iterations=8)
    assert again == many
    assert stats["device"].median_ms == pytest.approx(250.0) and stats["host"].median_ms < 50
    slow = time_interleaved({"s": lambda: time.sleep(0.01)}, warmup=0, iterations=2, min_time=0.1)
    assert slow["s"].iterations >= 9  # min_time added rounds past the 2 asked for


def test_run_cases_reports_failures_and_speedups():
    cases = [Case(b, "fp32", "absi", 64, 1) for b in ("torch-cpu", "onnxruntime-cpu", "tensorrt", "onnxruntime-cuda")]
    times = {"torch-cpu": 0.2, "onnxruntime-cpu": 0.1}

    def make(case: Case) -> Target:
        if case.backend == "onnxruntime-cuda":
            raise RuntimeError("engine file is corrupt\nmore")
        return Target(lambda: times[case.backend], "reported")

    results = run_cases(
        cases, make, {cases[2]: "TensorRT not installed"}, Settings(0, 2), reference=bench_run.reference_case
    )
    by = {r.case.backend: r for r in results}
    assert by["onnxruntime-cpu"].speedup == pytest.approx(2.0) and by["torch-cpu"].speedup == pytest.approx(1.0)
    assert by["tensorrt"].skipped == "TensorRT not installed" and by["tensorrt"].stats is None
    assert by["onnxruntime-cuda"].skipped == "failed to load: engine file is corrupt"
    assert by["onnxruntime-cpu"].throughput == pytest.approx(10.0)


def test_bench_command_writes_every_file(models, tmp_path):
    out = tmp_path / "results"
    args = ["bench", "--backbone", SMALL_BACKBONE, "--models", str(models), "--sizes", ",".join(map(str, SIZES)),
            "--backends", "torch-cpu,onnxruntime-cpu,tensorrt", "--warmup", "1", "--iters", "2", "--threads", "2",
            "--output", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stem = f"bench-{SMALL_BACKBONE}"
    assert {p.name for p in out.iterdir()} == {f"{stem}.{suffix}" for suffix in ("md", "csv", "json", "png")}
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((out / f"{stem}.csv").open()))
    assert len(rows) == 3 * len(EXPORTED_FUSIONS) * len(SIZES)  # backends x fusions x sizes
    assert {"median_ms", "p90_ms", "p99_ms", "std_ms", "images_per_s", "speedup_vs_eager"} <= set(rows[0])
    for row in rows:  # each row stamped, so CSVs of several machines can be concatenated
        assert row["command"].startswith("msdeploy bench --backbone pvt_v2_b0") and "cores" in row["machine"]
        assert row["date"].endswith("UTC") and "numpy" in row["versions"]
        if row["backend"] == "tensorrt":  # missing here: reported with the reason, not dropped
            assert row["skipped"].startswith("tensorrt cannot run here") and row["median_ms"] == ""
        else:
            assert float(row["median_ms"]) > 0 and row["skipped"] == "" and float(row["speedup_vs_eager"]) > 0

    md = (out / f"{stem}.md").read_text()
    for title in ("Inference Time: torch-cpu fp32", "Inference Time: onnxruntime-cpu fp32",
                  "Integration Method Comparison (96x96", "Memory Usage", "Parameter Count",
                  "Computational Complexity", "Achieved compute rate", "Not run here", "All measurements"):  # fmt: skip
        assert title in md, title
    assert "- command: `msdeploy bench --backbone pvt_v2_b0" in md and "- machine:" in md
    assert "| 96x96 |" in md and "(speed-up against PyTorch eager on the same device, same run)" in md
    data = json.loads((out / f"{stem}.json").read_text())
    assert set(data["memory"]) == set(EXPORTED_FUSIONS)
    assert all(v > 0 for part in data["memory"].values() for v in part.values())
    totals = {f: next(r["gflops"] for r in rows_ if r["key"] == "total") for f, rows_ in data["flops"].items()}
    assert all(t > 0 for t in totals.values()) and set(data["matmul_rates"]) == {"cpu fp32"}
    assert data["matmul_rates"]["cpu fp32"] > 0 and "numpy" in data["matmul_note"]

    before = (out / f"{stem}.md").read_bytes()
    again = CliRunner().invoke(main, args)  # refused before any timing; the report is kept
    assert again.exit_code != 0 and "already exists; pass --force" in again.output
    assert (out / f"{stem}.md").read_bytes() == before


def test_runtime_only_mode_times_files_and_lists_what_needs_pytorch(models, monkeypatch):
    monkeypatch.setattr(bench_run, "has_torch", lambda: False)
    options = BenchOptions(
        backends=("torch-cpu", "onnxruntime-cpu"), sizes=(64,), backbone=None, models=models, warmup=0, iterations=1
    )
    report = run_bench(options, say=lambda m: None)
    by = {(r.case.backend, r.case.fusion): r for r in report.results}
    assert all(by[("onnxruntime-cpu", f)].stats for f in EXPORTED_FUSIONS)
    assert all("PyTorch is not installed" in by[("torch-cpu", f)].skipped for f in EXPORTED_FUSIONS)
    assert set(report.unavailable) == {
        "Parameter Count",
        "Computational Complexity",
        "Achieved compute rate",
        "Memory Usage per part",
    }
    assert set(report.memory) == set(EXPORTED_FUSIONS)  # from the ONNX models, in a child process
    titles = [t.title for t in report.tables()]
    assert "Parameter Count" not in titles and "Not run here" in titles
    assert "no PyTorch eager row in this run" in report.inference_time_tables()[0].note

    with pytest.raises(UserError, match="PyTorch is not installed to export them: pass --models"):
        run_bench(BenchOptions(backends=("onnxruntime-cpu",), sizes=(64,)), say=lambda m: None)


def test_bad_options_are_named():
    with pytest.raises(UserError, match="--backends: tensorrtt is not one of .*, torch, onnxruntime"):
        run_bench(BenchOptions(backends=("tensorrtt",)))
    with pytest.raises(UserError, match="--models .* is not a folder"):
        run_bench(BenchOptions(backends=("onnxruntime-cpu",), models="/no/such/folder", sizes=(64,)))


def test_each_rate_is_set_against_the_matmul_rate_of_its_own_device_and_precision():
    """A GPU row against the CPU's matmul rate would read thousands of percent: each row takes the
    ceiling of where and how it ran, INT8 that of FP32, and a ceiling nobody measured says so."""
    runs = {
        ("torch-cpu", "fp32"): 100.0,
        ("onnxruntime-cpu", "int8"): 25.0,
        ("torch-cuda", "fp32"): 4.0,
        ("torch-cuda", "fp16"): 2.0,
        ("tensorrt", "int8"): 1.0,
    }
    results = [Result(Case(b, p, "absi", 352, 1), TimingStats.from_seconds([ms / 1e3])) for (b, p), ms in runs.items()]
    results.append(Result(Case("onnxruntime-cuda", "fp32", "absi", 352, 1), skipped="no CUDA provider"))
    flops = {"absi": [{"key": "total", "part": "Total", "input": "352x352", "gflops": 80.0}]}
    rates = {"cpu fp32": 200.0, "cuda fp32": 40000.0, "cuda fp16": 400000.0}
    report = BenchReport("msdeploy bench", "stamp", "pvt_v2_b2", {}, results, flops=flops, matmul_rates=rates)
    table = report.rate_table()
    rows = {row[0]: row[3:] for row in table.rows}
    assert rows == {
        "torch-cpu fp32": ["800.0", "cpu fp32", "200.0", "400%"],
        "onnxruntime-cpu int8": ["3200.0", "cpu fp32", "200.0", "1600%"],
        "torch-cuda fp32": ["20000.0", "cuda fp32", "40000.0", "50%"],
        "torch-cuda fp16": ["40000.0", "cuda fp16", "400000.0", "10%"],
        "tensorrt int8": ["80000.0", "cuda fp32", "40000.0", "200%"],
    }
    del rates["cuda fp32"]
    assert {row[0]: row[5:] for row in report.rate_table().rows}["tensorrt int8"] == ["not measured", "-"]
    nothing_ran = BenchReport("c", "s", "b", {}, [results[-1]], flops=flops, matmul_rates=rates)
    assert nothing_ran.rate_table() is None  # no empty table


def test_torch_matmul_rate_is_measured():
    from bench.torch_rows import matmul_gflops

    assert matmul_gflops("cpu", "fp32", n=128, seconds=0.05) > 0


def test_without_tables_the_integration_table_says_why_memory_is_missing(models):
    options = BenchOptions(
        backends=("onnxruntime-cpu",), sizes=(64,), backbone=None, models=models, warmup=0, iterations=1, tables=False
    )
    report = run_bench(options, say=lambda m: None)
    assert report.params is None and report.flops is None and not report.matmul_rates
    assert report.integration_table().note == "peak memory: not measured (--no-tables)"
    assert [r[-3:] for r in report.integration_table().rows] == [["-", "-", "-"]] * len(EXPORTED_FUSIONS)


def test_a_family_name_stands_for_all_its_backends():
    assert expand_backends(["torch", "onnxruntime", "tensorrt", "torch-cpu"]) == [
        "torch-cpu",
        "torch-cuda",
        "torch-cuda-graphs",
        "onnxruntime-cpu",
        "onnxruntime-cuda",
        "tensorrt",
    ]


def test_each_backend_gets_the_int8_layout_it_runs_fastest(tmp_path):
    from bench.file_rows import ModelFile, pick_model

    files = [
        ModelFile(tmp_path / f"m.{name}.onnx", "pvt_v2_b0", "absi", "int8", layout, "onnx")
        for name, layout in (("int8", "tensorrt"), ("int8-cpu", "cpu"), ("int8-openvino", "openvino"))
    ]
    for backend, layout in (("onnxruntime-cpu", "cpu"), ("openvino-cpu", "openvino"), ("onnxruntime-cuda", "tensorrt")):
        assert pick_model(files, Case(backend, "int8", "absi", 64, 1), None).layout == layout
        assert pick_model(files[:1], Case(backend, "int8", "absi", 64, 1), None).layout == "tensorrt"  # else any
    # without its own layout, openvino-cpu takes the TensorRT layout before the cpu one, in any order
    older = [files[1], files[0]]
    assert pick_model(older, Case("openvino-cpu", "int8", "absi", 64, 1), None).layout == "tensorrt"
