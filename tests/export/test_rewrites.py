"""Export-time rewrites compute what the original network computes, on a copy, and leave the
original alone; the exported graphs show their effect (no BatchNorm left, narrow Transposes)."""

from __future__ import annotations

import torch
from torch import nn

from export.rewrites import ChannelsFirstMlp, fold_batchnorm, rewrite_for_export
from models import build_model


def test_rewritten_network_matches_the_original():
    torch.manual_seed(0)
    net = build_model("pvt_v2_b0", "hierarchical", exportable=True).eval()
    rewritten, applied = rewrite_for_export(net)
    assert applied["channels_first_mlp"] == 8  # pvt_v2_b0: 2 + 2 + 2 + 2 blocks
    assert applied["fold_batchnorm"] > 0
    assert not any(isinstance(m, ChannelsFirstMlp) for m in net.modules())  # the original is untouched
    assert not any(p1 is p2 for p1, p2 in zip(net.parameters(), rewritten.parameters()))
    x = torch.randn(2, 3, 97, 131)
    with torch.inference_mode():
        expected, got = net(x), rewritten(x)
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-4), (expected - got).abs().max()


def test_absi_with_explicit_softmax_matches_the_original():
    torch.manual_seed(0)
    net = build_model("pvt_v2_b0", "absi", exportable=True).eval()
    rewritten, applied = rewrite_for_export(net)
    assert applied["explicit_scale_softmax"] == 4  # one ABSI unit per pyramid level
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        assert torch.allclose(net(x), rewritten(x), atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_keeps_the_output():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
    bn = seq[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    seq.eval()
    x = torch.randn(2, 4, 9, 7)
    with torch.inference_mode():
        expected = seq(x)
        assert fold_batchnorm(seq) == 1
        got = seq(x)
    assert isinstance(seq[1], nn.Identity) and seq[0].bias is not None
    assert torch.allclose(expected, got, atol=1e-5)


def test_exported_graph_shows_the_rewrites(exported):
    """No BatchNormalization survives, and no Transpose moves the MLP's wide hidden tensor: the
    widest transposed tensor has the block width (256 at stage 4 of pvt_v2_b0), not 8x it."""
    import onnx

    from runtime.metadata import read_sidecar

    path = exported["hierarchical"]
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    transposed = [shapes[n.input[0]] for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in shapes]
    widest = max(max(s) for s in transposed if s)  # dynamic dims read 0; channel dims are static
    assert 0 < widest <= 256  # before the rewrite: the MLP hidden width, 256..1024 in pvt_v2_b0
    assert read_sidecar(path)["export_rewrites"]["channels_first_mlp"] == 8
