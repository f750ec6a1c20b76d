"""The runtime-only install on aarch64 (Jetson's CPU architecture), under QEMU emulation, against x86.

Builds (once; reused after) an arm64 Debian root with debootstrap, installs this project's wheel (built
here) in it with its [runtime] extra's dependencies from the package index, runs `msdeploy infer`
and `runtime.Predictor` there on a model and images, runs Predictor here on the same files, and
compares: masks equal, probabilities within 1e-5. Then installs the [jetson] extra with every
TensorRT wheel that has an aarch64 build and checks what can be checked without a GPU (import,
feature detection, the runner's calls).
Writes docs/results/aarch64-emulated-<model>.md/json; exits 1 when a comparison fails, 2 when the check
cannot run (the reason is printed: root, debootstrap, qemu-user-static, binfmt_misc, a bad input).

    python benchmarks/check_aarch64.py                                  # the hierarchical demo checkpoint
    python benchmarks/check_aarch64.py --model m.onnx --images photos/  # your own files

Needs root (`sudo .venv/bin/python benchmarks/check_aarch64.py`). A few minutes to build the root the
first time, a few more for pip under emulation, and tens of seconds per image and run at 352x352 (the
results record the times; emulated, so not a Jetson's speed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench.scripts import script_command, script_parser, write_result
from runtime.environment import collect_environment, stamp
from runtime.errors import UserError
from runtime.tables import Table
from workflows.arm64_check import PROBABILITY_TOLERANCE, Arm64Report, check_on_arm64
from workflows.arm64_root import DEFAULT_QEMU_CPU, default_root_path, ensure_root, prepare_emulation

IMAGE_SIZES = ((352, 352), (300, 400), (240, 320))  # (height, width): square and not


def default_model(work: Path) -> Path:
    """The hierarchical demo checkpoint exported to ONNX (needs the [export] extra)."""
    from export.variants import export_fp32
    from models.demo_weights import DEMO_BACKBONE, demo_checkpoint

    weights = demo_checkpoint("hierarchical")
    return export_fp32(work / "demo_hierarchical.onnx", DEMO_BACKBONE, "hierarchical", weights, say=print)


def default_images(work: Path, count: int) -> Path:
    """`count` held-out synthetic images of several sizes."""
    from PIL import Image

    from calibration.synthetic import make_sample
    from models.demo_weights import HELD_OUT_SEED

    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(HELD_OUT_SEED + 7)  # held-out seed family, not the tests' images
    for i in range(count):
        sample = make_sample(rng, IMAGE_SIZES[i % len(IMAGE_SIZES)])
        Image.fromarray(sample.image).save(images / f"held_out_{i}.png")
    return images


def markdown(report: Arm64Report, command: str) -> str:
    root = report.root
    lines = [
        "# The runtime-only install on aarch64, under emulation, against x86",
        "",
        stamp(command, collect_environment()),
        "",
        f"- arm64 root: Debian {root['suite']} (`debootstrap --variant=minbase`, built {root['built']}), "
        f"Python {report.python}; CPU emulated by QEMU user mode as `{report.qemu_cpu}`",
        f"- a new virtual environment there with this project's wheel (built here) and the `[runtime]` extra's "
        f"dependencies from the package index ({report.install_seconds:.0f} s under emulation): "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.packages.items()) if k.lower() in _SHOWN),
        f"- model `{report.model}` at {report.size[0]}x{report.size[1]}, {report.threads} threads, ONNX Runtime CPU "
        "on both sides; x86 side: this machine's own environment (versions above)",
        "",
    ]
    images = Table(
        "Masks and probabilities, arm64 (emulated) against x86",
        ["image", "size", "CLI mask equal", "API mask equal", "pixels differing", "max abs prob diff",
         "arm64 network ms (emulated)", "x86 network ms", "result"],
        [
            [c.image, f"{c.width}x{c.height}", _yes(c.cli_mask_equal), _yes(c.api_mask_equal), str(c.pixels_differing),
             f"{c.probability_max_abs:.2e}", f"{c.arm64_network_ms:.0f}", f"{c.x86_network_ms:.0f}",
             "PASS" if c.passed else "FAIL"]
            for c in report.images
        ],
    )  # fmt: skip
    lines += [images.markdown(), ""]
    lines += [
        f"Bound: every mask equal (`msdeploy infer`'s PNG and Predictor's array), probabilities within "
        f"{PROBABILITY_TOLERANCE:g}: **{'PASS' if report.passed else 'FAIL'}**. Emulated times say nothing "
        "about a Jetson's speed.",
        "",
    ]
    if report.tensorrt:
        rows = []
        for wheel in report.tensorrt:
            probe = wheel.probe
            if not wheel.installed:
                rows.append([wheel.wheel, "no", wheel.detail, "-", "-", "-"])
                continue
            features = probe.get("features", {})
            missing = [f"{k}.{n}" for k, names in probe.get("missing_runner_calls", {}).items() for n in names]
            imported = probe.get("version", "") if probe.get("imported") else probe.get("error", "")
            flags = [f"{k}={features[k]}" for k in ("weak_fp16", "implicit_int8", "runtime_cache") if k in features]
            rows.append([
                wheel.wheel, "yes", f"`import {wheel.module}`: {imported}", ", ".join(flags) or "-",
                ", ".join(features.get("compute_capabilities", [])) or "-",
                ", ".join(missing) if missing else ("none" if probe.get("imported") else "-"),
            ])  # fmt: skip
        trt = Table(
            "TensorRT wheels in the [jetson] environment (aarch64, no GPU: nothing runs)",
            ["wheel", "installs", "import", "features detected", "AOT compute capabilities", "runner calls missing"],
            rows,
        )
        jetson = ", ".join(f"{k} {v}" for k, v in sorted(report.jetson_packages.items()) if k.lower() in _SHOWN)
        lines += [trt.markdown(), "", f"[jetson] environment: {jetson}", ""]
    return "\n".join(lines)


_SHOWN = {"multiscale-deploy", "numpy", "onnxruntime", "pillow", "polygraphy", "click", "rich"} | {
    f"tensorrt_{kind}_{cuda}{part}" for kind in ("lean", "rtx") for cuda in ("cu12", "cu13") for part in ("", "_libs")
}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__, work=".bench-aarch64", fusions=False)
    parser.add_argument("--model", type=Path, help="an exported .onnx [default: the hierarchical demo checkpoint]")
    parser.add_argument("--images", type=Path, nargs="+", help="image files or folders [default: synthetic]")
    parser.add_argument("--count", type=int, default=3, help="synthetic images when --images is not given")
    parser.add_argument("--size", type=int, default=352, help="square network input side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help=f"the arm64 root [default: {default_root_path()}]")
    parser.add_argument("--qemu-cpu", default=DEFAULT_QEMU_CPU, help="the emulated CPU (QEMU_CPU)")
    parser.add_argument("--rebuild", action="store_true", help="build the arm64 root again (replacing --root)")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip the [jetson] and TensorRT wheel check")
    args = parser.parse_args(argv)
    command = script_command(__file__, argv)
    reason = prepare_emulation()
    if reason:
        print(f"cannot run arm64 programs here: {reason}", file=sys.stderr)
        return 2
    try:
        args.work.mkdir(parents=True, exist_ok=True)
        model = args.model or default_model(args.work)
        images = args.images or [default_images(args.work, args.count)]
        root, built = ensure_root(args.root, qemu_cpu=args.qemu_cpu, rebuild=args.rebuild)
        report = check_on_arm64(
            root, model, images, size=(args.size, args.size), threads=args.threads, tensorrt=not args.no_tensorrt,
            root_built=built,
        )  # fmt: skip
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    md = markdown(report, command)
    name = "pvt_v2_b0" if args.model is None else Path(model).stem
    write_result(args.output / f"aarch64-emulated-{name}", md, {"command": command, **report.as_dict()})
    print(md, flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
