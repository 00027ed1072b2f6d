"""The errors whose message is a sentence for the user, not a traceback.

Each one carries a single sentence naming what is wrong and what to do; a command that catches
one prints it on stderr and exits 2 (`node.cli`). Anything else is an internal failure.
"""

from __future__ import annotations

from privacy.errors import PrivacyError
from topologies import TopologyError

__all__ = ["USER_ERRORS", "ConfigError", "DataError"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one user-facing sentence."""


class DataError(ValueError):
    """Unusable data, file or partition spec; the message is one user-facing sentence."""


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, PrivacyError, TopologyError)
