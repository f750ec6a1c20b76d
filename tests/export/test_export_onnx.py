"""ONNX export: parity with PyTorch at every size, metadata, bad input, no baked-in sizes.

The two real exports (pvt_v2_b0, hierarchical and ABSI, with feature outputs) run once per session,
in parallel through the CLI, and are shared by every test here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import runtime
from export.onnx_export import ExportOptions, export_onnx, trace_to_onnx
from models.runner import TorchRunner, network_for
from models.scaling import MultiScaleInputGenerator
from runtime.compare import run_parity
from runtime.errors import UserError, VerificationError
from runtime.metadata import read_sidecar
from tests.helpers import EXPORT_WEIGHTS, original_rule
from tests.helpers import EXPORTED_FUSIONS as FUSIONS

# 64..1024 pixels, square and not, multiples of 32 and not, batch 1..4 (the float64 reference makes
# each pixel costly: the largest batched shape runs in the slow set)
PARITY_SHAPES = [
    (1, 3, 64, 64),
    (4, 3, 97, 131),
    (2, 3, 352, 352),
    (2, 3, 200, 600),
    (1, 3, 1024, 1024),
    (1, 3, 1024, 77),
]
LARGE_PARITY_SHAPES = [(2, 3, 720, 1024), (3, 3, 200, 600)]
# about 27 s per fusion on 2 cores (float64 reference): the default run checks it on the export with
# trained weights (hierarchical), the slow set on every other fusion
BIG_SQUARE = (1, 3, 1024, 1024)


def _default_shapes(fusion: str) -> list[tuple[int, ...]]:
    return PARITY_SHAPES if EXPORT_WEIGHTS[fusion] else [s for s in PARITY_SHAPES if s != BIG_SQUARE]


def _slow_shapes(fusion: str) -> list[tuple[int, ...]]:
    return LARGE_PARITY_SHAPES + ([] if EXPORT_WEIGHTS[fusion] else [BIG_SQUARE])


@pytest.mark.parametrize(
    "fusion, shapes",
    [
        *(pytest.param(f, _default_shapes(f), id=f) for f in FUSIONS),
        *(pytest.param(f, _slow_shapes(f), marks=pytest.mark.slow, id=f"{f}-large") for f in FUSIONS),
    ],
)
def test_parity_across_sizes(exported, fusion, shapes):
    runner = runtime.load(exported[fusion])
    net = network_for(runner.metadata, EXPORT_WEIGHTS[fusion])
    report = run_parity(runner, TorchRunner(net, features=True), shapes)
    worst = report.worst()
    assert set(worst) == {"mask_logits", "fused_s4", "fused_s8", "fused_s16", "fused_s32"}
    assert report.passed, report.summary()
    # within 1e-4, or (trained weights, larger logits) within a few times PyTorch's own FP32 error
    for row in report.rows:
        bound = max(1e-4, 4 * (row.agreement.reference_error or 0.0))
        assert row.agreement.max_abs <= bound, (row.output, row.shape, row.agreement)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_metadata_and_sidecar(exported, fusion):
    import onnx

    path = exported[fusion]
    runner = runtime.load(path)
    meta = runner.metadata
    assert (meta.fusion, meta.backbone, meta.scales) == (fusion, "pvt_v2_b0", [0.5, 1.0, 1.5])
    assert meta.channels == [32, 64, 160, 256] and meta.min_size == 32 and meta.opset == 20
    assert meta.input_name == "image" and meta.input_layout == "NCHW"
    assert meta.normalization.mean == [0.485, 0.456, 0.406]
    assert meta.versions["torch"] and meta.versions["onnx"] and meta.versions["timm"]
    assert meta.weights["source"] == ("file" if EXPORT_WEIGHTS[fusion] else "random-init")
    assert len(meta.weights["state_sha256"]) == 64
    assert meta.parity["max_abs"]["mask_logits"] < (1e-3 if EXPORT_WEIGHTS[fusion] else 1e-4)  # trained: larger logits
    # dynamic batch, height and width in the graph itself
    (image,) = runner.inputs
    assert image.shape[1] == 3 and all(isinstance(d, str) for d in (image.shape[0], *image.shape[2:]))

    sidecar = read_sidecar(path)
    from runtime.files import sha256_file

    assert sidecar["model_sha256"] == sha256_file(path) and sidecar["fusion"] == fusion
    assert set(sidecar["export_seconds"]) == {"export", "simplify", "verify"}
    # one file, no external data, no per-node debug metadata
    assert sorted(p.name for p in path.parent.glob(f"{path.name}*")) == [path.name, path.name + ".json"]
    model = onnx.load(str(path))
    assert not any(n.metadata_props for n in model.graph.node)
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)


def test_graph_holds_every_backbone_block(exported):
    """The exporter drops what does not reach an output: the graph must hold all three backbone
    passes (pvt_v2_b0: 8 blocks, each with one attention softmax) and all four fusion levels."""
    import onnx

    model = onnx.load(str(exported["absi"]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Softmax") >= 3 * 8 + 4  # backbone attention x3 scales + ABSI scale importance
    assert ops.count("Exp") >= 4  # ABSI attention over the scales: softmax written out (export/rewrites.py)


def test_runner_checks_inputs(exported):
    runner = runtime.load(exported["hierarchical"])
    out = runner.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert out["mask_logits"].shape == (1, 1, 64, 64) and out["fused_s32"].shape == (1, 256, 2, 2)
    assert runner({"image": np.zeros((2, 3, 64, 96), np.float32)})["mask_logits"].shape == (2, 1, 64, 96)
    with pytest.raises(UserError, match="dtype float64"):
        runner.infer(np.zeros((1, 3, 64, 64)))
    with pytest.raises(UserError, match="shape"):
        runner.infer(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(UserError, match="at least 32x32"):
        runner.infer(np.zeros((1, 3, 16, 64), np.float32))
    with pytest.raises(UserError, match="missing"):
        runner.infer({"input": np.zeros((1, 3, 64, 64), np.float32)})


def test_parity_cli(exported, tmp_path):
    from click.testing import CliRunner

    from msdeploy.cli import main

    result = CliRunner().invoke(main, ["parity", str(exported["absi"]), "--sizes", "96,64x160", "--batch", "1,3"])
    assert result.exit_code == 0, result.output
    results = re.findall(r"│ (PASS|FAIL)\s+│", result.output)
    assert results == ["PASS"] * (4 * 5)  # 2 sizes x 2 batches x 5 outputs
    result = CliRunner().invoke(main, ["parity", str(exported["absi"]), "--sizes", "64", "--json"])
    data = json.loads(result.output)
    assert data["passed"] and {r["output"] for r in data["rows"]} >= {"mask_logits", "fused_s4"}


def test_parity_refuses_other_weights(exported, tmp_path):
    from models import build_model

    torch.manual_seed(99)
    path = tmp_path / "other.pth"
    torch.save(build_model("pvt_v2_b0", "hierarchical").state_dict(), path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "msdeploy.cli",
            "parity",
            str(exported["hierarchical"]),
            "--weights",
            str(path),
            "--sizes",
            "64",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "weights differ" in result.stderr


def test_parity_refuses_foreign_and_broken_files(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    onnx.save(helper.make_model(graph), str(foreign))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    for path, fragment in [
        (foreign, "no msdeploy metadata"),
        (broken, "not a loadable ONNX model"),
        (tmp_path / "missing.onnx", "not found"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "msdeploy.cli", "parity", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 2 and fragment in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    with pytest.raises(UserError, match="unknown model format"):
        runtime.load(tmp_path.joinpath("model.txt").write_text("x") and tmp_path / "model.txt")


# --- bad input: each fails before the slow export and leaves nothing behind -------------------------


def _no_leftovers(directory: Path, expected: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} == expected


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists; pass --force"):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", output=out))
    assert out.read_bytes() == b"precious"
    _no_leftovers(tmp_path, {"model.onnx"})


def test_unwritable_output_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", output=blocker / "model.onnx"))
    with pytest.raises(UserError, match="is a directory"):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", output=tmp_path))


def test_static_size_below_minimum(tmp_path):
    with pytest.raises(UserError, match="below the minimum size 32x32"):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", static=(16, 64), output=tmp_path / "m.onnx"))
    _no_leftovers(tmp_path, set())


def test_weights_that_do_not_fit(tmp_path):
    from models import build_model

    path = tmp_path / "b1.pth"
    torch.save(build_model("pvt_v2_b1", "hierarchical").state_dict(), path)
    with pytest.raises(UserError, match="wrong shape"):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", weights=path, output=tmp_path / "m.onnx"))
    _no_leftovers(tmp_path, {"b1.pth"})


def test_cli_export_user_error_exit_code(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "msdeploy.cli", "export", "onnx", "--backbone", "pvt_v2_b0", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--force" in result.stderr and "Traceback" not in result.stderr


# --- regression: size arithmetic must stay symbolic in the graph --------------------------------------


class ScaledCopies(nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = MultiScaleInputGenerator((0.5, 1.0, 1.5))

    def forward(self, image):
        return tuple(self.generator(image))


def _run_onnx(model, x: torch.Tensor) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def test_scaled_sizes_stay_symbolic_in_the_graph():
    module = ScaledCopies().eval()
    program = trace_to_onnx(module, torch.randn(2, 3, 288, 320), outputs=["s05", "s10", "s15"])
    for shape in [(1, 3, 100, 76), (3, 3, 352, 352), (1, 3, 33, 517), (2, 3, 1024, 640)]:
        x = torch.randn(*shape)
        want = [t.numpy() for t in module(x)]
        got = _run_onnx(program.model_proto, x)
        assert [g.shape for g in got] == [w.shape for w in want], shape
        for g, w in zip(got, want):
            # ORT and torch compute resize coordinates in different float precision: up to 2e-4 on
            # raw N(0,1) pixels at large ratios; a wrong coordinate mode would be off by ~0.5
            np.testing.assert_allclose(g, w, atol=1e-3)


def test_float_size_arithmetic_is_caught_by_verification(monkeypatch, tmp_path):
    """torch.export silently freezes the float rule to the example's size (no error, no warning);
    the parity check at other sizes is what must fail it."""
    import onnx

    import models.scaling as scaling

    monkeypatch.setattr(scaling, "scaled_side", original_rule)
    module = ScaledCopies().eval()
    program = trace_to_onnx(module, torch.randn(2, 3, 288, 320), outputs=["s05", "s10", "s15"])
    path = tmp_path / "baked.onnx"
    onnx.save(program.model_proto, str(path))
    report = run_parity(runtime.load(path), TorchRunner(module), [(1, 3, 100, 76), (2, 3, 288, 320)])
    assert not report.passed
    assert [r.agreement.shape_mismatch for r in report.rows] == [True, False, True, False, False, False]


@pytest.mark.slow
def test_export_with_baked_sizes_fails_and_writes_nothing(monkeypatch, tmp_path):
    import models.scaling as scaling

    monkeypatch.setattr(scaling, "scaled_side", original_rule)
    with pytest.raises(VerificationError, match="does not match its reference"):
        export_onnx(ExportOptions(backbone="pvt_v2_b0", output=tmp_path / "m.onnx"))
    _no_leftovers(tmp_path, set())


@pytest.mark.slow
def test_static_export(tmp_path):
    path = tmp_path / "static.onnx"
    result = export_onnx(ExportOptions(backbone="pvt_v2_b0", fusion="absi", static=(96, 128), output=path))
    assert result.parity.passed
    runner = runtime.load(path)
    (image,) = runner.inputs
    assert image.shape[1:] == (3, 96, 128) and isinstance(image.shape[0], str)  # batch stays dynamic
    assert runner.metadata.static_size == [96, 128]
    assert runner.infer(np.zeros((3, 3, 96, 128), np.float32))["mask_logits"].shape == (3, 1, 96, 128)
    with pytest.raises(UserError, match="size 64 on axis 2|exported for 96x128"):
        runner.infer(np.zeros((1, 3, 64, 128), np.float32))


def test_parity_fails_with_exit_code_1_on_a_wrong_model(exported, tmp_path):
    """A model whose weights were altered after export (one bias shifted) must FAIL, exit code 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported["hierarchical"]))
    inits = {i.name: i for i in model.graph.initializer}
    last_conv = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3][-1]
    bias = inits[last_conv.input[2]]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.05, bias.name))
    path = tmp_path / "tampered.onnx"
    onnx.save(model, str(path))
    result = subprocess.run(
        [sys.executable, "-m", "msdeploy.cli", "parity", str(path), "--sizes", "64", "--batch", "1"]
        + ["--weights", str(EXPORT_WEIGHTS["hierarchical"])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout and "Traceback" not in result.stderr
