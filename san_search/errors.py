"""Every error type users see, in one place: each says what was wrong, where, and what would
fix it. The CLI prints any `SanSearchError` as ``error: <message>`` and exits with status 2;
anything else is a bug and keeps its traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SanSearchError(Exception):
    """Base for every error caused by the user's input or environment."""


class ConfigError(SanSearchError):
    """A settings file or mapping with a bad key or value."""


class DataError(SanSearchError):
    """A dataset could not be read, prepared or opened."""


class ImageSizeError(SanSearchError, ValueError):
    """An image size the architecture cannot take."""


class UnknownModelError(SanSearchError, KeyError):
    """A model kind or name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ZooError(SanSearchError):
    """A zoo that is inconsistent with its data, its roles or its files."""


class CandidateError(SanSearchError):
    """A candidate config that does not fit the zoo or the data."""


class NonFiniteLoss(SanSearchError):
    """Training produced a NaN or infinite loss: retrying from a checkpoint would repeat it."""


class TrackingError(SanSearchError):
    """MLflow cannot be reached or used."""


class SearchError(SanSearchError):
    """A search that cannot start or resume."""


class EnsembleError(SanSearchError):
    """An ensemble that cannot be selected, exported or loaded."""


class LaunchError(SanSearchError):
    """The cluster or the search cannot be launched as asked."""


class DemoError(SanSearchError):
    """The demo cannot run as asked."""


def did_you_mean(name: str, allowed: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """"; did you mean 'x'?" for the allowed name closest to `name` (with `n` > 1: the
    closest few, listed), or "" when none is close: the hint every unknown-name error ends
    with."""
    close = difflib.get_close_matches(str(name), list(allowed), n=n, cutoff=cutoff)
    if not close:
        return ""
    return f"; did you mean '{close[0]}'?" if n == 1 else f"; did you mean {', '.join(close)}?"
