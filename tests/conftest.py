"""Shared fixtures: tiny backbones (pvt_v2_b0), small inputs, deterministic seeds, and the session's
ONNX exports (made once, in parallel, through the CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SMALL_BACKBONE = "pvt_v2_b0"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_backbone():
    from models import create_backbone

    return create_backbone(SMALL_BACKBONE)


def make_processor(fusion: str = "hierarchical", scales=(0.5, 1.0, 1.5), backbone=None, **kwargs):
    from models import MultiScaleInputProcessor, create_backbone

    bb = backbone if backbone is not None else create_backbone(SMALL_BACKBONE)
    return MultiScaleInputProcessor(bb, bb.channels, scales, fusion=fusion, **kwargs)


def randomize_bn(module) -> None:
    """Give BatchNorm layers non-trivial running statistics so eval-mode comparisons mean something."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def copy_model(source: Path, target: Path) -> Path:
    """A model file and its `.json` sidecar, copied together (tests that write beside a model)."""
    import shutil

    for suffix in ("", ".json"):
        shutil.copy(str(source) + suffix, str(target) + suffix)
    return target


EXPORTED_FUSIONS = ("hierarchical", "absi")


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    """pvt_v2_b0 exports (mask logits and fused features) of both fusion modes, random-init seed 0."""
    out = tmp_path_factory.mktemp("onnx")
    procs = {}
    for fusion in EXPORTED_FUSIONS:
        path = out / f"{SMALL_BACKBONE}_{fusion}.onnx"
        cmd = [
            sys.executable,
            "-m",
            "msdeploy.cli",
            "export",
            "onnx",
            "--backbone",
            SMALL_BACKBONE,
            "--fusion",
            fusion,
            "--features",
            "-o",
            str(path),
        ]
        procs[fusion] = (path, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    paths = {}
    for fusion, (path, proc) in procs.items():
        log, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, log
        paths[fusion] = path
    return paths
