"""The demo checkpoint: the training command works, and the committed checkpoints load and segment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.demo_weights import HELD_OUT_SIZE, demo_checkpoint
from runtime.errors import UserError
from workflows.train_demo import TrainConfig, evaluate, train_demo


def test_train_demo_writes_fp16_weights_and_a_log(tmp_path):
    import torch
    from safetensors import safe_open

    cfg = TrainConfig(steps=2, batch=2, sizes=(64,), held_out=2, warmup_steps=1)
    path, log = train_demo(cfg, tmp_path / "demo.safetensors")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["fusion"] == "hierarchical"
        floats = {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()}  # noqa: SIM118
    assert floats == {torch.float16}
    saved = json.loads(path.with_suffix(".train.json").read_text())
    assert [s["step"] for s in saved["steps"]] == [0, 1] and saved["held_out"]["192x192"]["images"] == 2
    with pytest.raises(UserError, match="already exists"):
        train_demo(cfg, path)


@pytest.mark.parametrize("fusion", ["hierarchical", "absi"])
def test_committed_demo_checkpoints_segment_held_out_images(fusion):
    """Scored again here on 10 held-out images; the training log holds the 100-image figures."""
    from models import build_model

    path = demo_checkpoint(fusion)
    assert path.stat().st_size < 20e6  # small enough for git
    log = json.loads(path.with_suffix(".train.json").read_text())
    model = build_model("pvt_v2_b0", fusion, weights=path)
    scores = evaluate(model, 10, HELD_OUT_SIZE)
    logged = log["held_out"][f"{HELD_OUT_SIZE[0]}x{HELD_OUT_SIZE[1]}"]
    # trained (a random-init network scores IoU below 0.2 here), and consistent with the log's figures
    assert scores.iou > 0.25 and abs(scores.s_measure - logged["s_measure"]) < 0.1
    assert np.isfinite(scores.mae)
