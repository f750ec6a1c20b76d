"""`benchmarks/gpu_rows.sh`, the one prepared command for a lent GPU machine, must not rot between
loans: its options still parse and it writes its report (a dry run on the CPU here), and without a
GPU it stops at once instead of spending device minutes on rows it cannot fill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_rows.sh"
TINY = ["--backbone", "pvt_v2_b0", "--sizes", "64", "--fusion", "absi", "--warmup", "0", "--iters", "1",
        "--min-time", "0", "--no-tables"]  # fmt: skip


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), **env}
    return subprocess.run(["bash", str(SCRIPT), *TINY], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would measure, not stop")
def test_without_a_gpu_it_stops_at_once(tmp_path):
    run = run_script(tmp_path)
    assert run.returncode != 0 and "no CUDA GPU visible to PyTorch: nothing to measure" in run.stdout
    assert not list(tmp_path.glob("bench-*"))


def test_dry_run_writes_the_report_with_every_cuda_row(tmp_path):
    run = run_script(tmp_path, GPU_ROWS_ON_CPU="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {p.suffix for p in tmp_path.glob("bench-pvt_v2_b0.*")} == {".md", ".csv", ".json", ".png"}
    assert "torch" in (tmp_path / "gpu-rows.log").read_text()
    results = json.loads((tmp_path / "bench-pvt_v2_b0.json").read_text())["results"]
    variants = {(r["case"]["backend"], r["case"]["precision"]) for r in results}
    assert variants == {(b, p) for b in ("torch-cuda", "torch-cuda-graphs") for p in ("fp32", "fp16")}
    for r in results:
        assert (r["stats"] is not None) == torch.cuda.is_available()
        assert torch.cuda.is_available() or r["skipped"] == "no CUDA GPU visible to PyTorch"
