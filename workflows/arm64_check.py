"""The runtime-only install on aarch64, checked under emulation against this x86 machine.

In an emulated arm64 Debian root (workflows.arm64_root):

1. a virtual environment with this project's wheel and its `[runtime]` extra, from the package index
   (aarch64 wheels of ONNX Runtime, numpy, Pillow);
2. `msdeploy infer` and the `runtime.Predictor` API on the given model and images;
3. the same Predictor code here, on x86, and the comparison: masks equal (the CLI's PNGs and the API's
   arrays), probabilities within PROBABILITY_TOLERANCE;
4. optionally (`tensorrt=True`) a second environment with the `[jetson]` extra and every TensorRT
   wheel that has an aarch64 build on the index: which install, and for those that do, that they
   import, what feature detection finds, and that every engine/context/runtime call of our TensorRT
   runner exists in them. Nothing TensorRT runs: there is no GPU.

Each check makes both environments anew inside the root and leaves them there (with pip's cache) for
a look afterwards; the model, images and results it copied in, and the host's CA bundle, are removed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from export.project_wheel import build_project_wheel
from runtime.errors import UserError
from runtime.metadata import sidecar_path
from runtime.preprocess import IMAGE_SUFFIXES
from workflows.arm64_root import Arm64Root

PROBABILITY_TOLERANCE = 1e-5
RUNTIME_VENV = "/opt/msdeploy-runtime"
JETSON_VENV = "/opt/msdeploy-jetson"
EXCHANGE = "/srv/msdeploy"  # inside the root: the model, images and results of one check
# NVIDIA's TensorRT wheels a torch-free runner could use; which have aarch64 builds is what the check finds
TENSORRT_WHEELS = ("tensorrt-lean-cu12", "tensorrt-lean-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx-cu13")
_MODULE_OF = {"tensorrt-lean": "tensorrt_lean", "tensorrt-rtx": "tensorrt_rtx"}

# Runs the same on both machines: the Predictor API on the images, probabilities and masks saved.
_PREDICT = """
import json, sys
import numpy as np
from runtime import Predictor
model, out, size, threads, *images = sys.argv[1:]
height, width = (int(v) for v in size.split("x"))
predictor = Predictor(model, backend="onnxruntime-cpu", size=(height, width), threads=int(threads))
arrays, network_ms = {}, []
for i, image in enumerate(images):
    result = predictor.predict(image)
    arrays[f"probability_{i}"], arrays[f"mask_{i}"] = result.probability, result.mask
    network_ms.append(result.network_ms)
np.savez(out, **arrays)
print(json.dumps({"network_ms": network_ms}))
"""

# Runs in the Jetson environment: what the TensorRT modules are, checked against our runner.
_PROBE_TENSORRT = """
import importlib, json, sys
from dataclasses import asdict
out = {}
for name in sys.argv[1:]:
    try:
        trt = importlib.import_module(name)
    except Exception as exc:
        out[name] = {"imported": False, "error": f"{type(exc).__name__}: {exc}"}
        continue
    try:
        from runtime.tensorrt_backend import missing_runner_calls
        from runtime.tensorrt_common import TensorRTFeatures
        out[name] = {"imported": True, "version": trt.__version__, "features": asdict(TensorRTFeatures.detect(trt)),
                     "builder": hasattr(trt, "Builder"), "missing_runner_calls": missing_runner_calls(trt)}
    except Exception as exc:
        out[name] = {"imported": True, "error": f"checking it failed: {type(exc).__name__}: {exc}"}
print("PROBE " + json.dumps(out))
"""


@dataclass
class ImageComparison:
    image: str
    width: int
    height: int
    cli_mask_equal: bool  # `msdeploy infer`'s PNG on arm64 against the x86 mask
    api_mask_equal: bool  # Predictor's mask on arm64 against x86
    pixels_differing: int  # API masks
    probability_max_abs: float
    arm64_network_ms: float  # under emulation: not a Jetson's speed
    x86_network_ms: float

    @property
    def passed(self) -> bool:
        return self.cli_mask_equal and self.api_mask_equal and self.probability_max_abs <= PROBABILITY_TOLERANCE


@dataclass
class TensorRTWheel:
    wheel: str  # the pip name asked for
    installed: bool
    detail: str  # pip's reason when it did not install
    module: str
    probe: dict = field(default_factory=dict)  # what _PROBE_TENSORRT found


@dataclass
class Arm64Report:
    model: str
    size: tuple[int, int]
    threads: int
    qemu_cpu: str
    root: dict  # RootInfo, and whether it was built by this check
    python: str
    packages: dict[str, str]  # what pip installed in the runtime environment
    install_seconds: float
    images: list[ImageComparison]
    tensorrt: list[TensorRTWheel] = field(default_factory=list)
    jetson_packages: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.images) and all(image.passed for image in self.images)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        data["tolerance"] = PROBABILITY_TOLERANCE
        for row, image in zip(data["images"], self.images):
            row["passed"] = image.passed
        return data


def image_files(inputs: Sequence[Path]) -> list[Path]:
    """Image files named, or found (not recursively) in the folders named, by suffix; names must differ,
    since the check's outputs are named after them."""
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{path} is not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
            files.append(path)
        else:
            raise UserError(f"{path} does not exist")
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise UserError("two images share a name; the check names its outputs after them: rename one")
    return files


