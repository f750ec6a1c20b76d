"""Checkpoints: the original implementation's layouts load into ours and give the same outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from models import build_model, load_checkpoint
from tests.helpers import make_processor, randomize_bn


@pytest.fixture(scope="module")
def trained_pair():
    """A hierarchical and an ABSI processor sharing backbone, refinement and heads, as one original
    module would (it builds both kinds of unit), plus that module's state dict."""
    torch.manual_seed(1)
    hier = make_processor("hierarchical")
    absi = make_processor("absi", backbone=copy.deepcopy(hier.backbone))
    randomize_bn(hier)
    randomize_bn(absi)
    absi.feature_fusion.refinement.load_state_dict(hier.feature_fusion.refinement.state_dict())
    absi.prediction_heads.load_state_dict(hier.prediction_heads.state_dict())
    original = dict(hier.state_dict())
    original.update({k: v for k, v in absi.state_dict().items() if ".absi_units." in k})
    return hier.eval(), absi.eval(), original


def test_original_layout_has_both_unit_kinds(trained_pair):
    _, _, original = trained_pair
    assert any(k.startswith("feature_fusion.absi_units.0.cross_scale_attn.in_proj_weight") for k in original)
    assert any(k.startswith("feature_fusion.hierarchical_units.3.spatial_attn.0.weight") for k in original)
    assert "loss_module.scale_weights" in original and "feature_fusion.absi_units.1.norm.weight" in original


@pytest.mark.parametrize("fusion", ["hierarchical", "absi"])
def test_original_processor_checkpoint_round_trip(trained_pair, fusion, caplog):
    hier, absi, original = trained_pair
    expected_model = hier if fusion == "hierarchical" else absi
    other = "absi" if fusion == "hierarchical" else "hierarchical"
    fresh = make_processor(fusion).eval()
    report = load_checkpoint(fresh, original)
    ((reason, dropped),) = report.dropped.items()
    assert reason.startswith(f"{other} fusion units") and all(f".{other}_units." in k for k in dropped)
    assert "dropped" in caplog.text  # reported, never silent
    x = torch.randn(2, 3, 96, 80)
    with torch.inference_mode():
        for got, want in zip(fresh(x), expected_model(x)):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_example4_network_layout(tmp_path):
    net = build_model("pvt_v2_b0", "hierarchical")
    randomize_bn(net)
    state = dict(net.state_dict())
    # Example 4 registers the shared backbone twice, and the original processor builds ABSI units too.
    state.update(
        {
            k[len("multi_scale_processor.") :]: v
            for k, v in state.items()
            if k.startswith("multi_scale_processor.backbone.")
        }
    )
    absi_units = make_processor("absi").feature_fusion.absi_units.state_dict()
    state.update({f"multi_scale_processor.feature_fusion.absi_units.{k}": v for k, v in absi_units.items()})
    path = tmp_path / "camoxpert.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)

    fresh = build_model("pvt_v2_b0", "hierarchical")
    report = load_checkpoint(fresh, path)
    assert set(report.dropped) == {
        "duplicate of the shared backbone (Example 4 layout)",
        "absi fusion units (model uses hierarchical)",
    }
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), net(x), atol=0, rtol=0)

    bad = dict(state)
    bad["backbone.patch_embed.proj.bias"] = bad["backbone.patch_embed.proj.bias"] + 1
    with pytest.raises(ValueError, match="differs from multi_scale_processor.backbone"):
        load_checkpoint(fresh, bad)


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    net = build_model("pvt_v2_b0", "absi")
    path = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    fresh = build_model("pvt_v2_b0", "absi", weights=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), net(x), atol=0, rtol=0)


def test_missing_and_unexpected_keys_are_named():
    net = build_model("pvt_v2_b0", "hierarchical")
    state = dict(net.state_dict())
    del state["decoder.stages.0.block.0.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"missing keys: decoder\.stages\.0\.block\.0\.weight.*"
        r"unexpected keys: decoder\.extra\.weight",
    ):
        load_checkpoint(net, state)


def test_wrong_backbone_is_a_shape_error():
    state = build_model("pvt_v2_b0", "hierarchical").state_dict()
    with pytest.raises(ValueError, match="wrong shape"):
        load_checkpoint(build_model("pvt_v2_b1", "hierarchical"), state)


def test_processor_checkpoint_into_network_says_what_to_do(trained_pair):
    _, _, original = trained_pair
    with pytest.raises(ValueError, match="load it into model.multi_scale_processor"):
        load_checkpoint(build_model("pvt_v2_b0", "hierarchical"), original)


def test_network_checkpoint_into_processor():
    state = build_model("pvt_v2_b0", "hierarchical").state_dict()
    with pytest.raises(ValueError, match="full network"):
        load_checkpoint(make_processor(), state)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(make_processor(), path)
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(make_processor(), tmp_path / "absent.pth")
