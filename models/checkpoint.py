"""Loading checkpoints: ours, and the original implementation's layouts.

Accepted sources: a path (.pt/.pth/.ckpt via torch.load(weights_only=True), .safetensors) or a state
dict, optionally wrapped as {"state_dict": ...}, {"model": ...} or {"model_state_dict": ...}, optionally
with DDP's "module." prefix. Accepted layouts, for a full network or a processor:

- ours: `multi_scale_processor.{backbone,feature_fusion,loss_module,prediction_heads}.*`,
  `decoder.*`, `head.*` (or the processor's keys alone when loading into a processor);
- the original processor module: the same processor keys with no prefix, with BOTH
  `feature_fusion.absi_units.*` and `feature_fusion.hierarchical_units.*`;
- the guide's Example 4 network, which registers the shared backbone twice (`backbone.*` beside
  `multi_scale_processor.backbone.*`).

Keys of a fusion mode the model does not use are dropped and reported (logged and returned); the
alias copy of the backbone is dropped after checking it is identical; anything else that is missing,
unexpected or of the wrong shape is an error naming the keys.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.processor import MultiScaleInputProcessor
from runtime.errors import UserError

log = logging.getLogger("msdeploy")

PROCESSOR_PREFIX = "multi_scale_processor."
_UNITS_RE = re.compile(r"(^|\.)feature_fusion\.(\w+)_units\.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass
class LoadReport:
    """What `load_checkpoint` did besides loading: every key it left out, and why."""

    source: str
    loaded: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, key: str) -> None:
        self.dropped.setdefault(reason, []).append(key)


def read_state_dict(source: str | Path | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """A flat {key: tensor} dict from a path or a (possibly wrapped) mapping, and a description."""
    if isinstance(source, Mapping):
        state, name = dict(source), "<state dict>"
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        name = str(path)
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and safetensors errors all mean "not a checkpoint"
            raise UserError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{name} does not hold a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, name


def _processor_of(model: nn.Module) -> tuple[MultiScaleInputProcessor, str]:
    if isinstance(model, MultiScaleInputProcessor):
        return model, ""
    processor = getattr(model, "multi_scale_processor", None)
    if not isinstance(processor, MultiScaleInputProcessor):
        raise TypeError(f"load_checkpoint needs our network or processor, got {type(model).__name__}")
    return processor, PROCESSOR_PREFIX


def _to_model_layout(state: dict[str, torch.Tensor], prefix: str, report: LoadReport) -> dict[str, torch.Tensor]:
    """Rename the accepted layouts to the model's own keys."""
    if prefix:
        if not any(k.startswith(prefix) for k in state):
            # A processor-only checkpoint (the original module): everything belongs to the processor.
            return {prefix + k: v for k, v in state.items()}
        out = {}
        for key, value in state.items():
            if key.startswith("backbone."):  # Example 4's second registration of the shared backbone
                twin = prefix + key
                if twin not in state:
                    out[twin] = value
                elif torch.equal(state[twin], value):
                    report.drop("duplicate of the shared backbone (Example 4 layout)", key)
                else:
                    raise UserError(f"checkpoint key {key} differs from {twin}, though the backbone is shared")
            else:
                out[key] = value
        return out
    if any(k.startswith(PROCESSOR_PREFIX) for k in state):
        raise UserError(
            "this checkpoint is a full network (multi_scale_processor.*, decoder.*); "
            "load it into the network from build_model(...), not into a processor"
        )
    return state


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint(model: nn.Module, source: str | Path | Mapping) -> LoadReport:
    """Load `source` into our network or processor, strictly; see the module docstring."""
    processor, prefix = _processor_of(model)
    state, name = read_state_dict(source)
    report = LoadReport(source=name)
    state = _to_model_layout(state, prefix, report)

    fusion = processor.fusion
    kept = {}
    for key, value in state.items():
        match = _UNITS_RE.search(key)
        if match and match.group(2) != fusion:
            report.drop(f"{match.group(2)} fusion units (model uses {fusion})", key)
        else:
            kept[key] = value

    expected = model.state_dict()
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    if missing or unexpected:
        backbone = getattr(processor.backbone, "backbone_name", type(processor.backbone).__name__)
        parts = [f"checkpoint {name} does not fit this model (backbone {backbone}, fusion {fusion})"]
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        if missing and all(k.startswith(("decoder.", "head.")) for k in missing):
            parts.append("it holds a processor only; load it into model.multi_scale_processor")
        raise UserError("; ".join(parts))
    wrong = [
        f"{k} {list(kept[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if kept[k].shape != expected[k].shape
    ]
    if wrong:
        raise UserError(
            f"checkpoint {name} has tensors of the wrong shape for this backbone/fusion "
            f"(checkpoint vs model): {_describe(wrong, 6)}"
        )
    model.load_state_dict(kept, strict=True)
    report.loaded = len(kept)
    for reason, keys in report.dropped.items():
        log.warning("checkpoint %s: dropped %d keys: %s", name, len(keys), reason)
    return report


def state_sha256(module: nn.Module) -> str:
    """Hash of a module's state (names, dtypes, shapes and values), independent of file format."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
