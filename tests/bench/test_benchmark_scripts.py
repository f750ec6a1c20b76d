"""Every script in benchmarks/ is a thin main over library functions: smoke-run each one (its imports
from an installed project, no sys.path edits, and its arguments) from outside the repository, so a
moved or renamed library function breaks a test here instead of the next regeneration of a result."""

from __future__ import annotations

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
    assert "docs/results" in run.stdout, "the script says what it writes"


OURS = ("runtime", "calibration", "models", "export", "bench", "serving", "workflows")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_import_of_the_script_resolves(script):
    """Imports inside functions (and in code run by child processes) are not executed by --help: check
    that every name a script takes from our packages exists."""
    import ast
    import importlib
    import textwrap

    source = script.read_text()
    trees = [ast.parse(source)]
    # code given to child processes as a string (python -c) holds imports too; prose that mentions an
    # import does not parse and is skipped
    for n in ast.walk(trees[0]):
        if isinstance(n, ast.Constant) and "import " in str(n.value):
            try:
                trees.append(ast.parse(textwrap.dedent(str(n.value)).strip()))
            except SyntaxError:
                continue
    missing = []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
                module = importlib.import_module(node.module)
                missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert not missing, f"{script.name} imports names that do not exist: {missing}"
