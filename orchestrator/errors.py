"""Errors that stop a command before it does its work; the message says what to fix, and the CLI prints it
as one `error:` line."""


class StartupError(RuntimeError):
    pass


class CliError(Exception):
    """A command cannot do what it was asked: bad input (exit 2) or a failed job or connection (exit 1)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
