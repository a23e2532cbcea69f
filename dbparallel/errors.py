"""Errors that are the user's to fix; the CLI prints them in one line and exits with code 2."""


class UserError(ValueError):
    """A mistake in the input (config, data, run directory); the message names what to fix."""


class DataError(UserError):
    """Bad or missing data; the message names the column and the first bad row, or the path."""


class RunDirError(UserError):
    """A run directory that cannot be used as asked (mismatching config, missing blocks)."""
