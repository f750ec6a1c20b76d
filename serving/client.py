"""A client for the Python-backend model (`msdeploy export triton --backend python`) over HTTP or
gRPC with tritonclient: encoded image files in, masks and probabilities out.

    client = ImageClient("127.0.0.1:8000", "cod")            # or protocol="grpc", port 8001
    mask, probability = client.infer([open("a.jpg", "rb").read()])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.errors import UserError

PROTOCOLS = ("http", "grpc")


def _module(protocol: str):
    if protocol not in PROTOCOLS:
        raise UserError(f"protocol must be http or grpc, got {protocol!r}")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as exc:
        raise UserError("the Triton client needs tritonclient: pip install 'multiscale-deploy[serve]'") from exc
    return module


class ImageClient:
    """One connection to one served model; not shared between threads (make one per thread)."""

    def __init__(self, url: str, model: str, protocol: str = "http", timeout_s: float = 60.0) -> None:
        self.module = _module(protocol)
        self.model = model
        self.protocol = protocol
        if protocol == "http":
            self.client = self.module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self.client = self.module.InferenceServerClient(url)
        self.timeout_s = timeout_s

    def request(self, images: Sequence[bytes]) -> list:
        """The `image` input for a request of len(images) encoded files ([B, 1] BYTES)."""
        tensor = self.module.InferInput("image", [len(images), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data] for data in images], dtype=np.object_))
        return [tensor]

    def infer_raw(self, inputs: list):
        """Send prepared inputs as they are (tests send malformed ones this way)."""
        if self.protocol == "grpc":
            return self.client.infer(self.model, inputs, client_timeout=self.timeout_s)
        return self.client.infer(self.model, inputs)

    def infer(self, images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """mask uint8 [B, H, W] (0 or 255) and probability float32 [B, H, W]; images of one call share a size."""
        result = self.infer_raw(self.request(images))
        return result.as_numpy("mask"), result.as_numpy("probability")

    def close(self) -> None:
        self.client.close()
