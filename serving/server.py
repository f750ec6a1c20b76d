"""`msdeploy serve`: the tritonserver bundled in the nvidia-pytriton wheel, on loopback, for a model
repository of Python-backend models (`msdeploy export triton --backend python`).

The bundled server has only the Python backend and needs some help to start outside pytriton: a
backend directory holding the backend library with the stub for the served Python version, the
wheel's libraries and the Python lib directory on LD_LIBRARY_PATH, and metrics off (no GPU here).
Everything that can be checked before start-up is (repository, configs, Python environment, free
ports), readiness is awaited with a time bound, and stopping leaves no process or shared-memory
region behind: the server runs in its own process group, its regions carry a prefix of their own.

    with TritonServer(ServerOptions(Path("repo"))) as server:
        server.http_url   # "127.0.0.1:8000"
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import UserError
from serving.model_repository import validate_config

SHM_DIR = Path("/dev/shm")
MAX_ERROR_LINES = 6
NO_GPU_NOISE = ("CudaDriverHelper",)  # logged on every start without a GPU


@dataclass
class ServerOptions:
    repository: Path
    host: str = "127.0.0.1"  # loopback by default: put a proxy in front to expose it
    http_port: int = 8000
    grpc_port: int = 8001
    startup_timeout_s: float = 120.0
    # Triton waits this long for in-flight requests on shutdown (an idle keep-alive connection counts)
    drain_timeout_s: int = 3
    stop_timeout_s: float = 20.0  # then SIGKILL
    log_verbose: int = 0
    log_file: Path | None = None  # default: a temporary file, removed after a clean stop


@dataclass
class ServedModel:
    name: str
    backend: str  # "python", or the platform of a native model
    python_env: Path | None


@dataclass
class BundledServer:
    """Where the wheel keeps the server, its backends, stubs and libraries."""

    binary: Path
    python_backend: Path
    stubs: Path
    libs: Path


def bundled_server() -> BundledServer:
    try:
        import pytriton
    except ImportError as exc:
        raise UserError(
            "msdeploy serve runs the tritonserver bundled with nvidia-pytriton: pip install 'multiscale-deploy[serve]'"
        ) from exc
    root = Path(pytriton.__file__).parent / "tritonserver"
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    server = BundledServer(
        root / "bin" / "tritonserver", root / "backends" / "python", root / "python_backend_stubs", libs
    )
    if not server.binary.is_file():
        raise UserError(f"nvidia-pytriton is installed without its server ({server.binary}); reinstall it")
    return server


def read_repository(repository: Path) -> list[ServedModel]:
    """The models of a repository, each config parsed against Triton's schema; every problem the
    bundled server would only report after start-up is raised here, with its fix."""
    if not repository.is_dir():
        raise UserError(f"model repository {repository} does not exist; create one with `msdeploy export triton`")
    models = []
    for folder in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config_path = folder / "config.pbtxt"
        if not config_path.is_file():
            raise UserError(f"{folder} has no config.pbtxt; remove the folder or export the model again")
        config = validate_config(config_path.read_text(), str(config_path))
        if config is None:
            raise UserError("checking the repository needs tritonclient: pip install 'multiscale-deploy[serve]'")
        if config.name and config.name != folder.name:
            raise UserError(f"{config_path} names the model {config.name!r} but its folder is {folder.name!r}")
        if config.backend != "python":
            raise UserError(
                f"model {folder.name} uses {config.platform or config.backend!r}, which the server bundled with "
                "nvidia-pytriton cannot load (it has only the Python backend): add it with "
                "`msdeploy export triton MODEL --backend python`, or serve this repository with NVIDIA's Triton "
                "container (docs/triton.md)"
            )
        if not any(v.is_dir() and v.name.isdigit() for v in folder.iterdir()):
            raise UserError(f"model {folder.name} has no version folder (e.g. {folder / '1'})")
        env = config.parameters["EXECUTION_ENV_PATH"].string_value if "EXECUTION_ENV_PATH" in config.parameters else ""
        models.append(ServedModel(folder.name, "python", Path(env) if env else None))
    if not models:
        raise UserError(f"model repository {repository} holds no models; add one with `msdeploy export triton`")
    return models


def python_version_of(env: Path) -> str:
    """'3.11' for an environment with lib/python3.11, checked to import what the model needs."""
    if not (env / "bin" / "activate").is_file():
        raise UserError(f"Python environment {env} (EXECUTION_ENV_PATH) has no bin/activate; export the model again")
    probe = (
        "import json, sys, numpy, serving.triton_python_model; "
        "print(json.dumps([f'{sys.version_info[0]}.{sys.version_info[1]}', numpy.__version__]))"
    )
    run = subprocess.run([str(env / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(
            f"the model's Python environment {env} cannot import what the model needs ({last}); "
            "pip install 'multiscale-deploy[serve]' into it"
        )
    version, numpy_version = json.loads(run.stdout)
    if int(numpy_version.split(".")[0]) >= 2:
        raise UserError(
            f"the model's Python environment {env} has numpy {numpy_version}; the bundled Python backend "
            "needs numpy < 2 (its stub returns empty outputs otherwise): pip install 'numpy<2' there"
        )
    return version


def check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as the server binds: a port in TIME_WAIT is free, one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"port {port} on {host} is in use ({exc.strerror}); stop what holds it or pass {flag} with a free port"
            ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _log_summary(path: Path) -> str:
    """The server log's error lines (Triton writes them as `E<date> ...`), without Python tracebacks
    and the harmless no-GPU complaints, then its last line."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    errors = []
    for line in lines:
        if line.startswith("E") and not any(noise in line for noise in NO_GPU_NOISE):
            message = line.split("] ", 1)[-1].strip('"').split("\\n\\nAt:")[0]
            if message not in errors:
                errors.append(message)
    return "\n".join([*errors[-MAX_ERROR_LINES:], *lines[-1:]]) or "(empty server log)"


