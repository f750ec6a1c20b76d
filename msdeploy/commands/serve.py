"""`msdeploy serve`: the bundled tritonserver on a model repository until Ctrl-C."""

from __future__ import annotations

import signal

from msdeploy.output import console, print_table

CLIENT_EXAMPLE = """\
import numpy as np, tritonclient.http as http
client = http.InferenceServerClient("{url}")
image = http.InferInput("image", [1, 1], "BYTES")
image.set_data_from_numpy(np.array([[open("photo.jpg", "rb").read()]], dtype=object))
mask = client.infer("{model}", [image]).as_numpy("mask")[0]   # uint8 [H, W], 0 or 255"""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_serve(options) -> int:
    """Start, report, serve until Ctrl-C or SIGTERM, stop cleanly; an error when the server ends by itself."""
    from runtime.errors import UserError
    from serving.server import TritonServer

    server = TritonServer(options)
    # Ctrl-C and a service manager's stop both end us cleanly; set SIGINT explicitly because Python
    # leaves it ignored when the shell started us in the background
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with console.status(f"starting tritonserver on {options.repository} ..."):
            server.start()
        rows = [(m.name, m.backend, str(m.python_env or "the server's Python")) for m in server.models]
        print_table("Serving", ["model", "backend", "Python environment"], rows)
        console.print(f"HTTP  {server.http_url}   gRPC  {server.grpc_url}   (Ctrl-C stops)")
        console.print(CLIENT_EXAMPLE.format(url=server.http_url, model=server.models[0].name), markup=False)
        code = server.wait()
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise UserError(f"tritonserver stopped by itself ({how}):\n{server.log_summary()}")
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    left = server.leftovers()
    console.print(f"stopped; shared-memory regions left: {len(left)}")
    return 0
