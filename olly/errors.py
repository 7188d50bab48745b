"""The one family of errors the core raises.

Every error carries a stable machine-readable ``reason`` (documented in the README)
and a one-line human message. The CLI maps the reason to an exit code.
"""

from __future__ import annotations

# Exit codes are part of olly's interface: documented in the README.
EXIT_OK = 0
EXIT_TARGET_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 4  # an unexpected exception: a bug in olly
EXIT_INTERRUPTED = 130

# Reasons whose exit code is not the default usage/config code (2).
_ENVIRONMENT_REASONS = {
    "engine-unreachable",
    "engine-error",
    "push-failed",
    "pull-failed",
    "cache-corrupt",
    "cache-incompatible",
    "cache-locked",
    "cache-write-failed",
    "io-error",
    "registry-unreachable",
    "registry-denied",
    "registry-error",
    "git-error",
    "watch-failed",
}


class OllyError(Exception):
    """A user-facing failure: ``reason`` is stable, ``message`` is one line."""

    def __init__(self, reason: str, message: str, *, location: str | None = None) -> None:
        self.reason = reason
        self.message = message
        self.location = location
        super().__init__(self.line())

    def line(self) -> str:
        """The one line shown to the user (``file:line: message`` when located)."""
        if self.location:
            return f"{self.location}: {self.message}"
        return self.message

    @property
    def exit_code(self) -> int:
        if self.reason in _ENVIRONMENT_REASONS:
            return EXIT_ENVIRONMENT
        if self.reason == "target-failed":
            return EXIT_TARGET_FAILED
        return EXIT_USAGE
