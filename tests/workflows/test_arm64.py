"""Jetson's CPU architecture under emulation (workflows.arm64_root, workflows.arm64_check): the refusals
and the chroot command here, and (slow set) the real thing: an arm64 Debian root, the runtime-only
install in it, masks and probabilities against x86, and the aarch64 TensorRT wheels."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.synthetic import make_sample
from runtime.errors import UserError
from workflows import arm64_check, arm64_root
from workflows.arm64_check import check_on_arm64, compare_runs, image_files, pip_failure
from workflows.arm64_root import MARKER, Arm64Root, ensure_root, prepare_emulation


@pytest.fixture
def emulation_ready(monkeypatch):
    """prepare_emulation passes, whatever this machine has."""
    monkeypatch.setattr(arm64_root, "prepare_emulation", lambda: None)


def test_the_reason_names_what_is_missing_and_how_to_get_it(monkeypatch):
    monkeypatch.setattr(arm64_root.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(arm64_root.os, "geteuid", lambda: 1000)
    assert "needs root" in prepare_emulation()

    monkeypatch.setattr(arm64_root.os, "geteuid", lambda: 0)
    monkeypatch.setattr(arm64_root.shutil, "which", lambda tool: None if tool == "debootstrap" else f"/usr/bin/{tool}")
    monkeypatch.setattr(arm64_root, "_qemu_interpreter", lambda: None)
    assert prepare_emulation() == "missing tools: apt install debootstrap qemu-user-static"

    monkeypatch.setattr(arm64_root.platform, "machine", lambda: "aarch64")
    assert "aarch64 already" in prepare_emulation()


def test_a_folder_that_is_not_a_finished_root_is_refused(tmp_path, emulation_ready):
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match=f"not a finished arm64 root \\(no {MARKER}\\)"):
        ensure_root(tmp_path / "root")
    info = {"arch": "arm64", "suite": "trixie", "mirror": "m", "packages": ["python3"], "built": "d"}
    info["build_seconds"] = 1.0
    (tmp_path / "root" / MARKER).write_text(json.dumps(info))
    with pytest.raises(UserError, match="Debian trixie root from m with python3; wanted arm64 Debian bookworm from "):
        ensure_root(tmp_path / "root")


def test_commands_run_in_the_root_with_a_clean_environment_and_the_emulated_cpu(tmp_path, monkeypatch):
    calls = []

    def recording_run(argv, **kwargs):  # a recording fake of subprocess.run
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 3, "", "no such file")

    monkeypatch.setattr(arm64_root.subprocess, "run", recording_run)
    monkeypatch.setenv("SECRET_TOKEN", "x")
    root = Arm64Root(tmp_path)
    with pytest.raises(UserError, match="python3 failed in the arm64 root \\(exit 3\\): no such file"):
        root.check(["python3", "-V"], what="python3", env={"PIP_CERT": "/etc/c.crt"})
    argv, kwargs = calls[0]
    assert Path(argv[0]).name == "chroot" and Path(argv[0]).is_absolute()  # found on the host's PATH, not the root's
    assert argv[1:] == [str(tmp_path), "python3", "-V"]  # nothing secret on the command line
    env = kwargs["env"]
    assert env["QEMU_CPU"] == "cortex-a76" and env["PIP_CERT"] == "/etc/c.crt" and "SECRET_TOKEN" not in env


def test_a_failed_debootstrap_leaves_nothing_behind(tmp_path, monkeypatch, emulation_ready):
    def failing_debootstrap(argv, **kwargs):  # a fake: starts the root, then fails
        staging = tmp_path / "root.partial"
        (staging / "etc").mkdir(parents=True)
        return subprocess.CompletedProcess(argv, 1, "I: Retrieving InRelease\n", "E: Couldn't download packages")

    monkeypatch.setattr(arm64_root.subprocess, "run", failing_debootstrap)
    with pytest.raises(UserError, match="debootstrap failed \\(exit 1\\); the root was not made: (.|\n)*download"):
        ensure_root(tmp_path / "root", say=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_mask_or_probability_that_differs_fails_the_comparison(tmp_path):
    rng = np.random.default_rng(0)
    probability = rng.random((12, 16), dtype=np.float32)
    mask = probability >= 0.5
    x86 = {"probability_0": probability, "mask_0": mask, "probability_1": probability, "mask_1": mask}
    nudged = probability.copy()
    nudged[3, 4] += 2 * arm64_check.PROBABILITY_TOLERANCE
    flipped = mask.copy()
    flipped[0, 0] = ~flipped[0, 0]
    arm = {"probability_0": probability, "mask_0": mask, "probability_1": nudged, "mask_1": flipped}
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray((mask * 255).astype(np.uint8)).save(masks / "a_mask.png")
    Image.fromarray((flipped * 255).astype(np.uint8)).save(masks / "b_mask.png")
    same, off = compare_runs([Path("a.png"), Path("b.png")], arm, x86, masks, [5.0, 5.0], [1.0, 1.0])
    assert same.passed and same.pixels_differing == 0 and same.probability_max_abs == 0.0
    assert not off.passed and not off.cli_mask_equal and not off.api_mask_equal and off.pixels_differing == 1
    assert off.probability_max_abs == pytest.approx(2 * arm64_check.PROBABILITY_TOLERANCE, rel=1e-3)
    (masks / "b_mask.png").unlink()
    with pytest.raises(UserError, match="wrote no mask for b.png"):
        compare_runs([Path("a.png"), Path("b.png")], arm, x86, masks, [5.0, 5.0], [1.0, 1.0])


def test_images_must_exist_and_have_distinct_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert image_files([tmp_path / "a"]) == [tmp_path / "a" / "x.png"]
    with pytest.raises(UserError, match="notes.txt is not an image file"):
        image_files([tmp_path / "a" / "notes.txt"])
    with pytest.raises(UserError, match="two images share a name"):
        image_files([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(UserError, match="does not exist"):
        image_files([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        image_files([tmp_path / "empty"])


@pytest.mark.slow
def test_runtime_only_install_on_emulated_arm64_matches_x86(exported, tmp_path):
    reason = prepare_emulation()
    if reason:
        pytest.skip(f"cannot run arm64 programs here: {reason}")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(23)
    for i, size in enumerate(((96, 128), (128, 96))):
        Image.fromarray(make_sample(rng, size).image).save(photos / f"p{i}.png")
    root, _ = ensure_root()
    report = check_on_arm64(root, exported["hierarchical"], [photos], size=(128, 128), tensorrt=True)

    assert report.packages["onnxruntime"] and "torch" not in report.packages and "onnx" not in report.packages
    assert report.python.startswith("3.")
    assert [c.image for c in report.images] == ["p0.png", "p1.png"]
    for c in report.images:
        assert c.cli_mask_equal and c.api_mask_equal, c
        assert c.probability_max_abs <= arm64_check.PROBABILITY_TOLERANCE, c
    assert report.passed
    # the torch-free TensorRT runner against the aarch64 wheels that exist: they import, and every call exists
    installed = [w for w in report.tensorrt if w.installed]
    assert installed, [w.detail for w in report.tensorrt]
    for wheel in installed:
        assert wheel.probe["imported"], wheel.probe
        assert not any(wheel.probe["missing_runner_calls"].values()), wheel.probe
        assert not wheel.probe["features"]["weak_fp16"]  # 11.x and TensorRT-RTX: strongly typed only
    assert "numpy" in report.jetson_packages and report.jetson_packages["numpy"].startswith("1.")


def test_pip_failures_are_told_in_one_line():
    stub = 'File ".../wheel_stub/wheel.py", line 92\n  socket.gaierror: [Errno -2] Name or service not known\nhint: x'
    assert "NVIDIA's stub package tried to download one" in pip_failure(stub)
    assert "no aarch64 build" in pip_failure("ERROR: ResolutionImpossible: for help visit https://...")
    assert pip_failure("Collecting x\nERROR: disk full\nhint: see above") == "ERROR: disk full"


def test_one_check_at_a_time_per_root(tmp_path):
    root = Arm64Root(tmp_path)
    with root.exclusive(), pytest.raises(UserError, match="another check is using the arm64 root"):  # noqa: SIM117
        with root.exclusive():
            pass
    with root.exclusive():  # released after the first
        pass
