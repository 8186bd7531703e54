"""Errors that stop a command before it does its work; the message says what to fix."""

from __future__ import annotations

from types import TracebackType


class StartupError(RuntimeError):
    """A process cannot start as configured (a port taken, a model missing); the CLI reports it as a CliError."""


class CliError(Exception):
    """The one way a command stops early: bad input or arguments (code 2) or a failed job or connection
    (code 1). `python -m orchestrator` prints it as ONE `error:` line on stderr and exits with its code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code

    @property
    def line(self) -> str:
        """`error: MESSAGE`, with the message's line breaks and runs of white space folded to single spaces."""
        return f"error: {' '.join(str(self).split())}"


class AsCliError:
    """A context manager: an error of these kinds raised in its block becomes a CliError with this exit code,
    its message prefixed. Any other error passes through."""

    def __init__(self, *kinds: type[Exception], code: int, prefix: str = "") -> None:
        self.kinds = kinds
        self.code = code
        self.prefix = prefix

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if isinstance(error, self.kinds):
            raise CliError(f"{self.prefix}{error}", self.code) from None
