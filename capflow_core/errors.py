"""The three error kinds (docs/architecture.md, "Errors").

Item errors are recorded on the sample and the batch goes on; infrastructure errors are
raised so the caller (a Prefect task later) retries; configuration errors stop a run before
any work starts and say what to fix.
"""

from __future__ import annotations


class CapFlowError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(CapFlowError):
    """A configuration or registry problem, found before any work starts."""


class ItemError(CapFlowError):
    """One sample cannot be processed (corrupt media, unparseable reply, ...).

    Attributes:
        stage: where it happened (``load``, ``route``, ``agents``, ``summary``, ``judge``).
        code: a short machine-readable reason code (``corrupt``, ``unparseable``, ...).
    """

    def __init__(self, stage: str, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.stage = stage
        self.code = code


class InfrastructureError(CapFlowError):
    """A server, network or storage failure that outlasted the retry budget."""
