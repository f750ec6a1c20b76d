"""Calibration statistics computed by the model itself, one image at a time, in bounded memory.

onnxruntime's calibrators make every calibrated tensor a graph output, copy all of them out for every
image and histogram them in Python: on pvt_v2_b2 that cost more than the network and held every
activation at once. Here the graph does the work: for each calibrated tensor it reduces to its exact
minimum and maximum and gathers a random sample of its values (fresh positions for every image).
The outputs are a few numbers and samples per tensor, so ONNX Runtime frees each activation as it
would in plain inference, and Python only bins the samples.

The methods read these statistics:
- max: the exact minimum and maximum over all images;
- percentile: the two-sided percentile of the sampled values (a histogram with `bins` bins; the
  extremes it is clipped to are the sampled ones: exact extremes cost two more passes over every
  activation);
- entropy: TensorRT's rule, the symmetric threshold whose 128-level quantization of the |x| histogram
  loses the least information (KL divergence).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The extra input: sorted uniform random numbers in [0, 1), one per sampled value. Sorted, so the
# gathers walk each activation front to back instead of jumping about (measurably faster).
SAMPLE_POSITIONS = "msdeploy_sample_positions"
MINIMA, MAXIMA, SAMPLES = "msdeploy_minima", "msdeploy_maxima", "msdeploy_samples"
QUANTIZED_LEVELS = 128  # per sign, as TensorRT's entropy calibrator


def calibrated_tensors(model, input_ops: Sequence[str], output_ops: Sequence[str] = ()) -> list[str]:
    """The float activations read by nodes of `input_ops` or written by nodes of `output_ops`
    (initializers excluded), in graph order: what a Q/DQ quantizer asks a range for."""
    from onnx import TensorProto, shape_inference

    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {vi.name: vi.type for vi in (*graph.value_info, *graph.output, *graph.input)}
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16}
    constants = {i.name for i in graph.initializer}
    chosen: dict[str, None] = {}
    for node in graph.node:
        read = node.input if node.op_type in input_ops else ()
        written = node.output if node.op_type in output_ops else ()
        for name in (*read, *written):
            kind = types.get(name)
            if name and name not in constants and kind is not None and kind.tensor_type.elem_type in floats:
                chosen[name] = None
    return list(chosen)


def statistics_model(model, tensors: Sequence[str], samples_per_tensor: int, extremes: bool):
    """A copy of `model` whose outputs are, for `tensors` in order: with `extremes`, MINIMA [K] and
    MAXIMA [K] (exact, two passes over each tensor); with `samples_per_tensor`, SAMPLES
    [K * samples_per_tensor] (float32), taken at the positions given by the int64 input
    SAMPLE_POSITIONS (modulo each tensor's size). The statistics nodes follow each tensor's producer;
    run it with ONNX Runtime's priority-based order, so each activation is free to go once the network
    is done with it (the default order would keep them all until the end)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not tensors or not (extremes or samples_per_tensor):
        raise ValueError("nothing to calibrate: no tensor, or neither extremes nor samples asked for")
    src = model.graph
    wanted = set(tensors)
    float16 = set()
    if any(i.data_type == TensorProto.FLOAT16 for i in src.initializer):  # an FP16 graph: find its FP16 tensors
        inferred = onnx.shape_inference.infer_shapes(model).graph
        typed = (*inferred.value_info, *inferred.input, *inferred.output)
        float16 = {vi.name for vi in typed if vi.type.tensor_type.elem_type == TensorProto.FLOAT16}
    index = {name: i for i, name in enumerate(tensors)}
    mins, maxs, samples = [None] * len(tensors), [None] * len(tensors), [None] * len(tensors)

    def stats_for(name: str) -> list:
        i = index[name]
        value = f"msdeploy_stat{i}"
        nodes = []
        if name in float16:
            nodes.append(helper.make_node("Cast", [name], [f"{value}_f32"], to=TensorProto.FLOAT))
            name = f"{value}_f32"
        if extremes:
            mins[i], maxs[i] = f"{value}_min", f"{value}_max"
            nodes += [
                helper.make_node("ReduceMin", [name], [f"{value}_min0"], keepdims=0),
                helper.make_node("Unsqueeze", [f"{value}_min0", "msdeploy_axis0"], [mins[i]]),
                helper.make_node("ReduceMax", [name], [f"{value}_max0"], keepdims=0),
                helper.make_node("Unsqueeze", [f"{value}_max0", "msdeploy_axis0"], [maxs[i]]),
            ]
        if samples_per_tensor:
            samples[i] = f"{value}_sample"
            nodes += [
                helper.make_node("Reshape", [name, "msdeploy_flat"], [f"{value}_flat"]),
                helper.make_node("Size", [name], [f"{value}_size"]),
                helper.make_node("Cast", [f"{value}_size"], [f"{value}_sized"], to=TensorProto.DOUBLE),
                helper.make_node("Mul", [SAMPLE_POSITIONS, f"{value}_sized"], [f"{value}_atd"]),
                helper.make_node("Cast", [f"{value}_atd"], [f"{value}_at"], to=TensorProto.INT64),
                helper.make_node("Gather", [f"{value}_flat", f"{value}_at"], [samples[i]], axis=0),
            ]
        return nodes

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.node[:]
    for name in src.input:
        if name.name in wanted:
            graph.node.extend(stats_for(name.name))
    for node in src.node:
        graph.node.append(node)
        for name in node.output:
            if name in wanted:
                graph.node.extend(stats_for(name))
    missing = [t for t, seen in zip(tensors, mins if extremes else samples) if seen is None]
    if missing:
        raise ValueError(f"no node produces {missing[:3]}")
    if extremes:
        graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "msdeploy_axis0"))
    if samples_per_tensor:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "msdeploy_flat"))
    del graph.output[:]
    count = len(tensors)
    outputs = [(MINIMA, mins, count), (MAXIMA, maxs, count)] if extremes else []
    if samples_per_tensor:
        graph.input.append(helper.make_tensor_value_info(SAMPLE_POSITIONS, TensorProto.DOUBLE, [samples_per_tensor]))
        outputs.append((SAMPLES, samples, count * samples_per_tensor))
    for name, parts, length in outputs:
        graph.node.append(helper.make_node("Concat", parts, [name], axis=0))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [length]))
    return out


