"""One runner interface for every backend (ONNX Runtime, TensorRT).

The public `infer` turns the feed into a dict, checks names, dtypes, ranks and sizes once, here,
then calls the backend's small `_infer` hook. Backends only describe their tensors and run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMetadata, not_ours


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]  # an int for a fixed dim, a name or None for a dynamic one
    dtype: np.dtype

    def describe(self) -> str:
        dims = ", ".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"


class Runner(ABC):
    """A loaded model. `infer(array or {name: array}) -> {output name: array}`.

    Every runner closes (`close()`, or `with runtime.open_runner(...) as runner:`), freeing its
    session, engine or device memory."""

    backend: str = "?"

    def __init__(self, path: str, metadata: ModelMetadata | None):
        self.path = path
        self.metadata = metadata

    def require_metadata(self) -> ModelMetadata:
        """The model's msdeploy metadata, or a UserError saying the file was not written by us."""
        if self.metadata is None:
            raise not_ours(self.path)
        return self.metadata

    # set by each backend from the model it loaded
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def max_batch(self) -> int | None:
        """The largest batch the model takes in one call (None: any)."""
        batch = self.inputs[0].shape[0]
        return batch if isinstance(batch, int) else None

    def fixed_image_size(self) -> tuple[int, int] | None:
        """(H, W) when the loaded model takes one image size only beyond what its metadata says (a
        fixed-shape engine); None otherwise."""
        return None

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, feed: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer(self.check_feed(feed))

    @abstractmethod
    def close(self) -> None:
        """Free what the backend holds; the runner is not used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, feed: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer(feed)

    def check_feed(self, feed: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = {s.name: s for s in self.inputs}
        if not isinstance(feed, Mapping):
            if len(specs) != 1:
                raise UserError(f"{self.path} has inputs {list(specs)}; pass a dict of arrays")
            feed = {next(iter(specs)): feed}
        missing = sorted(set(specs) - set(feed))
        extra = sorted(set(feed) - set(specs))
        if missing or extra:
            raise UserError(
                f"inputs do not match the model: missing {missing}, unknown {extra}; "
                f"expected {[s.describe() for s in specs.values()]}"
            )
        checked = {}
        for name, array in feed.items():
            spec = specs[name]
            array = np.asarray(array)
            if array.dtype != spec.dtype:
                raise UserError(
                    f"input {name} has dtype {array.dtype}, the model expects {spec.dtype}; "
                    f"convert it with .astype(np.{spec.dtype})"
                )
            if array.ndim != len(spec.shape):
                raise UserError(f"input {name} has shape {list(array.shape)}, expected {spec.describe()}")
            for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
                if isinstance(want, int) and got != want:
                    raise UserError(
                        f"input {name} has size {got} on axis {axis}, the model needs {want} ({spec.describe()})"
                    )
            self._check_image_size(name, array.shape)
            checked[name] = np.ascontiguousarray(array)
        return checked

    def _check_image_size(self, name: str, shape: tuple[int, ...]) -> None:
        meta = self.metadata
        if meta is None or name != meta.input_name or len(shape) != 4:
            return
        height, width = shape[2], shape[3]
        if meta.static_size and [height, width] != list(meta.static_size):
            raise UserError(
                f"this model was exported for {meta.static_size[0]}x{meta.static_size[1]} inputs, "
                f"got {height}x{width}; resize the image or export without --static"
            )
        if min(height, width) < meta.min_size:
            raise UserError(f"input is {height}x{width}; the model needs at least {meta.min_size}x{meta.min_size}")
