"""Peak memory of one inference, measured in a fresh child process (torch-free).

The number reported is the resident-memory high-water mark while the call runs, minus the resident
memory just before it, with the model already loaded: the activations and workspace one inference
needs on top of the weights. A fresh process per measurement, because an allocator keeps memory it
freed, so a second measurement in the same process would see the first one's pages reused. Linux
only (it reads /proc and resets the high-water mark through /proc/self/clear_refs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.errors import UserError

STATUS = Path("/proc/self/status")


def supported() -> bool:
    return STATUS.exists() and Path("/proc/self/clear_refs").exists()


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise UserError(f"/proc/self/status has no {field}")


def peak_during(fn: Callable[[], object]) -> dict[str, float]:
    """Run `fn` once; resident MB before it, and the peak MB added while it ran."""
    import gc

    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    fn()
    peak = _status_kib("VmHWM")
    return {"resident_mb": before / 1024, "peak_added_mb": max(0, peak - before) / 1024}


def measure_in_child(module: str, args: Sequence[str], timeout: float = 1800) -> dict:
    """Run `python -m module *args` (a probe that prints one JSON line last) and return its JSON."""
    # glibc keeps freed blocks for reuse, which hides part of a peak; with large blocks always
    # mapped (and unmapped on free), resident memory follows the live allocations
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise UserError(f"memory probe {module} {' '.join(args)} failed: {(proc.stderr or proc.stdout)[-800:]}")
    return json.loads(lines[-1])


def _onnxruntime_probe(argv: Sequence[str]) -> None:
    """`python -m runtime.memory MODEL BATCH HEIGHT WIDTH [THREADS]`: one ONNX Runtime inference."""
    import numpy as np

    from runtime.backends import open_runner

    path, batch, height, width = argv[0], *map(int, argv[1:4])
    threads = int(argv[4]) if len(argv) > 4 and int(argv[4]) > 0 else None
    runner = open_runner(path, "onnxruntime-cpu", threads=threads)
    x = np.zeros((batch, 3, height, width), np.float32)
    print(json.dumps(peak_during(lambda: runner.infer(x))))


if __name__ == "__main__":
    _onnxruntime_probe(sys.argv[1:])
