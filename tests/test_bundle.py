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
    result = CliRunner().invoke(main, [*args, "--calib-count", "4", "--dla-core", "0", "--max-size", "512"])
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
    assert "--dla-core 0" in command and "--max-shape 1x3x512x512" in command and "--workspace 2G" in command
    assert command in (board / "build_engine.sh").read_text() and command in (board / "README.md").read_text()
    assert "--useDLACore=0 --allowGPUFallback" in (board / "README.md").read_text()
    assert not list(board.parent.glob(".board.*"))  # the temporary folder is gone


def test_bundle_is_not_overwritten_without_force(bundle):
    board, _, args = bundle
    again = CliRunner().invoke(main, [*args, "--precision", "fp32", "--no-wheel"])
    assert again.exit_code == 2 and "not empty; pass --force" in again.output
    missing = CliRunner().invoke(main, [*args[:-2], "--precision", "fp32,int8", "-o", str(board.parent / "x")])
    assert missing.exit_code == 2 and "INT8 needs calibration images" in missing.output


def test_board_flow_with_the_fake_tensorrt(bundle, monkeypatch, tmp_path):
    """On the 'board': run the bundle's build command, then `msdeploy infer` with the engine."""
    import export.tensorrt_build as tb
    import runtime.cuda
    import runtime.tensorrt_backend as tbe
    import runtime.tensorrt_common as tc

    board, _, _ = bundle
    cuda = FakeCuda()
    trt = make_fake_tensorrt("10.3.0", legacy=True, dla_cores=2, cuda=cuda)
    for module in (tb, tbe, tc):
        monkeypatch.setattr(module, "import_tensorrt", lambda: trt)
    for module in (tb, tbe, runtime.cuda):
        monkeypatch.setattr(module, "CudaApi", lambda: cuda)
    monkeypatch.chdir(board)
    command = json.loads((board / "manifest.json").read_text())["engine"]["command"]
    built = CliRunner().invoke(main, shlex.split(command)[1:])
    assert built.exit_code == 0, built.output
    assert (board / "absi.fp16.engine").is_file() and trt.recorder.dla == (0,)

    photo = tmp_path / "photo.png"
    Image.fromarray(make_sample(np.random.default_rng(1), (90, 120)).image).save(photo)
    args = ["infer", "absi.fp16.engine", str(photo), "-o", str(tmp_path / "masks"), "--size", "128"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "tensorrt" in result.output
    assert Image.open(tmp_path / "masks" / "photo_mask.png").size == (120, 90)
