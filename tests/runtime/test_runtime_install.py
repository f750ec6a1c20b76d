"""The runtime-only install: a fresh virtual environment with `multiscale-deploy[runtime]` (built as
the wheel a deploy bundle carries) runs inference on an ONNX model with no torch and no onnx in it;
with `[serve]` (slow set) it also writes a Triton repository and serves it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from calibration.synthetic import make_sample
from export.project_wheel import build_project_wheel
from tests.helpers import SMALL_BACKBONE, copy_model

NO_HEAVY_PACKAGES = (
    "import importlib.util, sys\n"
    "assert not any(importlib.util.find_spec(m) for m in ('torch', 'onnx', 'timm')), 'heavy packages installed'\n"
)


# what pip prints when the package index cannot be reached (a test environment, not a defect)
OFFLINE_SIGNS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "No matching distribution",
)


def fresh_venv(tmp_path, extras: str):
    """A new venv with the project wheel and `extras` installed from the package index."""
    wheel = build_project_wheel(tmp_path / "wheels")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[{extras}]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 and any(sign in install.stderr for sign in OFFLINE_SIGNS):
        pytest.skip(f"the package index cannot be reached from here: {install.stderr.strip()[-200:]}")
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def test_runtime_only_venv_runs_inference(exported, tmp_path):
    venv = fresh_venv(tmp_path, "runtime")

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(make_sample(np.random.default_rng(0), (120, 160)).image).save(photos / "a.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    model = exported["hierarchical"]

    code = NO_HEAVY_PACKAGES + (
        "from runtime import Predictor\n"
        f"result = Predictor({str(model)!r}).predict({str(photos / 'a.jpg')!r})\n"
        "assert result.mask.shape == (120, 160) and result.overlay().shape == (120, 160, 3)\n"
        "print(result.foreground)\n"
    )
    run = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr

    out = tmp_path / "masks"
    cli = subprocess.run(
        [venv / "bin" / "msdeploy", "infer", str(model), str(photos), "-o", str(out)], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["input"] for r in summary["results"]] == [str(photos / "a.jpg")]
    assert [f for f, _ in summary["failed"]] == [str(photos / "broken.jpg")]
    assert (out / "a_mask.png").is_file() and (out / "a_overlay.png").is_file()

    # the benchmark on a board: times the exported files, lists what needs PyTorch with the reason
    models = tmp_path / "models"
    models.mkdir()
    for path in exported.values():
        copy_model(path, models / path.name)
    results = tmp_path / "results"
    bench_args = ["bench", "--models", str(models), "--backbone", SMALL_BACKBONE, "--sizes", "64",
                  "--backends", "torch-cpu,onnxruntime-cpu,tensorrt", "--warmup", "0", "--iters", "2",
                  "--output", str(results)]  # fmt: skip
    bench = subprocess.run([venv / "bin" / "msdeploy", *bench_args], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    report = json.loads((results / f"bench-{SMALL_BACKBONE}.json").read_text())
    ran = {(r["case"]["backend"], r["case"]["fusion"]): r for r in report["results"]}
    for fusion in exported:
        assert ran[("onnxruntime-cpu", fusion)]["stats"]["median_ms"] > 0
        assert "PyTorch is not installed" in ran[("torch-cpu", fusion)]["skipped"]
        assert ran[("tensorrt", fusion)]["skipped"].startswith("tensorrt cannot run here")
    assert set(report["unavailable"]) == {
        "Parameter Count",
        "Computational Complexity",
        "Achieved compute rate",
        "Memory Usage per part",
    }
    assert set(report["memory"]) == set(exported)  # whole-network peak, from the ONNX models
    assert (results / f"bench-{SMALL_BACKBONE}.png").read_bytes()[:4] == b"\x89PNG"

    # a desktop-only command names the extra it needs instead of a traceback
    export = subprocess.run([venv / "bin" / "msdeploy", "export", "onnx"], capture_output=True, text=True)
    assert export.returncode == 2 and "multiscale-deploy[export]" in export.stderr
    assert "Traceback" not in export.stderr


@pytest.mark.slow
def test_serve_install_without_torch_serves_a_repository(exported, tmp_path):
    """`[serve]` on a machine without torch: export the Python-backend entry, serve it, get a mask."""
    venv = fresh_venv(tmp_path, "serve")
    repository = tmp_path / "repo"
    export = subprocess.run(
        [venv / "bin" / "msdeploy", "export", "triton", str(exported["absi"]), "--repository", str(repository),
         "--name", "cod", "--backend", "python"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert export.returncode == 0, export.stdout + export.stderr
    assert f'"{venv}"' in (repository / "cod" / "config.pbtxt").read_text()  # the served model runs in this venv
    image = tmp_path / "a.png"
    Image.fromarray(make_sample(np.random.default_rng(1), (96, 128)).image).save(image)
    code = NO_HEAVY_PACKAGES + (
        "from pathlib import Path\n"
        "from serving.client import ImageClient\n"
        "from serving.server import ServerOptions, TritonServer, free_port\n"
        f"options = ServerOptions(Path({str(repository)!r}), http_port=free_port(), grpc_port=free_port())\n"
        "with TritonServer(options) as s:\n"
        f"    mask, _ = ImageClient(s.grpc_url, 'cod', 'grpc').infer([Path({str(image)!r}).read_bytes()])\n"
        "assert mask.shape == (1, 96, 128) and s.leftovers() == []\n"
    )
    run = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
