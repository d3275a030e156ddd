"""Service configuration from the environment, validated at start.

Each service subclasses :class:`ServiceSettings` with ``env_prefix="LORAG_<SVC>_"``; a bad value stops the process
before it binds a port, with a message that names the environment variable, so a misconfigured deployment fails
fast and says why instead of serving wrongly.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(SystemExit):
    """Raised (as a SystemExit with code 2) when configuration is invalid; its message names each variable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = 2

    def __str__(self) -> str:
        return self.message


class ServiceSettings(BaseSettings):
    """What every lorag service can be told by its environment (``LORAG_<SVC>_HOST``, ``..._PORT`` ...)."""

    model_config = SettingsConfigDict(env_prefix="LORAG_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds; 0.0.0.0 in containers.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus scrape port; unset disables the exporter."
    )
    grace_seconds: float = Field(10.0, ge=0, description="How long in-flight calls may finish after SIGTERM.")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted/sent.")
    max_concurrent_rpcs: int | None = Field(
        None, ge=1, description="Calls served at once before new ones get RESOURCE_EXHAUSTED; unset = unbounded."
    )
    log_level: LogLevel = Field("INFO", description="Minimum level of JSON log lines on stdout.")


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings_cls`` (its validation alias, if it has one).

    Stack-wide settings such as ``LORAG_WEAVIATE_HOST`` are read through an alias rather than the service prefix;
    pydantic reports those by the alias itself.
    """
    info = settings_cls.model_fields.get(field)
    if info is None:  # already an alias
        return field.upper()
    if isinstance(info.validation_alias, str):
        return info.validation_alias.upper()
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{field}".upper()


def load_settings(settings_cls: type[SettingsT], **overrides: object) -> SettingsT:
    """Read and validate settings from the environment; raise :class:`ConfigError` naming each bad variable."""
    try:
        return settings_cls(**overrides)  # type: ignore[arg-type]  # field values, which pydantic validates
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if field:
                problems.append(f"  {env_name(settings_cls, field)}={error.get('input')!r}: {message}")
            else:  # a rule across several variables; its message names them
                problems.append(f"  {message}")
        raise ConfigError(f"invalid configuration for {settings_cls.__name__}:\n" + "\n".join(problems)) from None
