"""The `msdeploy` command line: a thin layer over the models, export, calibration and runtime APIs."""

from runtime.environment import package_version

__version__ = package_version("multiscale-deploy") or "0+unknown"
