"""`msdeploy info`."""

from __future__ import annotations

import json

from msdeploy.output import console, print_table
from runtime.cpu_features import cpu_features
from runtime.environment import collect_environment


def show_info(as_json: bool) -> None:
    env = collect_environment()
    if as_json:
        console.print_json(json.dumps(env.as_dict()))
        return
    console.print(f"Python {env.python} on {env.platform}")
    console.print(f"CPU: {env.cpu} ({env.cpu_count} logical cores)")
    features = cpu_features()
    console.print(
        f"CPU extensions: {env.cpu_features}; BF16 {'native' if features.bf16 else 'not native'}, "
        f"INT8 dot products {'native' if features.int8 else 'not native'}"
    )
    console.print("GPU: " + (", ".join(env.gpus) if env.gpus else "none found (nvidia-smi absent or no device)"))
    print_table("Packages", ["package", "version"], ((k, v or "-") for k, v in env.packages.items()))
    print_table(
        "Backends",
        ["backend", "runs here", "detail"],
        ((b.name, "yes" if b.available else "no", b.detail) for b in env.backends),
    )
