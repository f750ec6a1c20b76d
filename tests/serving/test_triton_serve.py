"""The real tritonserver (bundled with nvidia-pytriton) serving the Python-backend model on loopback:
answers over HTTP and gRPC equal the runtime's own, malformed requests get errors while the server
keeps serving, start-up failures end with a clear error within the time bound, and stopping leaves
no process or shared-memory region behind."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.synthetic import make_sample
from runtime import Predictor
from runtime.errors import UserError
from serving.client import ImageClient
from serving.model_repository import TritonOptions, write_triton_model
from serving.server import ServerOptions, TritonServer, free_port, live_processes

pytest.importorskip("pytriton", reason="the [serve] extra (nvidia-pytriton) bundles tritonserver")
tritonclient_utils = pytest.importorskip("tritonclient.utils")
ServerError = tritonclient_utils.InferenceServerException
MAX_BATCH = 4


def encode(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def options(repository: Path, **kwargs) -> ServerOptions:
    return ServerOptions(repository, http_port=free_port(), grpc_port=free_port(), **kwargs)


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    repository = tmp_path_factory.mktemp("triton") / "repo"
    write_triton_model(
        TritonOptions(exported["hierarchical"], repository, name="cod", backend="python", max_batch_size=MAX_BATCH)
    )
    server = TritonServer(options(repository))
    server.start()
    pgid = server.process.pid
    yield server
    server.stop()
    assert server.leftovers() == [] and live_processes(pgid) == []  # no shared memory, no server or stub processes


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    rng = np.random.default_rng(20_000)
    gray = make_sample(rng, (256, 320)).image.mean(axis=2).astype(np.uint8)
    return {
        "jpeg 352x352": encode(make_sample(rng, (352, 352)).image, "JPEG"),
        "png 300x400": encode(make_sample(rng, (300, 400)).image, "PNG"),
        "grayscale png 256x320": encode(gray, "PNG"),
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_masks_equal_the_runtime(served, exported, images, protocol):
    direct = Predictor(exported["hierarchical"])
    url = served.http_url if protocol == "http" else served.grpc_url
    client = ImageClient(url, "cod", protocol)
    for name, data in images.items():
        mask, probability = client.infer([data])
        expected = direct.predict(data)
        assert mask.shape == (1, *expected.probability.shape), name
        np.testing.assert_array_equal(probability[0], expected.probability, err_msg=name)
        np.testing.assert_array_equal(mask[0], expected.mask_png(), err_msg=name)
    # several images in one request: one batched network call, each answered at its own size
    same_size = [images["jpeg 352x352"], encode(make_sample(np.random.default_rng(3), (352, 352)).image, "PNG")]
    masks, probabilities = client.infer(same_size)
    for data, probability in zip(same_size, probabilities):
        np.testing.assert_allclose(probability, direct.predict(data).probability, atol=1e-5)
    assert masks.shape == (2, 352, 352)
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_errors_and_the_server_keeps_serving(served, images, protocol):
    url = served.http_url if protocol == "http" else served.grpc_url
    client = ImageClient(url, "cod", protocol)
    good = images["jpeg 352x352"]
    module = client.module

    wrong_dims = module.InferInput("image", [1, 2], "BYTES")
    wrong_dims.set_data_from_numpy(np.array([[good, good]], dtype=np.object_))
    wrong_dtype = module.InferInput("image", [1, 1], "FP32")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 1), np.float32))
    cases = {
        "wrong dims": ([wrong_dims], "unexpected shape"),
        "wrong dtype": ([wrong_dtype], "data-type"),
        "batch over the maximum": (client.request([good] * (MAX_BATCH + 1)), "batch-size must be <= 4"),
        "undecodable image": (client.request([b"not an image at all"]), "cannot read image"),
        "mixed sizes in one request": (client.request([good, images["png 300x400"]]), "must share a size"),
    }
    for case, (inputs, message) in cases.items():
        with pytest.raises(ServerError, match=message):
            client.infer_raw(inputs)
        mask, _ = client.infer([good])  # still serving, still right
        assert mask.shape == (1, 352, 352), case
    with pytest.raises(ServerError):
        ImageClient(url, "no_such_model", protocol).infer([good])
    assert served.running()
    client.close()


def test_one_bad_image_in_a_dynamic_batch_fails_only_its_own_request(served, images):
    """Concurrent requests are batched by Triton into one execute(); an undecodable one among them
    gets its error and the others their masks."""
    from concurrent.futures import ThreadPoolExecutor

    payloads = [images["jpeg 352x352"]] * 6 + [b"\x89PNG broken"] * 2

    def call(data: bytes):
        client = ImageClient(served.http_url, "cod")
        try:
            return client.infer([data])[0].shape
        except ServerError as exc:
            return str(exc)
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, payloads))
    assert results[:6] == [(1, 352, 352)] * 6
    assert all("cannot read image" in r for r in results[6:]), results[6:]


def test_start_up_failures_are_clear_and_bounded(exported, tmp_path):
    repository = tmp_path / "repo"
    with pytest.raises(UserError, match="does not exist"):
        TritonServer(options(repository)).start()
    repository.mkdir()
    with pytest.raises(UserError, match="holds no models"):
        TritonServer(options(repository)).start()

    write_triton_model(TritonOptions(exported["absi"], repository, name="native"))
    with pytest.raises(UserError, match="--backend python"):  # the bundled server has no ONNX Runtime backend
        TritonServer(options(repository)).start()
    (repository / "native" / "config.pbtxt").write_text('name: "native"\nmax_batch_size: "eight"\n')
    with pytest.raises(UserError, match="model-config schema"):
        TritonServer(options(repository)).start()

    # a model that fails in the server: the server exits and its log names the cause
    (repository / "native").rename(tmp_path / "set-aside")
    entry = write_triton_model(TritonOptions(exported["absi"], repository, name="broken", backend="python"))
    entry.model_file.write_bytes(b"not an onnx model")
    started = time.monotonic()
    with pytest.raises(UserError, match="exited during start-up") as failure:
        TritonServer(options(repository, startup_timeout_s=60)).start()
    assert "broken" in str(failure.value) and time.monotonic() - started < 60

    # a model that never becomes ready: the time bound ends it, and nothing is left running
    (entry.folder / "1" / "model.py").write_text("import time\ntime.sleep(600)\n")
    server = TritonServer(options(repository, startup_timeout_s=4, stop_timeout_s=5))
    with pytest.raises(UserError, match="not ready within 4 s"):
        server.start()
    assert server.process is None and server.leftovers() == []

    # a port that is taken
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(UserError, match="--grpc-port"):
            TritonServer(ServerOptions(repository, http_port=free_port(), grpc_port=taken)).start()


def test_msdeploy_serve_stops_cleanly_on_ctrl_c(served, tmp_path):
    """The CLI end to end: ready, announced, Ctrl-C, exit 0, nothing left."""
    repository = served.options.repository
    http_port, grpc_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "msdeploy"), "serve", "--repository", str(repository)]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--timeout", "60"]
    # started as a background job would be (SIGINT ignored on entry): Ctrl-C must still stop it
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        assert any(f"127.0.0.1:{http_port}" in line for line in lines), "".join(lines)
        mask, _ = ImageClient(f"127.0.0.1:{http_port}", "cod").infer([make_png()])
        assert mask.shape == (1, 64, 96)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # never leave a server behind, even when the test fails
            process.terminate()
            process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "shared-memory regions left: 0" in rest
    running = subprocess.run(["pgrep", "-f", f"--http-port={http_port}"], capture_output=True, text=True)
    assert running.stdout.strip() == ""


def make_png() -> bytes:
    return encode(make_sample(np.random.default_rng(5), (64, 96)).image, "PNG")
