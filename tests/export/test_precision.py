"""FP16 in the graph: FP32 inputs/outputs, sensitive ops kept in FP32, parity within the FP16 bound."""

from __future__ import annotations

import re

import numpy as np
import pytest

import runtime
from calibration.fp16 import FP32_OPS
from export.precision import convert_fp16
from runtime.errors import UserError


@pytest.fixture(scope="module")
def fp16_model(fp16_absi):
    return fp16_absi


def test_fp16_graph_properties(fp16_model):
    import onnx

    _, result = fp16_model
    assert result.path.name == "absi.fp16.onnx" and result.sidecar.exists()
    model = onnx.load(str(result.path))
    init_types = {i.name: i.data_type for i in model.graph.initializer}
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(init_types[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    kept = [n for n in model.graph.node if n.op_type in FP32_OPS]
    assert {n.op_type for n in kept} >= {"LayerNormalization", "Softmax", "Resize"}
    for node in kept:  # no FP16 parameters reach them (int64 axes and the like are fine)
        for name in node.input[1:]:
            assert init_types.get(name) != onnx.TensorProto.FLOAT16, (node.op_type, name)
    runner = runtime.load(result.path)
    assert all(t.dtype == np.float32 for t in runner.inputs + runner.outputs)  # FP32 I/O
    assert runner.metadata.precision == "fp16"


def test_fp16_parity(fp16_model):
    _, result = fp16_model
    assert result.parity.passed
    assert result.parity.worst()["mask_logits"] <= 1e-2, result.parity.summary()
    out = runtime.load(result.path).infer(np.zeros((2, 3, 97, 131), np.float32))
    assert out["mask_logits"].shape == (2, 1, 97, 131) and np.isfinite(out["mask_logits"]).all()


def test_parity_command_uses_the_fp16_tolerance(fp16_model):
    from click.testing import CliRunner

    from msdeploy.cli import main

    _, result = fp16_model
    out = CliRunner().invoke(main, ["parity", str(result.path), "--sizes", "96", "--batch", "1"])
    assert out.exit_code == 0, out.output
    assert "fp16" in out.output and re.findall(r"│ (PASS|FAIL)\s+│", out.output) == ["PASS"] * 5


def test_fp16_refusals(fp16_model):
    source, result = fp16_model
    with pytest.raises(UserError, match="already exists"):
        convert_fp16(source)
    with pytest.raises(UserError, match="already fp16"):
        convert_fp16(result.path, result.path.with_name("again.onnx"))


def test_fp16_without_weights_checks_against_the_fp32_onnx(exported, tmp_path):
    """A model exported from a checkpoint converts without --weights: the FP32 ONNX is the reference,
    the sidecar says so, and the converter's per-tensor warnings become one summary line."""
    import json
    import warnings

    from tests.helpers import copy_model

    source = copy_model(exported["hierarchical"], tmp_path / "hier.onnx")  # exported from the demo weights
    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert_fp16(source, progress=said.append)
    assert result.parity.passed and result.parity.reference.startswith("hier.onnx")
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["parity_reference"].startswith("the FP32 ONNX model")
    assert sum(m.startswith("FP16: ") for m in said) == 1
    assert not [w for w in caught if "will be truncated" in str(w.message)]
