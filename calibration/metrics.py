"""Camouflaged-object-detection metrics against ground truth, via pysodmetrics (the field's standard
implementation): S-measure, mean E-measure, weighted F-measure, MAE; plus IoU of the mask
thresholded at 0.5, which is what a deployed model hands its user."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.errors import UserError


def _sod():
    try:
        import py_sod_metrics
    except ImportError as exc:
        raise UserError("metrics need pysodmetrics: pip install 'multiscale-deploy[export]'") from exc
    return py_sod_metrics


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))).astype(np.float32)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@dataclass
class SegmentationScores:
    s_measure: float
    e_measure: float  # mean E-measure over thresholds
    weighted_f: float
    mae: float
    iou: float  # mean per-image IoU of prob >= 0.5 against the ground truth
    images: int

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


class SegmentationMetrics:
    """Accumulates per image: probabilities [H, W] in 0..1 and a ground-truth mask [H, W] (0/255 or bool)."""

    def __init__(self) -> None:
        sod = _sod()
        self._meters = {"sm": sod.Smeasure(), "em": sod.Emeasure(), "wfm": sod.WeightedFmeasure(), "mae": sod.MAE()}
        self._ious: list[float] = []

    def add(self, prob: np.ndarray, gt: np.ndarray) -> None:
        if prob.shape != gt.shape:
            raise UserError(f"prediction {prob.shape} and ground truth {gt.shape} differ in size")
        gt_u8 = np.where(gt > 127 if gt.dtype == np.uint8 else gt > 0.5, 255, 0).astype(np.uint8)
        pred_u8 = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
        for meter in self._meters.values():
            meter.step(pred=pred_u8, gt=gt_u8)
        self._ious.append(mask_iou(prob >= 0.5, gt_u8 > 127))

    def results(self) -> SegmentationScores:
        if not self._ious:
            raise UserError("no images were scored")
        em = self._meters["em"].get_results()["em"]["curve"]
        return SegmentationScores(
            s_measure=float(self._meters["sm"].get_results()["sm"]),
            e_measure=float(np.mean(em)),
            weighted_f=float(self._meters["wfm"].get_results()["wfm"]),
            mae=float(self._meters["mae"].get_results()["mae"]),
            iou=float(np.mean(self._ious)),
            images=len(self._ious),
        )
