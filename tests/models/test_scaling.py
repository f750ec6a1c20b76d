from __future__ import annotations

import pytest
import torch

from models.scaling import MultiScaleInputGenerator, scaled_size, validate_scales
from tests.helpers import original_rule


@pytest.mark.parametrize(
    "size, expected",
    [
        (352, [(160, 160), (352, 352), (512, 512)]),  # the guide's "176" is wrong for its own rule
        (384, [(192, 192), (384, 384), (576, 576)]),
        (416, [(192, 192), (416, 416), (608, 608)]),
        (256, [(128, 128), (256, 256), (384, 384)]),
    ],
)
def test_guide_sizes(size, expected):
    assert [scaled_size(size, size, s) for s in (0.5, 1.0, 1.5)] == expected


def test_non_square_and_odd_sizes():
    assert scaled_size(100, 76, 0.5) == (32, 32)  # 50 -> 32, 38 -> 32
    assert scaled_size(100, 76, 1.5) == (128, 96)  # 150 -> 128, 114 -> 96
    assert scaled_size(100, 76, 1.0) == (100, 76)  # 1.0x is not rounded
    assert scaled_size(33, 500, 0.5) == (32, 224)  # minimum side 32
    assert scaled_size(513, 257, 1.5) == (768, 384)


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.25, 1.5, 2.0, 0.6, 0.8])
def test_integer_rule_matches_original_float_rule(scale):
    for side in range(32, 2049):
        assert scaled_size(side, side, scale)[0] == original_rule(side, scale), side


def test_generator_outputs():
    gen = MultiScaleInputGenerator((0.5, 0.75, 1.0, 1.25, 1.5))
    x = torch.randn(2, 3, 100, 76)
    outs = gen(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(32, 32), (64, 32), (100, 76), (96, 64), (128, 96)]
    assert outs[2] is x


@pytest.mark.parametrize(
    "scales, fragment", [((0.5, 1.5), "lack 1.0"), ((), "empty"), ((0.0, 1.0), "positive"), ((1.0, 1.0), "duplicates")]
)
def test_bad_scales(scales, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_scales(scales)


def test_the_scaled_copies_trace_with_torchscript():
    """openvino.convert_model traces the network with TorchScript, where sizes are tensors: the size
    rule must hold there too, and follow a new input size (not freeze the traced one)."""
    import warnings

    generator = MultiScaleInputGenerator((0.5, 1.0, 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(generator, torch.zeros(1, 3, 96, 96))
    for height, width in ((96, 96), (128, 160), (352, 352)):
        x = torch.zeros(1, 3, height, width)
        assert [c.shape for c in traced(x)] == [c.shape for c in generator(x)]
