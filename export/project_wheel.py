"""A wheel of this project, for a deploy bundle: the board installs it without the source tree.

Built from a copy of the sources (setuptools writes build/ and egg-info beside the sources it
builds), so the checkout stays clean and two builds never collide.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the layers, bottom up (docs/architecture.md)
PACKAGES = ("runtime", "calibration", "models", "export", "bench", "serving", "workflows", "msdeploy")
TOP_FILES = ("pyproject.toml", "README.md")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*.tmp.*")
# the demo checkpoints (30 MB) serve PyTorch; a board runs the bundle's ONNX models instead
_IGNORE_WEIGHTS = shutil.ignore_patterns("__pycache__", "*.pyc", ".*.tmp.*", "*.safetensors")


def source_tree_available() -> bool:
    return all((PROJECT_ROOT / name).exists() for name in (*PACKAGES, *TOP_FILES))


def build_project_wheel(dest: Path, *, with_weights: bool = False, timeout: float = 600) -> Path:
    """Build `multiscale_deploy-VERSION-py3-none-any.whl` into `dest` and return its path; without
    the demo checkpoints unless `with_weights`."""
    if not source_tree_available():
        raise UserError(
            f"the project sources are not beside this install ({PROJECT_ROOT}); install from a source checkout "
            "to build a wheel, or pass --no-wheel"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="msdeploy-wheel-") as tmp:
        src = Path(tmp) / "src"
        for name in PACKAGES:
            shutil.copytree(PROJECT_ROOT / name, src / name, ignore=_IGNORE if with_weights else _IGNORE_WEIGHTS)
        for name in TOP_FILES:
            shutil.copy2(PROJECT_ROOT / name, src / name)
        out = Path(tmp) / "dist"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out)]
        result = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=timeout)
        wheels = sorted(out.glob("multiscale_deploy-*.whl"))
        if result.returncode != 0 or not wheels:
            raise UserError(f"building the project wheel failed: {(result.stderr or result.stdout).strip()[-800:]}")
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target
