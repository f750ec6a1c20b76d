"""What this machine has: package versions, CPU/GPU, and which backends can run.

Imports neither torch nor onnx: versions come from package metadata, the GPU from nvidia-smi.
The same record stamps every generated result file (docs/results/).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache

PACKAGES = (
    "multiscale-deploy",
    "numpy",
    "torch",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxscript",
    "tensorrt",
    "tensorrt-rtx-cu12",
    "polygraphy",
    "nvidia-modelopt",
    "nvidia-pytriton",  # bundles tritonserver (msdeploy serve)
    "tritonclient",
)


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@dataclass
class Backend:
    name: str
    available: bool
    detail: str


@dataclass
class Environment:
    python: str
    platform: str
    cpu: str
    cpu_count: int
    gpus: list[str]
    packages: dict[str, str | None]
    backends: list[Backend] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _onnxruntime_backend() -> Backend:
    if importlib.util.find_spec("onnxruntime") is None:
        return Backend("onnxruntime", False, "not installed (pip install onnxruntime)")
    import onnxruntime as ort

    return Backend("onnxruntime", True, "providers: " + ", ".join(ort.get_available_providers()))


def _backends(gpus: list[str]) -> list[Backend]:
    torch_ok = importlib.util.find_spec("torch") is not None
    backends = [
        Backend("torch-cpu", torch_ok, "PyTorch eager" if torch_ok else "torch not installed (extra [export])"),
        Backend(
            "torch-cuda",
            torch_ok and bool(gpus),
            "PyTorch eager on the GPU" if torch_ok and gpus else "needs torch and an NVIDIA GPU",
        ),
        _onnxruntime_backend(),
    ]
    # one runner for the engines of both NVIDIA builders; TensorRT-RTX also builds without a GPU
    from runtime.tensorrt_common import TARGETS

    builders = {t.name: package_version(t.distribution) for t in TARGETS.values()}
    installed = [f"{name} {version}" for name, version in builders.items() if version]
    if not installed:
        detail = "not installed (JetPack ships TensorRT; desktop: extra [gpu]; RTX GPUs: extra [tensorrt-rtx])"
    elif not gpus:
        rtx = " (TensorRT-RTX builds engines here without one)" if builders["tensorrt-rtx"] else ""
        detail = f"{', '.join(installed)} installed, but no NVIDIA GPU found to run engines{rtx}"
    else:
        detail = ", ".join(installed)
    backends.append(Backend("tensorrt", bool(installed) and bool(gpus), detail))
    return backends


@lru_cache(maxsize=1)
def collect_environment() -> Environment:
    gpus = _gpus()
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count() or 1,
        gpus=gpus,
        packages={name: package_version(name) for name in PACKAGES},
        backends=_backends(gpus),
    )


def provenance(command: str, env: Environment | None = None) -> dict[str, str]:
    """How, when, where and with what a result was made: command, date, machine, versions."""
    import datetime

    env = env or collect_environment()
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{env.cpu}, {env.cpu_count} cores, GPUs: {', '.join(env.gpus) or 'none'}; "
        f"Python {env.python}, {env.platform}",
        "versions": ", ".join(f"{k} {v}" for k, v in env.packages.items() if v),
    }


def stamp(command: str, env: Environment | None = None, fields: dict[str, str] | None = None) -> str:
    """The Markdown header of every generated result (`fields`: a `provenance` already taken)."""
    f = fields or provenance(command, env)
    return "\n".join(
        [
            "Generated file; do not edit by hand.",
            "",
            f"- command: `{f['command']}`",
            f"- date: {f['date']}",
            f"- machine: {f['machine']}",
            f"- versions: {f['versions']}",
        ]
    )
