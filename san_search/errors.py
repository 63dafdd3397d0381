"""The error types users see: each says what was wrong, where, and what would fix it."""


class SanSearchError(Exception):
    """Base for every error caused by the user's input or environment.

    The CLI prints these as ``error: <message>`` and exits with status 2; anything else is a bug
    and keeps its traceback.
    """


class DataError(SanSearchError):
    """A dataset could not be read, prepared or opened."""
