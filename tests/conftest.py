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
# hierarchical carries the packaged demo checkpoint (real masks, and the export-from-weights path);
# absi is random-init seed 0 (the path without weights)
DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / f"{SMALL_BACKBONE}_hierarchical.safetensors"
EXPORT_WEIGHTS: dict[str, Path | None] = {"hierarchical": DEMO_WEIGHTS, "absi": None}


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    """pvt_v2_b0 exports (mask logits and fused features) of both fusion modes, with EXPORT_WEIGHTS."""
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
