"""Calibration data from folders, preprocessing per metadata, and the synthetic camouflage set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from calibration.data import CalibrationSet, choose_subset, list_images, load_calibration_set
from calibration.synthetic import make_sample, write_dataset
from runtime.errors import UserError
from runtime.metadata import ModelMetadata
from runtime.preprocess import ImageReadError, load_rgb, preprocess


def _meta(**kw) -> ModelMetadata:
    return ModelMetadata(
        fusion="absi",
        backbone="pvt_v2_b0",
        scales=[0.5, 1.0, 1.5],
        channels=[32, 64, 160, 256],
        outputs=["mask_logits"],
        **kw,
    )


def test_preprocess_matches_the_normalisation_formula():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    x = preprocess(image, _meta(), size=(40, 60))
    assert x.shape == (1, 3, 40, 60) and x.dtype == np.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((image / 255.0 - mean) / std).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert preprocess(image, _meta()).shape == (1, 3, 352, 352)  # the metadata's default size
    assert preprocess(image, _meta(static_size=[96, 128]), size=(64, 64)).shape == (1, 3, 96, 128)
    with pytest.raises(UserError, match="below the model's minimum"):
        preprocess(image, _meta(), size=(16, 64))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.new("RGB", (20, 10), (10, 200, 30)).convert(mode).save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (10, 20, 3) and rgb.dtype == np.uint8


def test_unreadable_image(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match="cannot read image"):
        load_rgb(path)


def test_calibration_folder(tmp_path):
    write_dataset(tmp_path / "set", 6, size=(64, 80), seed=1)
    images = tmp_path / "set" / "images"
    (images / "broken.png").write_bytes(b"garbage")
    (images / "notes.txt").write_text("not an image")
    files = list_images(images)
    assert len(files) == 7 and all(p.suffix == ".png" for p in files)

    calib = load_calibration_set(images, _meta(), size=(64, 64))
    feeds = list(calib)  # read as iterated, not before
    assert len(calib) == 7 and len(feeds) == 6 and [p.name for p, _ in calib.skipped] == ["broken.png"]
    assert all(set(feed) == {"image"} and feed["image"].shape == (1, 3, 64, 64) for feed in feeds)
    assert [p.name for p in calib.used] == [f"{i:04d}.png" for i in range(6)]
    with pytest.raises(UserError, match="none of the 1 chosen images"):
        list(CalibrationSet([images / "broken.png"], _meta(), (64, 64), images))

    first = choose_subset(files, 3, seed=5)
    assert first == choose_subset(files, 3, seed=5)  # deterministic for a seed
    assert len(first) == 3 and first == sorted(first) and set(first) <= set(files)
    assert first != choose_subset(files, 3, seed=6)
    assert choose_subset(files, 99, seed=5) == files
    with pytest.raises(UserError, match="at least 1"):
        choose_subset(files, 0, seed=5)
    # the INT8 write gate reads the subset's first images, whether or not calibration ran
    head = load_calibration_set(images, _meta(), count=5, seed=2, size=(64, 64), first=2)
    assert head.files == choose_subset(files, 5, seed=2)[:2]


@pytest.mark.parametrize(
    "setup, fragment", [("missing", "does not exist"), ("empty", "no images"), ("file", "not a folder")]
)
def test_bad_calibration_folders(tmp_path, setup, fragment):
    target = tmp_path / "calib"
    if setup == "empty":
        target.mkdir()
    elif setup == "file":
        target.write_text("x")
    with pytest.raises(UserError, match=fragment):
        list_images(target)


@pytest.mark.parametrize("contrast", [0.06, 0.2])
def test_synthetic_samples_are_camouflaged_and_varied(contrast):
    rng = np.random.default_rng(0)
    samples = [make_sample(rng, (128, 128), contrast) for _ in range(8)]
    areas = [s.mask.mean() / 255 for s in samples]
    assert all(0.02 < a < 0.6 for a in areas) and np.std(areas) > 0.02  # objects of varied size
    centres = [np.argwhere(s.mask).mean(axis=0) for s in samples]
    assert np.std(centres, axis=0).min() > 5  # and position
    for s in samples:
        inside = s.image[s.mask > 0].mean(axis=0)
        outside = s.image[s.mask == 0].mean(axis=0)
        spread = s.image[s.mask == 0].std(axis=0)
        # camouflage: the object's mean colour moves from the background's by about the palette shift
        # (a colour vector of length contrast * 255 * sqrt(3)), no more: the texture itself carries no cue
        assert np.abs(inside - outside).max() < 2.5 * spread.max() + 3 * contrast * 255


def test_write_dataset_is_deterministic_and_refuses_to_overwrite(tmp_path):
    a = write_dataset(tmp_path / "a", 2, size=(48, 64), seed=3)
    b = write_dataset(tmp_path / "b", 2, size=(48, 64), seed=3)
    for sub in ("images", "masks"):
        for name in ("0000.png", "0001.png"):
            assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes()
    with pytest.raises(UserError, match="not empty; pass --force"):
        write_dataset(a, 2)
