"""Static check of our TensorRT-facing code against NVIDIA's API as the tensorrt-stubs package
describes it (10.13), with mypy. The variables that hold TensorRT objects are annotated with the
stub types, so a misspelt method or a wrong argument count fails here, without a GPU.

tensorrt-stubs depends on the `tensorrt` wheel (which cannot install without a GPU index), so it is
downloaded without dependencies; a few of its generated signatures are not valid Python (a
parameter named `in`, a required parameter after defaults): those lines, all plugin and layer APIs
we do not call, are loosened to (*args, **kwargs) before mypy reads them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

STUBS = "tensorrt-stubs==10.13.0.35.1"
CHECKED = ["export/tensorrt_build.py", "runtime/tensorrt_backend.py", "runtime/tensorrt_common.py", "runtime/cuda.py"]


def loosen_invalid_signatures(text: str) -> tuple[str, int]:
    out, fixed = [], 0
    for line in text.splitlines():
        match = re.match(r"^(\s*)def (\w+)\((.*)\)( -> .*)?:(.*)$", line)
        if match:
            try:
                ast.parse(f"def {match[2]}({match[3]}){match[4] or ''}: ...")
            except SyntaxError:
                indent, name, _, ret, rest = match.groups()
                line = f"{indent}def {name}(*args, **kwargs){ret or ''}:{rest}"
                fixed += 1
        out.append(line)
    return "\n".join(out) + "\n", fixed


@pytest.fixture(scope="session")
def stubs_dir(tmp_path_factory) -> Path:
    pytest.importorskip("mypy", reason="mypy is in the [dev] extra")
    where = tmp_path_factory.mktemp("trt-stubs")
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", STUBS, "-d", str(where)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheels = list(where.glob("*.whl"))
    if got.returncode != 0 or not wheels:
        pytest.skip(f"cannot download {STUBS} (no package index?): {got.stderr.strip()[-200:]}")
    root = where / "site"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(root)
    for stub in root.rglob("*.pyi"):
        text, fixed = loosen_invalid_signatures(stub.read_text())
        if fixed:
            stub.write_text(text)
    return root


def test_tensorrt_calls_match_the_stubs(stubs_dir):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", "--no-incremental"]
        + CHECKED,
        cwd=ROOT,
        env={"MYPYPATH": str(stubs_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    # the stubs themselves have errors mypy reports (names used as types, capsules): only ours count
    ours = [line for line in result.stdout.splitlines() if line.startswith(tuple(CHECKED))]
    assert not ours, "\n".join(ours)
    assert "checked 4 source files" in result.stdout, result.stdout[-2000:]


def test_the_check_would_catch_a_misspelt_call(stubs_dir, tmp_path):
    """The stubs are really read: a wrong method name on a TensorRT object is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import tensorrt as trt_api\n"
        "def f(builder: 'trt_api.Builder', network, config) -> None:\n"
        "    builder.build_serialised_network(network, config)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", str(probe)],
        env={"MYPYPATH": str(stubs_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert any(
        line.startswith(str(probe)) and "build_serialised_network" in line for line in result.stdout.splitlines()
    )
