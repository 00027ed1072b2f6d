"""Errors raised by the privacy package.

    PrivacyError            bad privacy parameters, unreachable budget, unsupported configuration
     └── LedgerError        the spend ledger is corrupt, locked, or belongs to another node/config

Every message is one sentence that names what is wrong and what to do, so callers (the daemon,
the calculator) can print ``str(error)`` as is. ``PrivacyError`` subclasses ``ValueError`` because
almost every case is a bad value supplied by the user.
"""

from __future__ import annotations


class PrivacyError(ValueError):
    """A privacy parameter or configuration is invalid, or a guarantee cannot be given."""


class LedgerError(PrivacyError):
    """The spend ledger cannot be trusted or used; the node must not start."""
