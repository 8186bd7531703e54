"""Errors that stop a command before it does its work; the message says what to fix, and the CLI prints it
as one `error:` line."""


class StartupError(RuntimeError):
    pass
