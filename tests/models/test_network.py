"""The full network: shapes, train/eval behaviour, training makes progress, backbone weights file."""

from __future__ import annotations

import pytest
import torch

from models import CamoXpertMultiScale, MultiScaleCODNet, build_model


@pytest.mark.parametrize("fusion", ["hierarchical", "absi", "concat", "average"])
def test_mask_logits_at_input_size(fusion):
    model = build_model("pvt_v2_b0", fusion)
    assert not model.training
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 100, 76))
    assert out.shape == (2, 1, 100, 76)
    assert out.abs().max() <= 15.0


def test_alias_and_train_mode_returns_loss():
    assert CamoXpertMultiScale is MultiScaleCODNet
    model = build_model("pvt_v2_b0", "absi", eval_mode=False)
    logits, loss = model(torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 1, 64, 64)).float())
    assert logits.shape == (2, 1, 64, 64) and loss.ndim == 0 and loss.item() > 0
    logits, loss = model(torch.randn(2, 3, 64, 64))
    assert loss is None


@pytest.mark.parametrize("fusion", ["hierarchical", "absi"])
def test_a_few_optimizer_steps_lower_the_loss(fusion):
    model = build_model("pvt_v2_b0", fusion, eval_mode=False)
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 16:48, 16:48] = 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bce = torch.nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(8):
        logits, ms_loss = model(x, target)
        loss = bce(logits, target) + ms_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.85 * losses[0], losses


def test_backbone_weights_file(tmp_path):
    import timm

    source = timm.create_model("pvt_v2_b0")
    path = tmp_path / "pvt_v2_b0.pth"
    torch.save(source.state_dict(), path)
    model = build_model("pvt_v2_b0", backbone_weights=path)
    torch.testing.assert_close(
        model.backbone.state_dict()["patch_embed.proj.weight"], source.state_dict()["patch_embed.proj.weight"]
    )
    with pytest.raises(ValueError, match="does not fit backbone"):
        build_model("pvt_v2_b1", backbone_weights=path)
    with pytest.raises(ValueError, match="not found"):
        build_model("pvt_v2_b0", backbone_weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("fusion", ["hierarchical", "absi", "concat", "average"])
def test_half_precision_forward_keeps_one_dtype(fusion):
    """The FP16 rows of `msdeploy bench` run `net.half()` on a GPU; no tensor made inside the
    forward pass may fall back to float32 (checked on the CPU, which has FP16 kernels)."""
    torch.manual_seed(0)
    net = build_model("pvt_v2_b0", fusion).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        full = net(x)
        half = net.half()(x.half())
    assert half.dtype == torch.float16 and half.shape == full.shape
    assert torch.allclose(half.float(), full, atol=2e-2)
