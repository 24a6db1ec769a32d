"""Errors that the CLI turns into one line on stderr and exit code 2 (never a traceback)."""

import re


class UsageError(Exception):
    """Bad input from the user: a config key, a value, a missing file or data set."""


class DataNotFoundError(UsageError):
    """A data set that is neither on disk nor downloadable from here."""


class DivergedError(UsageError):
    """The loss became NaN or infinite: training stops before saving, so the last good checkpoint is kept."""


def allocation_failure(error: BaseException) -> str | None:
    """One line for an allocator's refusal (Python's MemoryError, torch's CPU allocator, CUDA out of
    memory), else None: sizes that cannot be allocated are bad input, not a crash."""
    text = str(error).strip()
    if isinstance(error, MemoryError):
        detail = text.splitlines()[0] if text else "no detail"
    elif isinstance(error, RuntimeError) and (
        type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text
    ):
        asked = re.search(r"(?:tried to allocate|Tried to allocate) ([\d.]+ ?\w*)", text)
        detail = f"tried to allocate {asked.group(1)}" if asked else text.splitlines()[0]
    else:
        return None
    return (
        f"out of memory ({detail}): the sizes asked for do not fit; try a smaller data.image_size, "
        "model.width or train.batch_size"
    )
