"""The project's exception types.

`UserError` is for mistakes a user can fix (bad input, a file in the way); it subclasses ValueError so
library callers can catch it the usual way. `VerificationError` is for a product that failed its own
checks (an export that does not match PyTorch). The CLI turns both into a one-line message (exit
codes 2 and 1), never a traceback. Kept free of heavy imports so every package can raise them.
"""

from __future__ import annotations


class MSDeployError(Exception):
    """Base class of the errors the CLI reports as messages."""

    exit_code = 1


class UserError(MSDeployError, ValueError):
    """Bad input or configuration. The message names the problem and the fix."""

    exit_code = 2


class VerificationError(MSDeployError):
    """A model failed a correctness check (parity, size specialisation); nothing was written."""

    exit_code = 1
