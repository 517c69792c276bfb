"""Errors that the command line turns into one-line messages instead of tracebacks."""


class BeexError(Exception):
    """Base class for every error a user can cause (bad input, missing file, corrupt checkpoint)."""

    exit_code = 2  # what `beex` exits with after printing the one-line message


class ConfigError(BeexError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataError(BeexError, ValueError):
    """A data file is missing or malformed; the message names the file and, where known, the line."""


class CheckpointError(BeexError, ValueError):
    """A checkpoint or packed model is missing, truncated or corrupt."""
