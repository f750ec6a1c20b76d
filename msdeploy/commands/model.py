"""`msdeploy params` and `msdeploy demo`: the PyTorch model side (needs the [export] extra)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from msdeploy.output import console, print_markdown_table, print_table


def show_params(backbone: str, scales: Sequence[float], as_json: bool = False) -> None:
    from models.params import parameter_table
    from workflows.demo import parameter_table as table_of

    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in parameter_table(backbone, scales)]))
        return
    print_markdown_table(table_of(backbone, scales))


def run_demo_command(options) -> bool:
    """Run the demo workflow, rendering each result as it comes; True when every parity check passed."""
    from bench.report import BenchReport
    from msdeploy.commands.bench import show_report
    from msdeploy.commands.export_cmds import show_parity
    from runtime.tables import Table
    from workflows.demo import run_demo

    def show(item) -> None:
        if isinstance(item, Table):
            print_markdown_table(item)
        elif isinstance(item, BenchReport):
            show_report(item, latency_only=True)
        else:
            show_parity(item)

    return run_demo(options, show=show, say=console.print).passed


def run_train_demo(cfg, output, force: bool, resume: bool = False) -> None:
    from msdeploy.output import progress_bar
    from workflows.train_demo import train_demo

    with progress_bar(f"training {cfg.backbone} {cfg.fusion}", cfg.steps) as update:
        path, log = train_demo(
            cfg, output, force=force, resume=resume, progress=lambda i, n, loss: update(i, f"loss {loss:.4f}")
        )
    console.print(f"wrote {path} and {path.with_suffix('.train.json')} ({log.seconds:.0f} s of training)")
    print_table(
        "Held-out synthetic images (stored FP16 weights)",
        ["input size", "images", "S-measure", "mean E-measure", "weighted F", "MAE", "IoU@0.5"],
        (
            (
                size,
                s["images"],
                f"{s['s_measure']:.4f}",
                f"{s['e_measure']:.4f}",
                f"{s['weighted_f']:.4f}",
                f"{s['mae']:.4f}",
                f"{s['iou']:.4f}",
            )
            for size, s in log.held_out.items()
            if isinstance(s, dict)
        ),
        right=(1, 2, 3, 4, 5, 6),
    )