class RangeCollector:
    """Running statistics of K tensors: exact minimum and maximum, and a histogram of sampled values
    over [-T, T] with `bins` bins. T starts at the first image's largest |x| and doubles when a later
    image goes beyond it; doubling merges pairs of bins, so the counts stay exact (no re-binning)."""

    def __init__(self, names: Sequence[str], bins: int = 2048):
        if bins < 2 * QUANTIZED_LEVELS or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= {2 * QUANTIZED_LEVELS}, got {bins}")
        self.names = list(names)
        self.bins = bins
        self.minima = np.full(len(self.names), np.inf)
        self.maxima = np.full(len(self.names), -np.inf)
        self.extent = np.zeros(len(self.names))  # T per tensor; 0 until the first image
        self.histograms = np.zeros((len(self.names), bins), np.int64)
        self.images = 0

    def add(
        self, minima: np.ndarray | None = None, maxima: np.ndarray | None = None, samples: np.ndarray | None = None
    ) -> None:
        """One image: per-tensor minimum and maximum [K] (None: those of the finite samples), and
        samples [K, S] (or flat K*S; None for the max method, which reads no histogram). NaN and
        infinities are left out of everything."""
        count = len(self.names)
        finite = None  # None: every sample is finite (the usual case, and the fast path)
        if samples is not None:
            samples = np.asarray(samples, np.float32).reshape(count, -1)
            if minima is None or maxima is None:
                minima, maxima = samples.min(axis=1), samples.max(axis=1)
            if not (np.isfinite(samples.min()) and np.isfinite(samples.max())):
                finite = np.isfinite(samples)
                kept = np.where(finite, samples, np.nan)
                minima, maxima = np.nanmin(kept, axis=1), np.nanmax(kept, axis=1)
                samples = np.where(finite, samples, 0.0).astype(np.float32)
        minima = np.where(np.isfinite(minima), minima, np.nan)
        maxima = np.where(np.isfinite(maxima), maxima, np.nan)
        self.minima = np.fmin(self.minima, minima)  # fmin/fmax skip NaN
        self.maxima = np.fmax(self.maxima, maxima)
        self.images += 1
        if samples is None:
            return
        largest = np.nan_to_num(np.fmax(np.abs(minima), np.abs(maxima)))
        fresh = (self.extent == 0) & (largest > 0)  # an all-zero tensor waits for a non-zero image
        self.extent[fresh] = np.maximum(largest[fresh], 1e-30)  # keeps the scale below float32's limit
        for i in np.flatnonzero((self.extent > 0) & (largest > self.extent)):
            self._widen(i, largest[i])
        half = self.bins // 2
        scale = np.divide(half, self.extent, out=np.zeros_like(self.extent), where=self.extent > 0)
        shifted = samples * scale.astype(np.float32)[:, None]
        shifted += half
        np.clip(shifted, 0, self.bins - 1, out=shifted)  # non-negative now: truncating is flooring
        positions = shifted.astype(np.intp)
        positions += (np.arange(count, dtype=np.intp) * self.bins)[:, None]
        weights = None if finite is None else finite.ravel()
        counts = np.bincount(positions.ravel(), weights=weights, minlength=count * self.bins)
        self.histograms += counts.reshape(count, self.bins).astype(np.int64)

    def _widen(self, i: int, needed: float) -> None:
        doublings = int(np.ceil(np.log2(needed / self.extent[i])))
        half = self.bins // 2
        old = self.histograms[i]
        new = np.zeros_like(old)
        factor = 2**doublings
        if factor >= half:  # the old values are all but zero on the new scale
            new[half - 1] = old[:half].sum()
            new[half] = old[half:].sum()
        else:
            merged = old.reshape(-1, factor).sum(axis=1)
            start = half - len(merged) // 2
            new[start : start + len(merged)] = merged
        self.histograms[i] = new
        self.extent[i] *= factor

    def edges(self, i: int) -> np.ndarray:
        return np.linspace(-self.extent[i], self.extent[i], self.bins + 1)

    def ranges(self, method: str, percentile: float = 99.99) -> dict[str, tuple[float, float]]:
        """(low, high) per tensor for a calibration method: max, percentile or entropy."""
        if not self.images:
            raise ValueError("no image was collected")
        if method == "max":
            picked = [(lo, hi) for lo, hi in zip(self.minima, self.maxima)]
        elif method == "percentile":
            picked = [self._percentile(i, percentile) for i in range(len(self.names))]
        elif method == "entropy":
            picked = [self._entropy(i) for i in range(len(self.names))]
        else:
            raise ValueError(f"unknown method {method!r}")
        return {
            name: (float(max(lo, low)), float(min(hi, high)))
            for name, (low, high), lo, hi in zip(self.names, picked, self.minima, self.maxima)
        }

    def _percentile(self, i: int, percentile: float) -> tuple[float, float]:
        """The outer edges of the bins holding the lower and upper (100 - p) / 2 % tails."""
        if self.extent[i] == 0:  # every value seen was zero
            return 0.0, 0.0
        cdf = np.cumsum(self.histograms[i]) / max(1, self.histograms[i].sum())
        tail = (100.0 - percentile) / 200.0
        edges = self.edges(i)
        low = int(np.searchsorted(cdf, tail, side="right"))
        high = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        return edges[min(low, self.bins - 1)], edges[min(high + 1, self.bins)]

    def _entropy(self, i: int, step: int = 8) -> tuple[float, float]:
        """TensorRT's entropy calibration on the |x| histogram: the threshold (a bin edge from 128 bins
        up, every `step` bins) minimising KL(P || Q), P the clipped histogram (tail folded into its
        last bin), Q its 128-level quantization spread back over P's non-empty bins."""
        half = self.bins // 2
        hist = self.histograms[i]
        folded = (hist[half:] + hist[:half][::-1]).astype(np.float64)
        if folded.sum() == 0 or self.extent[i] == 0:
            return 0.0, 0.0
        best, best_bins = np.inf, half
        tail = np.cumsum(folded[::-1])[::-1]  # tail[k]: the count at bin k and beyond
        for kept in range(QUANTIZED_LEVELS, half + 1, step):
            p = folded[:kept].copy()
            if kept < half:
                p[-1] += tail[kept]
            group = np.arange(kept) * QUANTIZED_LEVELS // kept
            nonzero = p > 0  # Q spreads over P's non-empty bins, the folded tail's last bin included
            sums = np.bincount(group, weights=folded[:kept], minlength=QUANTIZED_LEVELS)
            spread = np.bincount(group, weights=nonzero, minlength=QUANTIZED_LEVELS)
            q = np.where(nonzero, sums[group] / np.maximum(spread[group], 1), 0.0)
            p_sum, q_sum = p.sum(), q.sum()
            if q_sum == 0:
                continue
            mask = p > 0
            # bins where P has mass and Q none: a small floor, as TensorRT smooths its distributions
            qn = np.maximum(q[mask] / q_sum, 1e-12)
            divergence = float(np.sum(p[mask] / p_sum * np.log(p[mask] / p_sum / qn)))
            if divergence < best:
                best, best_bins = divergence, kept
        threshold = self.extent[i] * best_bins / half
        return -threshold, threshold