@dataclass
class TritonServer:
    """A running bundled tritonserver; a context manager that starts it and always stops it."""

    options: ServerOptions
    models: list[ServedModel] = field(default_factory=list)
    process: subprocess.Popen | None = None
    shm_prefix: str = ""
    log_path: Path | None = None
    workdir: Path | None = None  # backend directory and default log; removed on stop

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _prepare(self) -> tuple[BundledServer, str]:
        opts = self.options
        server = bundled_server()
        self.models = read_repository(opts.repository)
        envs = {m.python_env for m in self.models if m.python_env is not None}  # probe each environment once
        versions = {python_version_of(env) for env in envs}
        if len(versions) > 1:
            raise UserError("the repository's models use Python environments of different Python versions")
        version = versions.pop() if versions else sysconfig.get_python_version()
        if not (server.stubs / version / "triton_python_backend_stub").is_file():
            raise UserError(f"the bundled Python backend has no stub for Python {version}")
        if opts.http_port == opts.grpc_port:
            raise UserError("--http-port and --grpc-port must differ")
        check_port_free(opts.host, opts.http_port, "--http-port")
        check_port_free(opts.host, opts.grpc_port, "--grpc-port")
        return server, version

    def start(self) -> None:
        opts = self.options
        server, version = self._prepare()
        self.workdir = Path(tempfile.mkdtemp(prefix="msdeploy-triton-"))
        backends = self.workdir / "backends"
        shutil.copytree(server.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(server.stubs / version / "triton_python_backend_stub", backends / "python")
        self.log_path = opts.log_file or self.workdir / "tritonserver.log"
        self.shm_prefix = f"msdeploy_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in (str(server.libs), sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")) if p
        )
        command = [
            str(server.binary),
            f"--model-repository={opts.repository.resolve()}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={opts.host}",
            f"--http-port={opts.http_port}",
            f"--grpc-address={opts.host}",
            f"--grpc-port={opts.grpc_port}",
            "--allow-metrics=false",  # GPU metrics need libraries this wheel lacks
            "--exit-on-error=true",  # a model that fails to load ends start-up instead of serving half
            "--strict-readiness=true",
            f"--exit-timeout-secs={opts.drain_timeout_s}",
            f"--log-verbose={opts.log_verbose}",
        ]
        with open(self.log_path, "ab") as log:  # a kept --log-file grows; nothing earlier is lost
            # own process group: Ctrl-C in a terminal reaches us, and we stop the server and its stubs together
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise UserError(
                    f"tritonserver exited during start-up (exit code {code}):\n{_log_summary(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise UserError(
            f"tritonserver was not ready within {self.options.startup_timeout_s:.0f} s (raise --timeout if the "
            f"models are large); its log says:\n{_log_summary(self.log_path)}"
        )

    def log_summary(self) -> str:
        """The error lines and the last line of the server's log so far."""
        return _log_summary(self.log_path)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        return self.process.wait()

    def stop(self) -> None:
        """SIGTERM to the server's process group (Triton unloads models and ends its stubs), SIGKILL
        after the time bound, then remove whatever shared memory our prefix left."""
        process, self.process = self.process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.options.stop_timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            _signal_group(process.pid, signal.SIGKILL)  # stubs that outlived the server
        if self.shm_prefix:
            for region in SHM_DIR.glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def leftovers(self) -> list[str]:
        """Shared-memory regions of this server still present (for checks after stop)."""
        return sorted(p.name for p in SHM_DIR.glob(f"{self.shm_prefix}*")) if self.shm_prefix else []


def live_processes(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies, which only their reaper can remove, do not)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
