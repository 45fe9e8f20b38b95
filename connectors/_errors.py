"""The errors the connector runtime raises, grafted onto the engine's tree.

    ShipmapError                    root (shipmap.engine); exit code 1
    ├── SourceError                 (engine) an input cannot be opened or read; exit code 3
    └── ConnectorError              the connector runtime failed; exit code 1
        ├── ConfigError             the runtime config file is wrong; file:line:col; exit code 2
        ├── DeliveryError           a request could not be delivered; exit code 6
        │   ├── AuthError           a login or credential was refused; exit code 6
        │   └── SendingStopped      sends kept raising inside shipmap (a bug): the run stopped; exit code 6
        └── JournalError            the journal database cannot be opened or is not ours; exit code 7

A finished run that dead-lettered anything is not an exception: ``shipmap run`` exits with
``EXIT_DEAD_LETTERS`` (8), or, when a connection's circuit breaker stayed open past its outage wait and
deliveries were left pending, ``EXIT_OUTAGE`` (9); on a shared journal, when every delivery this worker owed
was done but other live workers still hold some pending past ``journal.wait_for_others``, ``EXIT_HELD`` (10).
No message built here ever contains a config value or a secret; values shown come from source documents or
from responses, and those pass through the redactor first.
"""

from __future__ import annotations

from shipmap.engine import ShipmapError

EXIT_OK = 0
EXIT_DELIVERY = 6
EXIT_JOURNAL = 7
EXIT_DEAD_LETTERS = 8
EXIT_OUTAGE = 9
EXIT_HELD = 10  # still pending, held by other live workers (a shared journal)


class ConnectorError(ShipmapError):
    """Root of the runtime's own errors."""


class ConfigError(ConnectorError):
    """The runtime config is wrong; ``location`` names the config file, line and column (never a value)."""

    exit_code = 2


class DeliveryError(ConnectorError):
    """A request failed. ``retryable`` says whether trying again may help; ``status`` is the HTTP status."""

    exit_code = EXIT_DELIVERY

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class AuthError(DeliveryError):
    """A login failed: refused credentials are final; a login that hit a 5xx or the network is retryable."""


class SendingStopped(DeliveryError):
    """Sends kept raising inside shipmap instead of getting answers (a bug in shipmap, or in a custom transport
    or auth flow): the run stopped, and what it had not delivered stays ``pending`` for the run after the fix."""


class JournalError(ConnectorError):
    """The journal database cannot be opened, or is not a shipmap journal."""

    exit_code = EXIT_JOURNAL