def _pip_versions(root: Arm64Root, venv: str) -> dict[str, str]:
    listing = root.check([f"{venv}/bin/python", "-m", "pip", "list", "--format=json"], what="pip list")
    return {p["name"]: p["version"] for p in json.loads(listing)}


def install_project(root: Arm64Root, wheel: Path, venv: str, extras: str, env: dict[str, str]) -> None:
    """A new virtual environment at `venv` inside the root (any earlier one removed) with
    `wheel[extras]` installed from the package index, as a user's first install on a board."""
    inside = f"{EXCHANGE}/wheels/{wheel.name}"
    shutil.copy2(wheel, root.host_path(inside))
    shutil.rmtree(root.host_path(venv), ignore_errors=True)
    root.check(["python3", "-m", "venv", venv], what="python3 -m venv")
    pip = [f"{venv}/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    root.check([*pip, f"{inside}[{extras}]"], what=f"pip install [{extras}]", env=env)


def pip_failure(output: str) -> str:
    """pip's reason for not installing a package, in one line (its last line is only a hint)."""
    if "wheel_stub" in output and ("Name or service not known" in output or "URLError" in output):
        return (
            "no aarch64 wheel on the package index; NVIDIA's stub package tried to download one from "
            "NVIDIA's own index, which this machine cannot reach"
        )
    if "ResolutionImpossible" in output or "No matching distribution" in output:
        return "no aarch64 build on the package index (pip found no installable version)"
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
    return errors[0] if errors else (output.strip().splitlines() or ["pip failed"])[-1]


def _run_predict(python: Sequence[str], model: str, out: str, size: tuple[int, int], threads: int, images, run):
    size_arg = f"{size[0]}x{size[1]}"
    stdout = run([*python, "-c", _PREDICT, model, out, size_arg, str(threads), *images])
    return json.loads(stdout.strip().splitlines()[-1])["network_ms"]


def _host_run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise UserError(f"the x86 run failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
    return done.stdout


def _read_mask_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


def compare_runs(
    files: Sequence[Path], arm: Mapping, x86: Mapping, cli_masks: Path, arm_ms: Sequence[float], x86_ms: Sequence[float]
) -> list[ImageComparison]:
    """Per image: the arm64 CLI's mask PNG (in `cli_masks`) and the arm64 Predictor's mask and
    probability (`arm`, the saved arrays) against x86's (`x86`)."""
    comparisons = []
    for i, image in enumerate(files):
        x86_mask, arm_mask = x86[f"mask_{i}"], arm[f"mask_{i}"]
        png = cli_masks / f"{image.stem}_mask.png"
        if not png.is_file():
            raise UserError(f"msdeploy infer on arm64 wrote no mask for {image.name}; see its summary.json")
        cli_mask = _read_mask_png(png)
        diff = np.abs(arm[f"probability_{i}"].astype(np.float64) - x86[f"probability_{i}"])
        comparisons.append(
            ImageComparison(
                image.name, int(x86_mask.shape[1]), int(x86_mask.shape[0]),
                cli_mask.shape == x86_mask.shape and bool(np.array_equal(cli_mask, x86_mask)),
                bool(np.array_equal(arm_mask, x86_mask)), int(np.count_nonzero(arm_mask != x86_mask)),
                float(diff.max()), float(arm_ms[i]), float(x86_ms[i]),
            )
        )  # fmt: skip
    return comparisons


def _probe_tensorrt(root: Arm64Root, wheel: Path, env: dict[str, str], say) -> tuple[list[TensorRTWheel], dict]:
    say("installing the [jetson] extra and the TensorRT wheels with aarch64 builds")
    install_project(root, wheel, JETSON_VENV, "jetson", env)
    rows = []
    for name in TENSORRT_WHEELS:
        pip = [f"{JETSON_VENV}/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check", name]
        done = root.run(pip, env=env)
        reason = "" if done.returncode == 0 else pip_failure(done.stdout + done.stderr)
        module = next(m for prefix, m in _MODULE_OF.items() if name.startswith(prefix))
        rows.append(TensorRTWheel(name, done.returncode == 0, reason, module))
    modules = sorted({row.module for row in rows if row.installed})
    if modules:
        stdout = root.check([f"{JETSON_VENV}/bin/python", "-c", _PROBE_TENSORRT, *modules], what="the TensorRT probe")
        probe = json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("PROBE "))[6:])
        for row in rows:
            row.probe = probe[row.module] if row.installed else {}
    return rows, _pip_versions(root, JETSON_VENV)


