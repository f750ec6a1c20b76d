"""Which INT8 convolutions OpenVINO's CPU plugin computes correctly here: one Q/DQ Conv per shape.

Each case is a single Conv (random INT8 weights per output channel, a symmetric INT8 input
quantization, as our Q/DQ layouts write them) run by OpenVINO at f32 and bf16 inference precision
and by ONNX Runtime with its graph optimisations off (the Q/DQ arithmetic as written). A case is
wrong when the cosine of the two outputs is below --min-cosine. The rule the `openvino` INT8 layout
follows (`runtime.openvino_backend.amx_int8_conv_hazard`: such Convs stay float) is set beside
what was seen, so the table shows whether the rule covers every wrong case on this CPU and
OpenVINO release. Writes docs/results/openvino-int8-convs.md/json.

    python benchmarks/check_openvino_amx_convs.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python benchmarks/check_openvino_amx_convs.py --output /tmp/no-amx
"""

from __future__ import annotations

import os

import numpy as np

from bench.scripts import script_command, script_parser, write_result
from runtime.compare import cosine_similarity
from runtime.environment import stamp
from runtime.openvino_backend import amx_int8_conv_hazard
from runtime.tables import Table

CHANNELS = (3, 8, 12, 13, 15, 16, 24, 32, 40, 48, 56, 57, 63, 64, 96, 128)
KERNELS = ((1, 1), (2, 2), (3, 1), (3, 2), (4, 4), (5, 5), (7, 4), (8, 4), (8, 8))  # (kernel, stride)
SIDES = (8, 32)  # input height and width; 8 with an 8x8 kernel gives a 1x1 output


def qdq_conv(in_channels: int, kernel: int, stride: int, side: int, rng: np.random.Generator):
    """The ONNX model x -> Q -> DQ -> Conv(DQ(int8 weights)) -> y, 32 output channels."""
    from onnx import TensorProto, helper, numpy_helper

    out_channels = 32
    inits = [
        numpy_helper.from_array(np.array(0.03, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(rng.integers(-127, 128, (out_channels, in_channels, kernel, kernel), np.int8), "w"),
        numpy_helper.from_array((rng.random(out_channels) * 0.002 + 0.001).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(out_channels, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "x_scale", "x_zero"], ["dq"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["dq", "w_dq"], ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "qdq_conv", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__, fusions=False)
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args(argv)
    import onnxruntime as ort
    import openvino as ov

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    core, rng, rows, cases = ov.Core(), np.random.default_rng(0), [], []
    for channels in CHANNELS:
        for kernel, stride in KERNELS:
            for side in SIDES:
                if side < kernel:
                    continue
                model = qdq_conv(channels, kernel, stride, side, rng).SerializeToString()
                x = rng.standard_normal((1, channels, side, side)).astype(np.float32)
                want = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                seen = {}
                for precision in ("f32", "bf16"):
                    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2}
                    compiled = core.compile_model(core.read_model(model, b""), "CPU", config)
                    got = np.array(compiled.create_infer_request().infer({"x": x})[0])
                    seen[precision] = cosine_similarity(got, want)
                wrong = min(seen.values()) < args.min_cosine
                ruled = amx_int8_conv_hazard(channels, (kernel, kernel))
                cases.append(dict(channels=channels, kernel=kernel, stride=stride, side=side, cosine=seen,
                                  wrong=wrong, left_float_by_rule=ruled))  # fmt: skip
                if wrong or ruled:
                    rows.append(
                        [str(channels), f"{kernel}x{kernel} /{stride}", str(side), f"{seen['f32']:.4f}",
                         f"{seen['bf16']:.4f}", "wrong" if wrong else "right", "float" if ruled else "INT8"]
                    )  # fmt: skip
    missed = [c for c in cases if c["wrong"] and not c["left_float_by_rule"]]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "not set (all the CPU has)")
    lines = [
        "# OpenVINO INT8 convolutions against ONNX Runtime, one Q/DQ Conv per shape",
        "",
        stamp(script_command(__file__, argv)),
        f"- ONEDNN_MAX_CPU_ISA: {isa}",
        "",
        f"{len(cases)} shapes: input channels {', '.join(map(str, CHANNELS))}; kernel/stride "
        f"{', '.join(f'{k}x{k}/{s}' for k, s in KERNELS)}; input side {', '.join(map(str, SIDES))}; 32 output "
        f"channels. Wrong: cosine with ONNX Runtime below {args.min_cosine} at f32 or bf16 inference precision. "
        "Rule: what the `openvino` INT8 layout leaves float (`amx_int8_conv_hazard`).",
        "",
        f"- wrong: {sum(c['wrong'] for c in cases)}; left float by the rule: "
        f"{sum(c['left_float_by_rule'] for c in cases)}; wrong and not covered by the rule: {len(missed)}",
        "",
        Table(
            "Shapes that were wrong or that the rule leaves float",
            ["input channels", "kernel /stride", "input side", "f32 cosine", "bf16 cosine", "OpenVINO", "layout"],
            rows or [["-"] * 7],
        ).markdown(),
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    write_result(args.output / "openvino-int8-convs", markdown, {"command": script_command(__file__, argv),
                 "isa_cap": isa, "cases": cases, "missed_by_rule": missed})  # fmt: skip
    raise SystemExit(1 if missed else 0)


if __name__ == "__main__":
    main()
