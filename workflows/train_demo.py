"""`msdeploy train-demo`: train the small demo checkpoints (pvt_v2_b0, one per fusion mode) on synthetic
camouflage data.

No pretrained weights are reachable from every machine, so the demo network learns from scratch on
images from `calibration.synthetic`. The second fusion mode starts from the first one's backbone,
refinement, decoder and head (only its fusion units are new), which needs fewer steps. Weights are
stored in FP16 safetensors (small enough for git) beside a JSON training log with held-out metrics
measured on the stored (FP16-rounded) weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from calibration.metrics import SegmentationMetrics, SegmentationScores, sigmoid
from calibration.synthetic import make_sample
from models.demo_weights import DEMO_CONTRAST, HELD_OUT_SEED, HELD_OUT_SIZE, HELD_OUT_SIZES, WEIGHTS_DIR
from models.network import MultiScaleCODNet, build_model
from runtime.errors import UserError
from runtime.files import atomic_path, check_output_path, write_json_atomic
from runtime.metadata import Normalization
from runtime.preprocess import normalize
from workflows.train_config import TrainConfig


@dataclass
class TrainLog:
    config: dict
    steps: list[dict] = field(default_factory=list)
    held_out: dict = field(default_factory=dict)
    seconds: float = 0.0
    machine: dict = field(default_factory=dict)


def _batch(rng: np.random.Generator, count: int, size: int, contrast: float) -> tuple[torch.Tensor, torch.Tensor]:
    norm = Normalization()
    samples = [make_sample(rng, (size, size), contrast) for _ in range(count)]
    x = np.stack([normalize(s.image, norm) for s in samples])
    y = np.stack([(s.mask > 127).astype(np.float32)[None] for s in samples])
    return torch.from_numpy(x), torch.from_numpy(y)


def _image_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE plus soft IoU per image: the usual pair for segmentation of one object."""
    prob = logits.sigmoid()
    inter = (prob * target).sum(dim=(2, 3))
    union = (prob + target - prob * target).sum(dim=(2, 3))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2, 3))
    return bce + (1 - (inter + 1) / (union + 1))[:, 0]


def _mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _image_losses(logits, target).mean()