def check_on_arm64(
    root: Arm64Root,
    model: Path,
    images: Sequence[Path],
    *,
    size: tuple[int, int] = (352, 352),
    threads: int = 2,
    tensorrt: bool = False,
    root_built: bool = False,
    say: Callable[[str], None] = print,
) -> Arm64Report:
    """Install the runtime in `root`, run `msdeploy infer` and Predictor on `images` there and Predictor
    here, and compare (see the module's description). The exchange folder inside the root is removed
    afterwards."""
    with root.exclusive():
        model = Path(model)
        if model.suffix != ".onnx" or not model.is_file():
            raise UserError(f"{model} is not an ONNX file; the check runs an exported model (msdeploy export onnx)")
        files = image_files(images)
        exchange = root.host_path(EXCHANGE)
        shutil.rmtree(exchange, ignore_errors=True)
        for folder in ("wheels", "images", "model"):
            (exchange / folder).mkdir(parents=True)
        try:
            shutil.copy2(model, exchange / "model" / model.name)
            if sidecar_path(model).is_file():
                shutil.copy2(sidecar_path(model), exchange / "model" / sidecar_path(model).name)
            for image in files:
                shutil.copy2(image, exchange / "images" / image.name)
            env = root.enable_network()
            with tempfile.TemporaryDirectory(prefix="msdeploy-arm64-") as tmp:
                say("building the project wheel")
                wheel = build_project_wheel(Path(tmp))
                say("installing the [runtime] extra in the arm64 root (pip, under emulation)")
                start = time.perf_counter()
                install_project(root, wheel, RUNTIME_VENV, "runtime", env)
                install_seconds = time.perf_counter() - start
                inside_model = f"{EXCHANGE}/model/{model.name}"
                inside_images = [f"{EXCHANGE}/images/{p.name}" for p in files]
                say(f"msdeploy infer on {len(files)} image(s) in the arm64 root")
                root.check(
                    [f"{RUNTIME_VENV}/bin/msdeploy", "infer", inside_model, f"{EXCHANGE}/images",
                     "-o", f"{EXCHANGE}/masks", "--size", f"{size[0]}x{size[1]}", "--threads", str(threads),
                     "--no-overlay"],
                    what="msdeploy infer",
                )  # fmt: skip
                say("runtime.Predictor in the arm64 root")
                arm_ms = _run_predict(
                    [f"{RUNTIME_VENV}/bin/python"], inside_model, f"{EXCHANGE}/arm64.npz", size, threads, inside_images,
                    lambda argv: root.check(argv, what="Predictor"),
                )  # fmt: skip
                say("runtime.Predictor here (x86)")
                x86_npz = Path(tmp) / "x86.npz"
                x86_ms = _run_predict([sys.executable], str(model), str(x86_npz), size, threads, list(map(str, files)),
                                      _host_run)  # fmt: skip
                with np.load(exchange / "arm64.npz") as arm, np.load(x86_npz) as x86:
                    comparisons = compare_runs(files, arm, x86, exchange / "masks", arm_ms, x86_ms)
                trt_rows, jetson_packages = _probe_tensorrt(root, wheel, env, say) if tensorrt else ([], {})
            return Arm64Report(
                model=model.name,
                size=size,
                threads=threads,
                qemu_cpu=root.qemu_cpu,
                root={**asdict(root.info), "built_by_this_check": root_built},
                python=root.python_version(),
                packages=_pip_versions(root, RUNTIME_VENV),
                install_seconds=round(install_seconds, 1),
                images=comparisons,
                tensorrt=trt_rows,
                jetson_packages=jetson_packages,
            )
        finally:
            shutil.rmtree(exchange, ignore_errors=True)
            root.disable_network()
