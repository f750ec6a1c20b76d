"""`msdeploy export bundle`: the folder a user copies to a board. The board side (build the engine
with the bundle's own command, then infer) is driven through the RECORDING FAKE of TensorRT
(tests/fake_tensorrt.py): it checks our plumbing, not TensorRT."""

from __future__ import annotations

import json
import os
import shlex

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from calibration.synthetic import make_sample, write_dataset
from msdeploy.cli import main
from runtime.files import sha256_file
from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt


@pytest.fixture(scope="module")
def bundle(fp16_absi, tmp_path_factory):
    source, _ = fp16_absi  # absi.onnx with absi.fp16.onnx beside it: the bundle reuses that variant
    folder = tmp_path_factory.mktemp("bundle")
    calib = write_dataset(folder / "calib", 4, size=(96, 96), seed=5)
    args = ["export", "bundle", str(source), "-o", str(folder / "board"), "--calib-data", str(calib / "images")]
    result = CliRunner().invoke(main, [*args, "--calib-count", "4", "--max-size", "512"])
    assert result.exit_code == 0, result.output
    return folder / "board", result.output, args


def test_bundle_holds_every_variant_and_the_board_files(bundle):
    board, output, _ = bundle
    manifest = json.loads((board / "manifest.json").read_text())
    assert manifest["variants"] == {"fp32": "absi.onnx", "fp16": "absi.fp16.onnx", "int8": "absi.int8.onnx"}
    names = {f["file"] for f in manifest["files"]}
    for model in manifest["variants"].values():
        assert {model, model + ".json"} <= names
    assert "absi.onnx.calib-percentile.json" in names and "README.md" in names and "build_engine.sh" in names
    assert any(n.startswith("wheels/multiscale_deploy-") and n.endswith(".whl") for n in names)
    for entry in manifest["files"]:
        assert sha256_file(board / entry["file"]) == entry["sha256"]
    assert "FP16: reused" in output and "calibration cache" in output
    assert os.access(board / "build_engine.sh", os.X_OK)
    command = manifest["engine"]["command"]
    assert "--max-shape 1x3x512x512" in command and "--dla-core" not in command
    assert "--workspace 2G --board orin-nano" in command  # the default board's budget is checked on the board
    assert "refuses an\nengine that needs more than 3.00 GiB" in (board / "README.md").read_text()
    assert command in (board / "build_engine.sh").read_text() and command in (board / "README.md").read_text()
    assert "--maxShapes=image:1x3x512x512" in (board / "README.md").read_text()
    assert not list(board.parent.glob(".board.*"))  # the temporary folder is gone


def test_bundle_is_not_overwritten_without_force(bundle):
    board, _, args = bundle
    again = CliRunner().invoke(main, [*args, "--precision", "fp32", "--no-wheel"])
    assert again.exit_code == 2 and "not empty; pass --force" in again.output
    missing = CliRunner().invoke(main, [*args[:-2], "--precision", "fp32,int8", "-o", str(board.parent / "x")])
    assert missing.exit_code == 2 and "INT8 needs calibration images" in missing.output


def test_dla_bundle_builds_one_fixed_shape(bundle, tmp_path):
    """DLA has no dynamic dimensions: the bundle's build command asks for one shape, and a size range
    with --dla-core is refused before anything is written."""
    _, _, args = bundle
    nano = CliRunner().invoke(main, [*args[:-2], "--precision", "fp32", "--dla-core", "0", "-o", str(tmp_path / "n")])
    assert nano.exit_code == 2 and "Jetson Orin Nano 8GB has 0 DLA core(s)" in nano.output
    flags = ["--precision", "fp32,fp16", "--no-wheel", "--dla-core", "0", "--board", "orin-nx"]
    refused = CliRunner().invoke(main, [*args[:-2], *flags, "--max-size", "512", "-o", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--max-size does not apply to a DLA engine" in refused.output
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(main, [*args[:-2], *flags, "-o", str(tmp_path / "dla")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "dla" / "manifest.json").read_text())
    command = manifest["engine"]["command"]
    assert "--opt-shape 1x3x352x352 --dla-core 0" in command and "--workspace 4G --board orin-nx" in command
    assert "--min-shape" not in command and "--max-shape" not in command
    readme = (tmp_path / "dla" / "README.md").read_text()
    assert "--useDLACore=0 --allowGPUFallback" in readme and "--maxShapes=image:1x3x352x352" in readme
    assert "one input shape, 1x3x352x352" in readme and "--sizes 352" in readme


def test_board_flow_with_the_fake_tensorrt(bundle, monkeypatch, tmp_path):
    """On the 'board': run the bundle's build command, then `msdeploy infer` with the engine; then a
    DLA engine, which takes one input shape."""
    import export.tensorrt_build as tb
    import runtime.cuda
    import runtime.tensorrt_backend as tbe
    import runtime.tensorrt_common as tc

    board, _, _ = bundle
    cuda = FakeCuda()
    trt = make_fake_tensorrt("10.3.0", legacy=True, dla_cores=2, cuda=cuda)
    for module in (tb, tbe, tc):
        monkeypatch.setattr(module, "import_tensorrt", lambda target=None: trt)
    for module in (tb, tbe, runtime.cuda):
        monkeypatch.setattr(module, "CudaApi", lambda: cuda)
    monkeypatch.chdir(board)
    command = json.loads((board / "manifest.json").read_text())["engine"]["command"]
    built = CliRunner().invoke(main, shlex.split(command)[1:])
    assert built.exit_code == 0, built.output
    assert (board / "absi.fp16.engine").is_file() and trt.recorder.dla is None
    assert trt.recorder.profiles[-1] == ((1, 3, 128, 128), (1, 3, 352, 352), (1, 3, 512, 512))

    photo = tmp_path / "photo.png"
    Image.fromarray(make_sample(np.random.default_rng(1), (90, 120)).image).save(photo)
    args = ["infer", "absi.fp16.engine", str(photo), "-o", str(tmp_path / "masks"), "--size", "128"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "tensorrt" in result.output
    assert Image.open(tmp_path / "masks" / "photo_mask.png").size == (120, 90)

    range_on_dla = CliRunner().invoke(main, [*shlex.split(command)[1:], "--dla-core", "0", "--force"])
    assert range_on_dla.exit_code == 2 and "a DLA engine takes one fixed input shape" in range_on_dla.output
    dla = ["export", "engine", "absi.fp16.onnx", "--dla-core", "0", "-o", "absi.dla.engine"]
    assert CliRunner().invoke(main, dla).exit_code == 0
    assert trt.recorder.dla == (0,) and trt.recorder.profiles[-1] == ((1, 3, 352, 352),) * 3
    infer = ["infer", "absi.dla.engine", str(photo), "-o", str(tmp_path / "dla-masks")]
    assert CliRunner().invoke(main, infer).exit_code == 0  # the default size is the engine's one shape
    other = CliRunner().invoke(main, [*infer, "--size", "128", "--force"])
    assert other.exit_code == 2 and "1x3x352x352" in other.output, other.output
