"""An emulated arm64 Debian root on an x86 machine: Jetson's CPU architecture without a board.

`debootstrap` builds a minimal Debian root for arm64 (python3 and python3-venv in it); the kernel runs
its programs through QEMU's user-mode emulator, registered with binfmt_misc, and `chroot` runs commands
inside it. Nothing here needs a GPU; it needs root (debootstrap, chroot), Debian's `debootstrap` and
`qemu-user-static`, and binfmt_misc (mounted and registered here when root and missing).

The emulated CPU is a Cortex-A76 (`QEMU_CPU`): Jetson Orin's Cortex-A78AE has the same instruction
set (Armv8.2-A with dot product and FP16, no SVE); QEMU's default `max` CPU adds SVE, which no Jetson
Orin has and which QEMU emulates far more slowly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.errors import UserError

ARCH = "arm64"
QEMU_ARCH = "aarch64"
DEFAULT_SUITE = "bookworm"  # Debian 12: Python 3.11 (JetPack 6's 3.10 is not in Debian)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_QEMU_CPU = "cortex-a76"
ROOT_PACKAGES = ("python3", "python3-venv", "ca-certificates")
MARKER = "msdeploy-root.json"  # written last: a root without it is unfinished
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_RULE = Path(f"/usr/lib/binfmt.d/qemu-{QEMU_ARCH}.conf")
# where a command inside the root finds the host's CA bundle (a proxy's certificate may be in it)
ROOT_CA_BUNDLE = "/etc/msdeploy-host-ca.crt"


def default_root_path() -> Path:
    """$MSDEPLOY_ARM64_ROOT, else ~/.cache/msdeploy/arm64-<suite>: reused by every later run."""
    override = os.environ.get("MSDEPLOY_ARM64_ROOT")
    return Path(override) if override else Path.home() / ".cache" / "msdeploy" / f"{ARCH}-{DEFAULT_SUITE}"


def _qemu_interpreter() -> str | None:
    for candidate in (f"/usr/bin/qemu-{QEMU_ARCH}-static", f"/usr/libexec/qemu-binfmt/{QEMU_ARCH}-binfmt-P"):
        if Path(candidate).exists():
            return candidate
    return shutil.which(f"qemu-{QEMU_ARCH}-static")


def _register_binfmt() -> str | None:
    """Mount binfmt_misc and register QEMU's aarch64 rule where missing; the reason when it cannot."""
    if not (BINFMT / "register").exists():
        mount = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
        if mount.returncode != 0:
            return (
                f"binfmt_misc is not mounted at {BINFMT} and mounting it failed "
                f"({mount.stderr.decode().strip() or mount.returncode}); mount it, or run where the kernel allows it"
            )
    entry = BINFMT / f"qemu-{QEMU_ARCH}"
    if entry.exists():
        return None if entry.read_text().startswith("enabled") else f"the binfmt_misc rule {entry} is disabled"
    if not BINFMT_RULE.is_file():
        return f"{BINFMT_RULE} is missing (apt install qemu-user-static)"
    rule = next(line for line in BINFMT_RULE.read_text().splitlines() if line and not line.startswith("#"))
    try:
        (BINFMT / "register").write_text(rule)
    except OSError as exc:
        return f"registering QEMU's {QEMU_ARCH} interpreter with binfmt_misc failed: {exc}"
    return None


def prepare_emulation() -> str | None:
    """Make arm64 programs runnable here (registering QEMU with binfmt_misc where needed); None when
    ready, else the reason it cannot be, with the fix."""
    if platform.machine() in ("aarch64", "arm64"):
        return "this machine is aarch64 already: run the test suite natively instead of under emulation"
    if os.geteuid() != 0:
        return "building and entering an arm64 root needs root (debootstrap, chroot)"
    missing = [pkg for tool, pkg in (("debootstrap", "debootstrap"), ("chroot", "coreutils")) if not shutil.which(tool)]
    if _qemu_interpreter() is None:
        missing.append("qemu-user-static")
    if missing:
        return f"missing tools: apt install {' '.join(missing)}"
    return _register_binfmt()


@dataclass(frozen=True)
class RootInfo:
    """What the marker file of a finished root records."""

    arch: str
    suite: str
    mirror: str
    packages: list[str]
    built: str  # UTC date
    build_seconds: float


