"""Memory budgets for engines: per-board presets, and the default where no board is named.

An engine needs its weights and, for the largest shape of its profile, its activation memory; the
builder states both in its log (`Total Activation Memory`, `Total Weights Memory`). On a Jetson the
GPU shares the board's memory with the CPU, JetPack and the application, so an engine gets only a
part of it. A build whose engine would not fit the budget is refused before anything is written,
with the figures and the fix (a smaller --max-shape or batch).
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.cuda import DeviceInfo
from runtime.errors import UserError

GIB = 1 << 30


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    memory: int  # bytes shared by CPU and GPU
    budget: int  # bytes an engine may take: activations + weights
    workspace: str  # builder workspace limit, as the CLI takes it
    dla_cores: int


# Budget: about 3/8 of the shared memory; the rest is JetPack, the desktop if one runs, the camera
# pipeline and the application's own buffers. Orin Nano has no DLA; Orin NX 8GB has one core.
BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("orin-nano-4gb", "Jetson Orin Nano 4GB", 4 * GIB, 3 * GIB // 2, "1G", 0),
        Board("orin-nano", "Jetson Orin Nano 8GB", 8 * GIB, 3 * GIB, "2G", 0),
        Board("orin-nx-8gb", "Jetson Orin NX 8GB", 8 * GIB, 3 * GIB, "2G", 1),
        Board("orin-nx", "Jetson Orin NX 16GB", 16 * GIB, 6 * GIB, "4G", 2),
        Board("agx-orin-32gb", "Jetson AGX Orin 32GB", 32 * GIB, 12 * GIB, "8G", 2),
        Board("agx-orin", "Jetson AGX Orin 64GB", 64 * GIB, 24 * GIB, "8G", 2),
    )
}
DEFAULT_BOARD = "orin-nano"  # the bundle's default: the smallest common 8 GB board
INTEGRATED_SHARE = 3 / 8  # a Jetson not named by --board: the same share of what CUDA reports
DISCRETE_SHARE = 0.9  # a desktop GPU: what it has, less room for the display and the CUDA context


def board(name: str) -> Board:
    if name not in BOARDS:
        raise UserError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}")
    return BOARDS[name]


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # where it comes from, for messages: "--memory-budget", "board orin-nano", "GPU ..."


def resolve_budget(explicit: int | None, board_name: str | None, device: DeviceInfo | None) -> MemoryBudget | None:
    """--memory-budget, else the board's preset, else a share of the GPU's memory where one is visible;
    None where nothing is known (an ahead-of-time build without a GPU and without a board)."""
    if explicit is not None:
        if explicit <= 0:
            raise UserError(f"--memory-budget must be positive, got {explicit} bytes")
        return MemoryBudget(explicit, "--memory-budget")
    if board_name is not None:
        chosen = board(board_name)
        return MemoryBudget(chosen.budget, f"board {chosen.name} ({chosen.description})")
    if device is not None and device.total_memory:
        share = INTEGRATED_SHARE if device.integrated else DISCRETE_SHARE
        return MemoryBudget(int(device.total_memory * share), f"{share:.0%} of {device.name}'s memory")
    return None


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
