"""Image-to-mask inference (`runtime.Predictor`, `msdeploy infer`): masks match PyTorch's on the
demo checkpoint, broken and odd files are reported and skipped, outputs are never overwritten
without --force, huge images stay within the pixel limit."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from calibration.metrics import mask_iou
from calibration.synthetic import make_sample
from export.parity import reference_probability
from models import build_model
from msdeploy.cli import main
from runtime import Predictor
from runtime.errors import UserError
from runtime.postprocess import overlay_image, probability_map
from runtime.preprocess import ImageReadError, read_image
from tests.helpers import EXPORT_WEIGHTS


def test_runtime_masks_match_pytorch_on_the_demo_checkpoint(exported):
    """FP32 ONNX Runtime masks against PyTorch's (the demo checkpoint, held-out-seed images of
    several sizes): PyTorch's side resizes its logits with torch itself (antialiased bilinear)."""
    net = build_model("pvt_v2_b0", "hierarchical", weights=str(EXPORT_WEIGHTS["hierarchical"]))
    predictor = Predictor(exported["hierarchical"], threads=2)
    rng = np.random.default_rng(10_000)
    scores = []
    for size in ((352, 352), (300, 400), (480, 360), (200, 200)):
        sample = make_sample(rng, size)
        result = predictor.predict(sample.image)
        torch_mask = reference_probability(net, sample.image, predictor.metadata) >= 0.5
        assert result.mask.shape == size and result.image.shape == (*size, 3)
        scores.append(mask_iou(result.mask, torch_mask))
    assert min(scores) >= 0.99, scores
    assert 0.0 < result.foreground < 1.0  # the trained network finds something, not everything


def test_probabilities_and_overlay():
    logits = np.array([[-50.0, 0.0], [50.0, 2.0]], np.float32)
    prob = probability_map(logits, (2, 2))
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)
    assert probability_map(logits, (5, 7)).shape == (5, 7)
    rgb = np.full((40, 40, 3), 100, np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = overlay_image(rgb, mask, color=(255, 0, 0), alpha=0.5)
    assert (out[~mask] == 100).all()  # outside the mask: untouched
    assert tuple(out[20, 20]) == (178, 50, 50)  # inside: tinted
    assert tuple(out[10, 20]) == (255, 0, 0)  # the outline


def test_predictor_takes_arrays_and_checks_them(exported):
    predictor = Predictor(exported["absi"], size=(64, 64))
    gray = np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)
    rgba = np.random.default_rng(1).integers(0, 255, (50, 70, 4), dtype=np.uint8)
    assert predictor.predict(gray).mask.shape == (50, 70)
    assert predictor.predict(rgba).overlay().shape == (50, 70, 3)
    with pytest.raises(UserError, match="uint8"):
        predictor.predict(np.zeros((50, 70, 3), np.float32))
    with pytest.raises(UserError, match="threshold"):
        Predictor(exported["absi"], threshold=1.5)
    with pytest.raises(UserError, match="below the model's minimum"):
        Predictor(exported["absi"], size=(16, 16))


def test_huge_images_are_decoded_reduced_or_refused(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=80)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    loaded = read_image(tmp_path / "big.jpg", max_pixels=1_000_000)
    assert loaded.reduction == 2 and loaded.rgb.shape == (750, 1000, 3) and loaded.original_size == (1500, 2000)
    assert read_image(tmp_path / "big.jpg", max_pixels=None).rgb.shape == (1500, 2000, 3)
    with pytest.raises(ImageReadError, match="over the limit of 1 MP for PNG"):
        read_image(tmp_path / "big.png", max_pixels=1_000_000)


@pytest.fixture
def image_folder(tmp_path):
    """Two synthetic images (one in a subfolder), grayscale, RGBA, a tiny image, a broken PNG, a text file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    Image.fromarray(make_sample(rng, (96, 128)).image).save(folder / "a.png")
    Image.fromarray(make_sample(rng, (80, 80)).image).save(folder / "sub" / "b.jpg")
    Image.fromarray(make_sample(rng, (64, 64)).image[..., 0]).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (70, 60, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(make_sample(rng, (20, 24)).image).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_infer_cli_on_a_folder_with_broken_files(exported, image_folder, tmp_path):
    out = tmp_path / "masks"
    args = ["infer", str(exported["absi"]), str(image_folder), "-o", str(out), "--size", "64", "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"failed \(unreadable\)\s+│ 1 ", result.output)
    summary = json.loads((out / "summary.json").read_text())
    written = {r["input"].split("photos/")[1]: r for r in summary["results"]}
    assert set(written) == {"a.png", "sub/b.jpg", "gray.png", "rgba.png", "tiny.png"}
    assert [f.split("photos/")[1] for f, _ in summary["failed"]] == ["broken.png"]
    assert [f.split("photos/")[1] for f, _ in summary["skipped"]] == ["notes.txt"]
    # masks and overlays at each image's own size, the folder layout kept
    assert Image.open(out / "sub" / "b_mask.png").size == (80, 80)
    with Image.open(out / "a_overlay.png") as overlay:
        assert overlay.size == (128, 96) and overlay.mode == "RGB"
    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    assert written["a.png"]["width"] == 128 and written["a.png"]["network_ms"] > 0
    assert written["tiny.png"]["notes"] == ["upsampled from 24x20 (below the model's minimum side 32)"]

    # an output folder that holds files is not written into without --force
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "not empty; pass --force" in again.output
    forced = CliRunner().invoke(main, [*args, "--force", "--soft", "--no-overlay"])
    assert forced.exit_code == 0, forced.output
    assert not set(np.unique(np.asarray(Image.open(out / "a_mask.png")))) <= {0, 255}  # grey levels now


def test_infer_cli_errors(exported, image_folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["infer", str(exported["absi"]), str(image_folder), "--backend", "tensorrt"])
    assert result.exit_code == 2 and "msdeploy export engine" in result.output
    result = runner.invoke(main, ["infer", str(exported["absi"]), str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["infer", str(exported["absi"]), str(tmp_path / "empty"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no image files" in result.output
