"""The studio's request errors: each knows its HTTP status, and the API turns it into ``{"error": ...}``."""

from __future__ import annotations


class StudioError(Exception):
    """A request the studio cannot serve as asked (bad input); the message is shown to the user."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(StudioError):
    """A path outside the studio's directory, or a request without the token."""

    status = 403


class NotFound(StudioError):
    status = 404


class TimedOut(StudioError):
    """A request whose body did not arrive, or whose answer was not ready, within the studio's deadline."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TooLarge(StudioError):
    """A request body past the studio's cap."""

    status = 413