@torch.no_grad()
def _hardest(model: MultiScaleCODNet, x: torch.Tensor, y: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `keep` images the model does worst on (online hard-example mining): rare scenes the
    network gets wrong (an object lighter than a dark, saturated background) then come up far more
    often than random drawing shows them."""
    model.eval()  # no BatchNorm statistics from the candidates
    losses = _image_losses(model(x), y)
    model.train()
    chosen = losses.topk(keep).indices.sort().values
    return x[chosen], y[chosen]


def _contrast_at(step: int, cfg: TrainConfig) -> float:
    done = min(1.0, step / max(1.0, cfg.curriculum * cfg.steps))
    return cfg.contrast_start + (cfg.contrast - cfg.contrast_start) * done


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def metadata_of(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def _init_shared(model: MultiScaleCODNet, source: str) -> list[str]:
    """Start from a demo checkpoint: all of it when it has the same fusion (more training), else
    everything but the fusion units. Returns the names copied."""
    from safetensors.torch import load_file

    state = load_file(source)
    own = model.state_dict()
    same_fusion = metadata_of(source).get("fusion") == model.fusion
    shared = {
        k: v for k, v in state.items() if k in own and own[k].shape == v.shape and (same_fusion or "_units." not in k)
    }
    model.load_state_dict(shared, strict=False)
    return sorted(shared)


@torch.no_grad()
def evaluate(
    model: MultiScaleCODNet,
    count: int,
    size: tuple[int, int] = HELD_OUT_SIZE,
    contrast: float = DEMO_CONTRAST,
    seed: int = HELD_OUT_SEED,
) -> SegmentationScores:
    """Scores on the held-out synthetic set (its own seed, so never a training image)."""
    model.eval()
    rng = np.random.default_rng(seed)
    metrics = SegmentationMetrics()
    norm = Normalization()
    for _ in range(count):
        sample = make_sample(rng, size, contrast)
        logits = model(torch.from_numpy(normalize(sample.image, norm))[None]).numpy()[0, 0]
        metrics.add(sigmoid(logits), sample.mask)
    return metrics.results()


def save_fp16(model: MultiScaleCODNet, path: Path, info: dict[str, str]) -> None:
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=info)


def resume_path(output: Path) -> Path:
    return output.with_suffix(".resume.pt")


def _save_resume_point(path: Path, cfg: TrainConfig, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"config": _resumable(cfg), **state}, tmp)


def _resumable(cfg: TrainConfig) -> dict:
    """What must match to continue a run: everything but the thread count."""
    return {k: v for k, v in asdict(cfg).items() if k != "threads"}


def _load_resume_point(path: Path, cfg: TrainConfig) -> dict:
    state = torch.load(path, weights_only=False)
    saved = {"hard_examples": 0, **state["config"]}  # resume points from before the setting existed
    wanted = _resumable(cfg)
    if saved != wanted:
        differ = sorted(k for k in {*saved, *wanted} if saved.get(k) != wanted.get(k))
        raise UserError(
            f"{path} was made with other settings ({', '.join(differ)}); "
            "run with the same options, or pass --force to start over"
        )
    return state


def train_demo(
    cfg: TrainConfig,
    output: str | Path | None = None,
    *,
    force: bool = False,
    resume: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Path, TrainLog]:
    """Train, store FP16 weights and `<name>.train.json`, score the stored weights on the held-out set.

    Every `checkpoint_every` steps the full state (weights, optimizer, random generators, log) goes
    to `<name>.resume.pt`; `resume=True` continues from it, so a run can span several sessions."""
    from runtime.environment import collect_environment

    output = Path(output) if output else WEIGHTS_DIR / f"{cfg.backbone}_{cfg.fusion}.safetensors"
    log_path = output.with_suffix(".train.json")
    check_output_path(output, force=force)
    check_output_path(log_path, force=force)
    resume_file = resume_path(output)
    if resume and not resume_file.exists():
        raise UserError(f"nothing to resume: {resume_file} does not exist (drop --resume to start a run)")
    if resume_file.exists() and not resume:
        if not force:
            raise UserError(
                f"{resume_file} holds an unfinished run; pass --resume to continue it or --force to start over"
            )
        resume_file.unlink()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    model = build_model(cfg.backbone, cfg.fusion, cfg.scales, eval_mode=False)
    log = TrainLog(config=asdict(cfg), machine=asdict(collect_environment()))
    if cfg.init_from:
        from runtime.files import sha256_file

        source = Path(cfg.init_from)
        previous = source.with_suffix(".train.json")
        log.config["init_from"] = {
            "file": source.name,
            "sha256": sha256_file(source),
            "tensors_copied": len(_init_shared(model, source)),
            "its_training_log": json.loads(previous.read_text()) if previous.exists() else None,
        }
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    first_step, running, earlier, resumed_at = 0, None, 0.0, []
    if resume:
        state = _load_resume_point(resume_file, cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        first_step, running, earlier = state["step"], state["running"], state["seconds"]
        log.steps = state["steps"]
        resumed_at = [*state["resumed_at"], first_step]
        log.config["resumed_at"] = resumed_at
    start = time.perf_counter() - earlier
    for step in range(first_step, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        x, y = _batch(rng, cfg.batch + cfg.hard_examples, int(rng.choice(cfg.sizes)), _contrast_at(step, cfg))
        if cfg.hard_examples:
            x, y = _hardest(model, x, y, cfg.batch)
        logits, scale_loss = model(x, y)
        loss = _mask_loss(logits, y) + scale_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == cfg.steps - 1:
            log.steps.append(
                {
                    "step": step,
                    "loss": round(value, 5),
                    "smoothed": round(running, 5),
                    "lr": round(_lr_at(step, cfg), 7),
                    "contrast": round(_contrast_at(step, cfg), 4),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
        if progress:
            progress(step + 1, cfg.steps, running)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            state = {
                "step": step + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "running": running,
                "seconds": time.perf_counter() - start,
                "steps": log.steps,
                "resumed_at": resumed_at,
            }
            _save_resume_point(resume_file, cfg, state)
    log.seconds = round(time.perf_counter() - start, 1)

    info = {
        "backbone": cfg.backbone,
        "fusion": cfg.fusion,
        "scales": json.dumps(list(cfg.scales)),
        "trained_by": "msdeploy train-demo",
        "dtype": "float16",
    }
    save_fp16(model, output, info)
    stored = build_model(cfg.backbone, cfg.fusion, cfg.scales, weights=output)  # score what was written
    for size in HELD_OUT_SIZES:
        scores = evaluate(stored, cfg.held_out, size, cfg.contrast)
        log.held_out[f"{size[0]}x{size[1]}"] = scores.as_dict()
    log.held_out["seed"] = HELD_OUT_SEED
    write_json_atomic(log_path, asdict(log))
    resume_file.unlink(missing_ok=True)
    return output, log
