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

from runtime.cpu_features import cpu_features

# the versions a result records; nvidia-pytriton bundles tritonserver (msdeploy serve)
# fmt: off
PACKAGES = (
    "multiscale-deploy", "numpy", "torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript",
    "tensorrt", "tensorrt-rtx-cu12", "polygraphy", "nvidia-modelopt", "nvidia-pytriton", "tritonclient",
    "openvino", "nncf",
)
# fmt: on


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
class BackendStatus:
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
    backends: list[BackendStatus] = field(default_factory=list)
    cpu_features: str = ""  # the BF16 / INT8 extensions present (runtime.cpu_features)

    def as_dict(self) -> dict:
        return asdict(self)


def _backends(gpus: list[str]) -> list[BackendStatus]:
    """Whether each backend of the vocabulary (runtime.backends.BACKENDS) can run here, and why not."""
    from runtime.backends import BACKENDS
    from runtime.tensorrt_common import TARGETS

    torch_ok = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("timm") is not None
    providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    # one runner for the engines of both NVIDIA builders; TensorRT-RTX also builds without a GPU
    builders = {t.name: next(filter(None, map(package_version, t.distributions)), None) for t in TARGETS.values()}
    installed = ", ".join(f"{name} {version}" for name, version in builders.items() if version)
    rtx = " (TensorRT-RTX builds engines here without one)" if builders["tensorrt-rtx"] else ""
    openvino = package_version("openvino")
    why_not = {
        "torch": None if torch_ok else "PyTorch is not installed here (runtime-only install; extra [export])",
        "onnxruntime": None if providers else "onnxruntime is not installed (pip install onnxruntime)",
        "tensorrt": None
        if installed
        else "not installed (JetPack ships TensorRT; desktop: extra [gpu]; RTX GPUs: extra [tensorrt-rtx])",
        "openvino": None if openvino else "OpenVINO is not installed (extra [openvino])",
    }
    out = []
    for name, spec in BACKENDS.items():
        reason = why_not[spec.family]
        if reason is None and spec.family == "onnxruntime" and spec.providers[0] not in providers:
            reason = f"onnxruntime has no {spec.providers[0]} here (needs onnxruntime-gpu and a GPU)"
        if reason is None and spec.device == "cuda" and not gpus:
            reason = (
                f"{installed} installed, but no NVIDIA GPU found{rtx}"
                if spec.family == "tensorrt"
                else "no NVIDIA GPU found"
            )
        detail = {
            "torch": "PyTorch eager",
            "onnxruntime": "providers: " + ", ".join(providers),
            "tensorrt": installed,
            "openvino": f"OpenVINO {openvino}, floats in {_openvino_precision()} by default",
        }
        out.append(BackendStatus(name, reason is None, reason or detail[spec.family]))
    return out


def _openvino_precision() -> str:
    from runtime.openvino_backend import default_inference_precision

    native = "native BF16 on this CPU" if cpu_features().bf16 else "no native BF16 on this CPU"
    return f"{default_inference_precision()} ({native})"


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
        cpu_features=cpu_features().describe(),
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
