"""The demo training recipe (`msdeploy train-demo`): its settings and their defaults, torch-free so the
command line can show them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from calibration.synthetic import DEFAULT_CONTRAST


@dataclass
class TrainConfig:
    fusion: str = "hierarchical"
    backbone: str = "pvt_v2_b0"  # models.demo_weights.DEMO_BACKBONE (a test keeps them equal)
    scales: tuple[float, ...] = (0.5, 1.0, 1.5)  # models.scaling.DEFAULT_SCALES (likewise)
    steps: int = 1500
    batch: int = 8
    sizes: tuple[int, ...] = (128, 160, 192)  # one drawn per step: the network sees several scales
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    grad_clip: float = 5.0
    contrast: float = DEFAULT_CONTRAST
    # Curriculum: the object's colour shift starts at `contrast_start` (plain to see) and falls to
    # `contrast` over the first `curriculum` fraction of the steps. From scratch, a network shown
    # only the faint cue learned little more than a centre prior (the checkpoints of earlier versions).
    contrast_start: float = 0.8
    curriculum: float = 0.6
    # Online hard-example mining: draw this many extra images per step and train on the `batch` with
    # the highest loss (0: off). Costs one forward pass of the candidates per step.
    hard_examples: int = 0
    seed: int = 0
    held_out: int = 100
    init_from: str | None = None  # a demo checkpoint to start from (another fusion's: all but its fusion units)
    threads: int | None = None
    checkpoint_every: int = 50  # steps between resume points (<output>.resume.pt)
