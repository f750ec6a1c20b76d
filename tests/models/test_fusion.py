"""Fusion units: ABSI against nn.MultiheadAttention, every mode in train and eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.fusion import FUSIONS, AttentionBasedScaleIntegration, ScaleAttention, fusion_class
from tests.helpers import randomize_bn


def test_scale_attention_equals_multihead_attention():
    channels, heads, scales = 32, 8, 3
    ours = ScaleAttention(channels, heads).eval()
    reference = nn.MultiheadAttention(channels, heads, dropout=0.1, batch_first=True).eval()
    # Same parameter names and shapes: the state dict moves across unchanged.
    reference.load_state_dict(ours.state_dict())
    q, k, v = (torch.randn(2, scales, channels, 5, 7) for _ in range(3))

    def tokens(t):  # [B, S, C, H, W] -> [B*H*W, S, C], the original's layout
        return t.permute(0, 3, 4, 1, 2).reshape(-1, scales, channels)

    expected, _ = reference(tokens(q), tokens(k), tokens(v))
    got = tokens(ours(q, k, v))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def reference_absi(unit: AttentionBasedScaleIntegration, feats, target_index=1):
    """ABSI exactly as the original code computes it (docs/architecture.md), with nn.MultiheadAttention on
    [B*H*W, S, C] tokens and out_proj applied to every scale before the weighted sum."""
    mha = nn.MultiheadAttention(unit.channels, 8, dropout=0.1, batch_first=True).eval()
    mha.load_state_dict(unit.cross_scale_attn.state_dict())
    size = feats[target_index].shape[-2:]
    resized = [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear") for f in feats]
    weights = unit.scale_importance(torch.cat(resized, dim=1))
    b, c, h, w = resized[0].shape
    s = len(feats)

    def tok(projs):
        stacked = torch.stack([p(f) for p, f in zip(projs, resized)], dim=1)
        return stacked.flatten(3).permute(0, 3, 1, 2).reshape(b * h * w, s, c)

    out, _ = mha(tok(unit.scale_queries), tok(unit.scale_keys), tok(unit.scale_values))
    out = out.view(b, h, w, s, c).permute(0, 3, 4, 1, 2)
    integrated = sum(out[:, i] * weights[:, i : i + 1] for i in range(s))
    return unit.out_proj(integrated) + resized[target_index]


@pytest.mark.parametrize("num_scales, target_index", [(3, 1), (5, 2)])
def test_absi_matches_reference_formulation(num_scales, target_index):
    unit = AttentionBasedScaleIntegration(32, num_scales)
    randomize_bn(unit)
    unit.eval()
    sizes = [(6, 5), (9, 7), (11, 9), (13, 10), (14, 11)][:num_scales]
    sizes[target_index] = (9, 7)
    feats = [torch.randn(2, 32, *hw) for hw in sizes]
    with torch.no_grad():
        torch.testing.assert_close(
            unit(feats, target_index), reference_absi(unit, feats, target_index), atol=2e-5, rtol=1e-4
        )


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("train", [True, False])
def test_every_fusion_mode_runs(fusion, train):
    unit = fusion_class(fusion)(64, 3).train(train)
    feats = [torch.randn(2, 64, 4, 5, requires_grad=True), torch.randn(2, 64, 8, 10), torch.randn(2, 64, 12, 15)]
    out = unit(feats, 1)
    assert out.shape == (2, 64, 8, 10)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert feats[0].grad is not None and feats[0].grad.abs().sum() > 0


def test_absi_dropout_only_in_training():
    unit = AttentionBasedScaleIntegration(32, 3)
    feats = [torch.randn(1, 32, 4, 4), torch.randn(1, 32, 8, 8), torch.randn(1, 32, 12, 12)]
    unit.eval()
    with torch.no_grad():
        torch.testing.assert_close(unit(feats), unit(feats))
        unit.train()
        assert not torch.allclose(unit(feats), unit(feats))


@pytest.mark.parametrize("num_scales", [2, 5])
def test_hierarchical_needs_three_scales(num_scales):
    with pytest.raises(ValueError, match="exactly three scales"):
        fusion_class("hierarchical")(32, num_scales)


def test_unknown_fusion():
    with pytest.raises(ValueError, match="choose one of: hierarchical, absi, concat, average"):
        fusion_class("sum")


def test_absi_channels_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible by 8"):
        ScaleAttention(36)


def test_torch_free_fusion_names_match_the_registry():
    from runtime.metadata import FUSION_NAMES

    assert tuple(FUSIONS) == FUSION_NAMES
