"""`python -m msdeploy`: the CLI without the console script, e.g. from a source tree on PYTHONPATH
(a machine where the package cannot be pip-installed, such as one without a package index)."""

from msdeploy.cli import main

main(prog_name="msdeploy")
