"""Errors of the local stack, each worded so the user knows what to do next."""

from __future__ import annotations


class StackError(RuntimeError):
    """Base of every local-stack failure; the CLI prints its message and exits non-zero."""


class WeaviateNotInstalledError(StackError):
    """The Weaviate binary is missing: it is built once by `make setup`, never at run time."""


class PortInUseError(StackError):
    """A port a component must listen on is taken by some other process."""

    def __init__(self, port: int, role: str, hint: str | None = None) -> None:
        self.port = port
        self.role = role
        message = f"port {port} ({role}) is already in use by another process"
        super().__init__(f"{message}; {hint}" if hint else message)


class StartupError(StackError):
    """A component exited or did not become healthy in time; carries the end of its log."""

    def __init__(self, component: str, reason: str, log_tail: str = "") -> None:
        self.component = component
        self.reason = reason
        self.log_tail = log_tail
        message = f"{component}: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)
