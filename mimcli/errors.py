"""Errors that the CLI turns into one line on stderr and exit code 2 (never a traceback)."""


class UsageError(Exception):
    """Bad input from the user: a config key, a value, a missing file or data set."""


class DataNotFoundError(UsageError):
    """A data set that is neither on disk nor downloadable from here."""


class DivergedError(UsageError):
    """The loss became NaN or infinite: training stops before saving, so the last good checkpoint is kept."""
