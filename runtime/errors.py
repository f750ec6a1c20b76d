"""The one exception type for mistakes a user can fix.

It subclasses ValueError so library callers can catch it the usual way; the CLI turns it into a
one-line message and exit code 2 instead of a traceback. Kept free of heavy imports so every
package (including the torch-free runtime) can raise it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or configuration. The message names the problem and the fix."""
