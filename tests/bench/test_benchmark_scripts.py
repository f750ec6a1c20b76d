"""Every script in benchmarks/ is a thin main over library functions: smoke-run each one (its imports
from an installed project, no sys.path edits, and its arguments) from outside the repository, so a
moved or renamed library function breaks a test here instead of the next regeneration of a result."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_there_are_scripts_to_check():
    assert {p.stem for p in SCRIPTS} >= {"bench_accuracy", "bench_export", "bench_infer", "bench_int8_cpu"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_runs_from_anywhere(script, tmp_path):
    run = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout and "--output" in run.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_main_takes_its_arguments(script):
    """`main(argv)` so a script can be called from Python with its own arguments."""
    spec = importlib.util.spec_from_file_location(f"bench_script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert module.__doc__ and "docs/results" in module.__doc__, "the script says what it writes"
