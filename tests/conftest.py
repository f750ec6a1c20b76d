"""Shared fixtures: tiny backbones (pvt_v2_b0), small inputs, deterministic seeds, and the session's
ONNX exports (made once, in parallel, through the CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.helpers import EXPORT_WEIGHTS, EXPORTED_FUSIONS, SMALL_BACKBONE, copy_model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_backbone():
    from models import create_backbone

    return create_backbone(SMALL_BACKBONE)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    """pvt_v2_b0 exports (mask logits and fused features) of both fusion modes, with EXPORT_WEIGHTS."""
    out = tmp_path_factory.mktemp("onnx")
    procs = {}
    for fusion in EXPORTED_FUSIONS:
        path = out / f"{SMALL_BACKBONE}_{fusion}.onnx"
        cmd = [sys.executable, "-m", "msdeploy.cli", "export", "onnx", "--backbone", SMALL_BACKBONE]
        cmd += ["--fusion", fusion, "--features", "-o", str(path)]
        if EXPORT_WEIGHTS[fusion]:
            cmd += ["--weights", str(EXPORT_WEIGHTS[fusion])]
        procs[fusion] = (path, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    paths = {}
    for fusion, (path, proc) in procs.items():
        log, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, log
        paths[fusion] = path
    return paths


@pytest.fixture(scope="session")
def fp16_absi(exported, tmp_path_factory):
    """The ABSI export copied to its own folder as absi.onnx, with its FP16 variant beside it."""
    from export.precision import convert_fp16

    folder = tmp_path_factory.mktemp("fp16")
    source = copy_model(exported["absi"], folder / "absi.onnx")
    return source, convert_fp16(source)
