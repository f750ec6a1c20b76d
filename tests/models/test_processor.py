"""MultiScaleInputProcessor: the guide's examples, weight sharing, loss, warm-up, bad input."""

from __future__ import annotations

import pytest
import torch

from models import MultiScaleInputProcessor, create_backbone
from tests.helpers import make_processor


@pytest.fixture(scope="module")
def b2_processor():
    return make_processor("hierarchical", backbone=create_backbone("pvt_v2_b2")).eval()


@pytest.mark.parametrize("size", [256, 320, 352, 416])
def test_guide_example3_fused_shapes(b2_processor, size):
    with torch.inference_mode():
        feats = b2_processor(torch.randn(1, 3, size, size))
    expected = [(1, c, size // r, size // r) for c, r in zip((64, 128, 320, 512), (4, 8, 16, 32))]
    assert [tuple(f.shape) for f in feats] == expected


@pytest.mark.parametrize("fusion", ["hierarchical", "absi", "concat", "average"])
def test_odd_non_square_input(fusion):
    proc = make_processor(fusion).eval()
    with torch.inference_mode():
        feats = proc(torch.randn(2, 3, 100, 76))
    # PVT-v2 maps are ceil(H / stride) at the 1.0x scale, which is the fusion target
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 19), (13, 10), (7, 5), (4, 3)]


def test_guide_loss_example():
    proc = make_processor()
    losses = iter([0.35, 0.28, 0.42])

    def criterion(pred, target):
        return torch.tensor(next(losses))

    preds = [torch.zeros(1, 1, s, s) for s in (40, 88, 128)]
    total, report = proc.compute_loss(preds, torch.zeros(1, 1, 352, 352), criterion)
    assert total.item() == pytest.approx(0.665)
    assert report["loss_scale_0"] == pytest.approx(0.35)
    assert report["loss_scale_1"] == pytest.approx(0.28)
    assert report["loss_scale_2"] == pytest.approx(0.42)
    assert report["total_loss"] == pytest.approx(0.665)
    assert proc.loss_module.scale_weights.tolist() == [0.5, 1.0, 0.5]


def test_loss_target_resized_to_each_prediction():
    proc = make_processor()
    seen = []

    def criterion(pred, target):
        seen.append((tuple(pred.shape), tuple(target.shape)))
        return (pred - target).abs().mean()

    x = torch.randn(2, 3, 96, 64)
    _, preds = proc(x, return_loss_inputs=True)
    proc.compute_loss(preds, torch.rand(2, 1, 96, 64), criterion)
    assert [p for p, _ in seen] == [t for _, t in seen]
    assert [p[-2:] for p, _ in seen] == [(8, 8), (24, 16), (32, 24)]  # 1/4 of 32x32, 96x64, 128x96


def test_configurable_scale_weights():
    proc = make_processor(scale_weights=[0.3, 0.7, 1.0])
    assert proc.loss_module.scale_weights.tolist() == pytest.approx([0.3, 0.7, 1.0])
    with pytest.raises(ValueError, match="scale_weights has 2 entries"):
        make_processor(scale_weights=[1.0, 1.0])


def test_backbone_shared_and_counted_once(small_backbone):
    calls = []
    small_backbone.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[-2:])))
    proc = make_processor(backbone=small_backbone).eval()
    with torch.inference_mode():
        proc(torch.randn(1, 3, 128, 96))
    assert calls == [(64, 32), (128, 96), (192, 128)]  # one backbone, three scales
    n_backbone = sum(p.numel() for p in small_backbone.parameters())
    n_rest = sum(p.numel() for name, p in proc.named_parameters() if not name.startswith("backbone."))
    assert sum(p.numel() for p in proc.parameters()) == n_backbone + n_rest


def test_return_modes():
    proc = make_processor().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        fused = proc(x)
        f2, pyramids = proc(x, return_multi_scale=True)
        f3, preds = proc(x, return_loss_inputs=True)
        f4, pyramids4, preds4 = proc(x, return_multi_scale=True, return_loss_inputs=True)
    assert len(fused) == 4 and len(pyramids) == 3 and len(pyramids[0]) == 4
    assert len(preds) == 3 and len(preds4) == 3 and len(pyramids4) == 3
    for a, b, c in zip(fused, f3, f4):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_single_scale_warmup():
    proc = make_processor(multi_scale=False)
    calls = []
    proc.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-1]))
    x = torch.randn(2, 3, 64, 64)
    fused, preds = proc(x, return_loss_inputs=True)
    assert calls == [64] and len(preds) == 1 and len(fused) == 4
    total, report = proc.compute_loss(preds, torch.rand(2, 1, 64, 64), torch.nn.BCEWithLogitsLoss())
    assert set(report) == {"loss_scale_1", "weighted_loss_scale_1", "total_loss"}  # weight 1.0 for 1.0x
    assert report["total_loss"] == pytest.approx(report["loss_scale_1"])
    proc.enable_multi_scale()
    calls.clear()
    _, preds = proc(x, return_loss_inputs=True)
    assert calls == [32, 64, 96] and len(preds) == 3


@pytest.mark.parametrize(
    "x, fragment",
    [
        (torch.randn(3, 64, 64), r"\[B, 3, H, W\]"),
        (torch.randn(1, 4, 64, 64), r"\[B, 3, H, W\]"),
        (torch.randn(1, 3, 31, 64), "at least 32"),
        (torch.randn(1, 3, 64, 20), "at least 32"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN or Inf"),
        (torch.full((1, 3, 64, 64), float("inf")), "NaN or Inf"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ],
)
def test_bad_input(x, fragment):
    proc = make_processor().eval()
    with pytest.raises(ValueError, match=fragment):
        proc(x)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"scales": (0.5, 1.5, 2.0)}, "lack 1.0"),
        ({"scales": (0.5, 1.0)}, "exactly three scales"),
        ({"scales": (0.5, 0.75, 1.0, 1.25, 1.5)}, "exactly three scales"),
        ({"scales": (1.0, 0.5, 1.5)}, "ordered coarse, 1.0, fine"),
        ({"fusion": "mean"}, "unknown fusion 'mean'"),
    ],
)
def test_bad_configuration(small_backbone, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MultiScaleInputProcessor(small_backbone, small_backbone.channels, **{"scales": (0.5, 1.0, 1.5), **kwargs})


def test_five_scales_with_absi():
    proc = make_processor("absi", scales=(0.5, 0.75, 1.0, 1.25, 1.5)).eval()
    assert proc.target_index == 2
    assert proc.loss_module.scale_weights.tolist() == [0.5, 0.5, 1.0, 0.5, 0.5]
    with torch.inference_mode():
        feats = proc(torch.randn(1, 3, 96, 96))
    assert tuple(feats[0].shape) == (1, 32, 24, 24)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'pvt_v3'.*pvt_v2_b0"):
        create_backbone("pvt_v3")


def test_pretrained_without_weights_is_an_error():
    with pytest.raises(ValueError, match="never downloads"):
        create_backbone("pvt_v2_b0", pretrained=True)


@pytest.mark.parametrize(
    "name, channels", [("edgenext_xx_small", (24, 48, 88, 168)), ("resnet18", (64, 128, 256, 512))]
)
def test_other_backbone_families(name, channels):
    bb = create_backbone(name)
    assert bb.channels == channels and bb.reductions == (4, 8, 16, 32)
