"""The one base class of every error a user fixes by changing their input.

Config values, data paths, checkpoints and the workdir are the user's; a mistake in one of
them is not a bug, so the command line prints its message (which names what is wrong, where,
and the fix) as one line and exits non-zero, without a traceback (`cud_jax.main`). Library
modules raise subclasses that also derive from the matching built-in (`ValueError`,
`FileNotFoundError`, ...), so callers that catch the built-in keep working.

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations


class UserError(Exception):
    """An error in the user's input: config, data, paths, checkpoints or the workdir."""
