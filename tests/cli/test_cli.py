"""The command line: help, version, info, params, demo, and user errors without tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from msdeploy.cli import main
from tests.helpers import ROOT, copy_model


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_help_and_version(run):
    result = run("--help")
    assert result.exit_code == 0 and "info" in result.output and "params" in result.output
    result = run("--version")
    assert result.exit_code == 0 and "msdeploy, version" in result.output


def test_runs_as_a_module_from_the_source_tree(tmp_path):
    # how benchmarks/gpu_rows.sh runs it on a machine where nothing can be pip-installed
    root = ROOT
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "msdeploy", "bench", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: msdeploy bench") and "--backends" in result.stdout


def test_info_json(run):
    result = run("info", "--json")
    data = json.loads(result.output)
    assert data["packages"]["torch"] and data["python"]
    names = {b["name"]: b for b in data["backends"]}
    assert names["onnxruntime-cpu"]["available"] and names["torch-cpu"]["available"]
    import torch

    if not torch.cuda.is_available():  # no GPU: no engine can run, whatever is installed
        assert not names["tensorrt"]["available"] and names["tensorrt"]["detail"]


def test_params_table_is_measured(run):
    result = run("params", "--backbone", "pvt_v2_b0", "--json")
    rows = {r["key"]: r["params"] for r in json.loads(result.output)}
    from models import build_model

    for fusion in ("hierarchical", "absi"):
        model = build_model("pvt_v2_b0", fusion)
        heads = sum(p.numel() for p in model.multi_scale_processor.prediction_heads.parameters())
        # the total counts the training-only heads; everything else is in the deployed network
        assert rows[f"total_{fusion}"] == sum(p.numel() for p in model.parameters())
        assert rows["prediction_heads"] == heads


def test_params_guide_claims_shown_for_b2(run):
    result = run("params")
    assert result.exit_code == 0 and "~25M" in result.output and "~38M" in result.output


def test_demo_reuses_its_exports(run, exported, tmp_path):
    """The demo's export step is the same code as `msdeploy export onnx` (tested there); here the
    demo folder already holds the session's export, which the demo must reuse and check."""
    copy_model(exported["absi"], tmp_path / "pvt_v2_b0_absi.onnx")
    result = run("demo", "--sizes", "64,96", "--fusion", "absi", "--output-dir", str(tmp_path), "--random-init")
    assert result.exit_code == 0, result.output
    assert "(1,32,16,16)" in result.output and "(1,1,96,96)" in result.output
    assert "reusing" in result.output and "Parity" in result.output
    assert (tmp_path / "masks-preview.png").is_file() and (tmp_path / "masks-absi" / "photo0_mask.png").is_file()
    assert re.findall(r"│ (PASS|FAIL)\s+│", result.output) == ["PASS"] * (2 * 2 * 5)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["params", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["params", "--scales", "0.5,1.5"], "lack 1.0"),
        (["demo", "--fusion", "sum", "--sizes", "64"], "unknown fusion 'sum'"),
        (["demo", "--sizes", "16"], "at least 32"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(args, fragment):
    result = subprocess.run([sys.executable, "-m", "msdeploy.cli", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_base_cli_and_runtime_do_not_import_torch_or_onnx(exported):
    code = (
        "import sys, numpy as np, runtime, runtime.environment, msdeploy.cli\n"
        f"r = runtime.open_runner({str(exported['absi'])!r}, 'onnxruntime-cpu')\n"
        "assert r.infer(np.zeros((1, 3, 64, 80), np.float32))['mask_logits'].shape == (1, 1, 64, 80)\n"
        "assert r.metadata.fusion == 'absi'\n"
        "import bench.run, bench.report, bench.file_rows, runtime.memory\n"
        "import runtime.predict, runtime.inference_job, runtime.postprocess, msdeploy.commands.infer\n"
        "import serving.model_repository, export.bundle, export.tensorrt_build\n"
        "from click.testing import CliRunner\n"
        "assert CliRunner().invoke(msdeploy.cli.main, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(msdeploy.cli.main, ['bench', '--help']).exit_code == 0\n"
        "assert CliRunner().invoke(msdeploy.cli.main, ['infer', '--help']).exit_code == 0\n"
        "assert CliRunner().invoke(msdeploy.cli.main, ['info']).exit_code == 0\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'timm') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_board_side_code_needs_no_newer_python_than_jetpack_6():
    """JetPack 6 has Python 3.10: the runtime, the CLI and the engine builder must not need 3.11
    (checked statically with vermin; this workplace has no 3.10 interpreter)."""
    root = ROOT
    board_side = ("tensorrt_build.py", "bundle.py", "boards.py", "engine_report.py")
    targets = [root / "runtime", root / "msdeploy", *(root / "export" / f for f in board_side)]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "-t=3.10-", "--no-tips", "--violations", "--eval-annotations"]
        + [str(t) for t in targets],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
