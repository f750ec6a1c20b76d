"""The packaged demo checkpoints: pvt_v2_b0, one per fusion mode, trained on synthetic camouflage
images by `msdeploy train-demo` (workflows.train_demo), and the held-out images they are judged on."""

from __future__ import annotations

from pathlib import Path

from calibration.synthetic import DEFAULT_CONTRAST
from runtime.errors import UserError

WEIGHTS_DIR = Path(__file__).parent / "weights"  # committed FP16 safetensors and their training logs
DEMO_BACKBONE = "pvt_v2_b0"
HELD_OUT_SEED = 10_000  # training samples come from `seed`, held-out ones from this seed: never the same images
HELD_OUT_SIZE = (352, 352)  # the size the demo checkpoints are judged at: the network's default input
HELD_OUT_SIZES = ((192, 192), HELD_OUT_SIZE)  # the training log scores both (192: the training sizes' range)
DEMO_CONTRAST = DEFAULT_CONTRAST


def demo_checkpoint(fusion: str) -> Path:
    """The committed demo checkpoint for a fusion mode; a clear error if it is missing."""
    path = WEIGHTS_DIR / f"{DEMO_BACKBONE}_{fusion}.safetensors"
    if not path.exists():
        raise UserError(
            f"no demo checkpoint for fusion {fusion!r} ({path}); run `msdeploy train-demo --fusion {fusion}`"
        )
    return path
