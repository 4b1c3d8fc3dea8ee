"""The error every data source raises when its files are not where it looked."""

from __future__ import annotations

from cud_jax.errors import UserError


class DataNotFoundError(UserError, FileNotFoundError):
    """Data set files are missing or not prepared.

    The message names the path that was searched and the file to put there or the command
    that prepares it, so a user can fix the problem without reading the loader's code.
    Subclasses FileNotFoundError so generic `except FileNotFoundError` handlers still work.
    """