@dataclass(frozen=True)
class Arm64Root:
    """A finished arm64 Debian root, and commands run inside it under emulation."""

    path: Path
    qemu_cpu: str = DEFAULT_QEMU_CPU

    @property
    def info(self) -> RootInfo:
        return RootInfo(**json.loads((self.path / MARKER).read_text()))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the root for one check: two checks at once would remove each other's environments."""
        with open(self.path / ".msdeploy-lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"another check is using the arm64 root {self.path}; wait for it, or give this one another "
                    "root (--root, $MSDEPLOY_ARM64_ROOT)"
                ) from None
            yield

    def host_path(self, inside: str) -> Path:
        """The host's path of a path inside the root ('/srv/x' -> ROOT/srv/x)."""
        return self.path / inside.lstrip("/")

    def run(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 3600
    ) -> subprocess.CompletedProcess:
        """`argv` inside the root, with a clean environment: no host variable reaches it but `env`
        (given to the process, not on its command line, where other users could read it)."""
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": self.qemu_cpu}
        try:
            return subprocess.run(
                [shutil.which("chroot") or "/usr/sbin/chroot", str(self.path), *argv],  # the host's PATH finds it
                env={**base, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"`{' '.join(argv[:3])} ...` in the arm64 root ran past {timeout:.0f} s; stopped") from exc

    def check(self, argv: Sequence[str], *, what: str, **kwargs) -> str:
        """run(), refused with the command's own output when it fails; its stdout otherwise."""
        done = self.run(argv, **kwargs)
        if done.returncode != 0:
            output = (done.stderr.strip() or done.stdout.strip())[-1500:]
            raise UserError(f"{what} failed in the arm64 root (exit {done.returncode}): {output}")
        return done.stdout

    def python_version(self) -> str:
        return self.check(["python3", "-c", "import sys; print(sys.version.split()[0])"], what="python3").strip()

    def enable_network(self) -> dict[str, str]:
        """Name resolution and the host's CA bundle inside the root, so pip reaches the same package index
        through the same proxy; returns the environment pip needs in it."""
        shutil.copyfile("/etc/resolv.conf", self.path / "etc" / "resolv.conf")
        env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") and k != "PIP_FIND_LINKS"}
        env.pop("PIP_CERT", None)
        bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
        if Path(bundle).is_file():
            shutil.copyfile(bundle, self.host_path(ROOT_CA_BUNDLE))
            env["PIP_CERT"] = ROOT_CA_BUNDLE
        for proxy in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
            if proxy in os.environ:
                env[proxy] = os.environ[proxy]
        return env

    def disable_network(self) -> None:
        """Remove the host's CA bundle copied in by enable_network."""
        self.host_path(ROOT_CA_BUNDLE).unlink(missing_ok=True)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (a bind-mounted /dev or /proc must never be deleted through)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    target = str(path.resolve())
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return [p for p in points if p == target or p.startswith(target + "/")]


def _remove_tree(path: Path) -> None:
    """Delete a root (or its unfinished build), refused while anything is mounted in it."""
    if not path.exists():
        return
    mounted = _mounts_under(path)
    if mounted:
        raise UserError(f"{', '.join(mounted)} is mounted inside {path}; unmount it first (nothing was deleted)")
    shutil.rmtree(path)


def _utc_date() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def ensure_root(
    path: Path | None = None,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    qemu_cpu: str = DEFAULT_QEMU_CPU,
    rebuild: bool = False,
    say: Callable[[str], None] = print,
) -> tuple[Arm64Root, bool]:
    """The arm64 root at `path` (default: default_root_path()), built with debootstrap if it is not
    there yet, else reused; returns it and whether it was built now. A finished root of another suite or
    mirror, or a folder that is not one, is refused unless `rebuild`; a build that fails leaves nothing."""
    reason = prepare_emulation()
    if reason:
        raise UserError(f"cannot run arm64 programs here: {reason}")
    path = Path(path or default_root_path())
    marker = path / MARKER
    if path.exists() and not rebuild:
        if not marker.is_file():
            raise UserError(
                f"{path} exists but is not a finished arm64 root (no {MARKER}); remove it, choose another path, "
                "or rebuild it (--rebuild, rebuild=True)"
            )
        info = RootInfo(**json.loads(marker.read_text()))
        have = (info.arch, info.suite, info.mirror, sorted(info.packages))
        if have != (ARCH, suite, mirror, sorted(ROOT_PACKAGES)):
            raise UserError(
                f"{path} holds an {info.arch} Debian {info.suite} root from {info.mirror} with "
                f"{', '.join(info.packages)}; wanted {ARCH} Debian {suite} from {mirror} with "
                f"{', '.join(ROOT_PACKAGES)}: rebuild it (--rebuild, rebuild=True) or choose another path"
            )
        return Arm64Root(path, qemu_cpu), False
    staging = path.with_name(path.name + ".partial")
    _remove_tree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    say(f"building an {ARCH} Debian {suite} root with debootstrap (a few minutes under emulation)")
    start = time.perf_counter()
    cmd = ["debootstrap", f"--arch={ARCH}", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}"]
    try:
        try:
            done = subprocess.run([*cmd, suite, str(staging), mirror], capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired as exc:
            raise UserError("debootstrap ran past an hour and was stopped; the root was not made") from exc
        if done.returncode != 0:
            log_tail = (done.stdout + done.stderr).strip()[-1500:]
            raise UserError(f"debootstrap failed (exit {done.returncode}); the root was not made: {log_tail}")
        info = RootInfo(ARCH, suite, mirror, list(ROOT_PACKAGES), _utc_date(), round(time.perf_counter() - start, 1))
        (staging / MARKER).write_text(json.dumps(asdict(info), indent=1))
        _remove_tree(path)
        staging.rename(path)
    finally:
        if staging.exists() and not _mounts_under(staging):
            shutil.rmtree(staging)
    return Arm64Root(path, qemu_cpu), True
