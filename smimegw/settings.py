"""Gateway settings: a TOML file overridden by SMIMEGW_* environment variables.

The file comes from `--config FILE` or `SMIMEGW_CONFIG`. Nested keys read from the
environment with a double underscore: `SMIMEGW_SMTP__LISTEN=127.0.0.1:2525`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "SMIMEGW_CONFIG"

# The file that load_settings reads; a context variable, so loading settings
# never changes the process environment that child processes inherit.
_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object) -> timedelta:
    """Read "30s", "5m", "2h", "5d", "250ms" or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            amount, unit = match.groups()
            return timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
    raise ValueError(
        f"invalid duration {value!r}: write a number with a unit, "
        "such as 250ms, 30s, 5m, 2h or 5d"
    )


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _empty_is_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


# A file setting that an empty string leaves unset, as the sample config writes it.
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_is_unset)]


def parse_host_port(value: str, setting: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port", raising ValueError naming the setting."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{setting} = {value!r} is not HOST:PORT, e.g. 127.0.0.1:2525")
    return host, int(port)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SmtpSettings(_Section):
    listen: str = "127.0.0.1:2525"
    hostname: str = "smimegw.localhost"
    max_message_size: int = Field(default=33_554_432, gt=0)
    # STARTTLS is offered only when both files are set.
    tls_cert: OptionalPath = None
    tls_key: OptionalPath = None
    # Time to store the body and get JetStream's ack before replying 451 4.3.0.
    publish_timeout: Duration = timedelta(seconds=10)
    # Limits per client IP address; clients in trusted_networks are exempt.
    max_connections_per_ip: int = Field(default=20, ge=1)
    max_messages_per_ip_per_minute: int = Field(default=120, ge=1)
    max_messages_per_connection: int = Field(default=100, ge=1)
    # RFC 5321 section 4.5.3.1.8: a server must accept at least 100 recipients.
    max_recipients: int = Field(default=100, ge=1)
    # Idle time allowed before each command, and the time for a whole DATA
    # transfer, after which the server replies 421 and closes the connection.
    # RFC 5321 section 4.5.3.2.7 suggests 5 minutes for the first.
    command_timeout: Duration = timedelta(minutes=5)
    data_timeout: Duration = timedelta(minutes=10)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_host_port(value, "smtp.listen")
        return value


class DeliverySettings(_Section):
    relay_host: str = ""
    outbox_dir: Path = Path("var/outbox")
    max_age: Duration = timedelta(days=5)
    connect_timeout: Duration = timedelta(seconds=30)
    # Back-off between attempts after a temporary failure: doubling from the
    # first value up to the cap.
    retry_initial: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(minutes=30)
    # Sessions to relay_host stay open this long after a transaction, for the
    # next one (0 closes each after its message), and are not reused once
    # open for connection_reuse_time; Postfix's smtp_connection_cache_time_limit
    # and smtp_connection_reuse_time_limit.
    connection_cache_time: Duration = timedelta(seconds=2)
    connection_reuse_time: Duration = timedelta(seconds=300)

    @field_validator("relay_host")
    @classmethod
    def _check_relay(cls, value: str) -> str:
        if value:
            parse_host_port(value, "delivery.relay_host")
        return value


class NatsSettings(_Section):
    url: str = ""
    embedded_port: int = Field(default=4222, gt=0, lt=65536)
    # Replicas of each stream: 1 on a single server, 3 in a cluster.
    replicas: int = Field(default=1, ge=1, le=5)
    connect_timeout: Duration = timedelta(seconds=5)
    # This process's NATS user; `smimegw run` sets both for each service.
    # Empty: connect without credentials.
    user: str = ""
    password: SecretStr = SecretStr("")
    # TLS: the embedded server listens with tls_cert and tls_key when both are
    # set; clients verify the server with tls_ca when it is set.
    tls_cert: OptionalPath = None
    tls_key: OptionalPath = None
    tls_ca: OptionalPath = None

    @model_validator(mode="after")
    def _check_tls_pair(self) -> NatsSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                "nats.tls_cert and nats.tls_key go together: set both for a "
                "NATS server with TLS, or neither"
            )
        return self


class BusSettings(_Section):
    # How often a consumer tries a message before parking it.
    max_deliver: int = Field(default=5, ge=1)
    ack_wait: Duration = timedelta(seconds=60)
    # How long the MAIL stream keeps lifecycle events.
    mail_max_age: Duration = timedelta(days=30)


class HealthSettings(_Section):
    # HTTP health and readiness endpoints of one service process, e.g.
    # "127.0.0.1:8081". Empty: none. Give each process its own port, for example
    # SMIMEGW_HEALTH__LISTEN per replica.
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            parse_host_port(value, "health.listen")
        return value


class TelemetrySettings(_Section):
    # OTLP over HTTP traces endpoint, e.g. "http://127.0.0.1:4318/v1/traces".
    # Empty: spans are still made (their trace ids appear in logs and the audit
    # log) but exported nowhere.
    otlp_endpoint: str = ""
    # Prometheus endpoint (GET /metrics) of one service process, e.g.
    # "127.0.0.1:9101". Empty: none. Give each process its own port, for example
    # SMIMEGW_TELEMETRY__METRICS_LISTEN per replica; port 0 picks a free one.
    metrics_listen: str = ""

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"telemetry.otlp_endpoint = {value!r} is not an HTTP URL; write it "
                "as http://HOST:4318/v1/traces"
            )
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            host, port = value.rpartition(":")[::2]
            if port == "0" and host:
                return value
            parse_host_port(value, "telemetry.metrics_listen")
        return value


class AuditSettings(_Section):
    # PostgreSQL connection URL, e.g. "postgresql://smimegw@db.internal/audit".
    # Empty: SQLite at <data_dir>/audit.sqlite3. Secret because it may hold a
    # password.
    database_url: SecretStr = SecretStr("")


class PolicySettings(_Section):
    # How long a held copy waits for a recipient certificate before it bounces,
    # unless its profile sets another time.
    hold_timeout: str = "3d"
    # How often held copies are checked for a new certificate or a timeout.
    hold_check_interval: Duration = timedelta(seconds=10)

    @field_validator("hold_timeout")
    @classmethod
    def _check_hold(cls, value: str) -> str:
        parse_duration(value)
        return value


class AdminSettings(_Section):
    # Address of the admin API (HTTP, OpenAPI at /docs), e.g. "127.0.0.1:8026".
    # Empty: no admin API. Put TLS in front of it when it leaves the host.
    listen: str = ""
    # Bearer tokens as SHA-256 hashes. Empty: <data_dir>/admin-tokens.json.
    tokens_file: OptionalPath = None
    # Limits on uploaded certificate and key files, and on a whole request body.
    max_upload: int = Field(default=512 * 1024, gt=0)
    max_request: int = Field(default=4 * 1024 * 1024, gt=0)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            parse_host_port(value, "admin.listen")
        return value


class KeySettings(_Section):
    # The key-encryption key that seals private keys at rest: 32 random bytes,
    # mode 0600. Empty: <data_dir>/kek, which `smimegw run` creates on first start.
    kek_file: OptionalPath = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SMIMEGW_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("var")
    internal_domains: tuple[str, ...] = ("example.com",)
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    smtp: SmtpSettings = SmtpSettings()
    delivery: DeliverySettings = DeliverySettings()
    nats: NatsSettings = NatsSettings()
    bus: BusSettings = BusSettings()
    keys: KeySettings = KeySettings()
    policy: PolicySettings = PolicySettings()
    health: HealthSettings = HealthSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    audit: AuditSettings = AuditSettings()
    admin: AdminSettings = AdminSettings()

    @field_validator("internal_domains")
    @classmethod
    def _lower_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(domain.strip().lower().rstrip(".") for domain in value)

    @field_validator("trusted_networks")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as err:
                raise ValueError(
                    f"trusted_networks entry {network!r} is not an IP network; "
                    "write it as CIDR, e.g. 192.0.2.0/24"
                ) from err
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, config_file))
        return tuple(sources)

    @property
    def kek_path(self) -> Path:
        return self.keys.kek_file or self.data_dir / "kek"

    @property
    def trusted_ip_networks(
        self,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(n, strict=False) for n in self.trusted_networks
        )


class ConfigFileError(ValueError):
    """The configuration file is missing or not valid TOML."""


def load_settings(config: OptionalPath = None, **overrides: Any) -> Settings:
    """Load settings from `config` (or SMIMEGW_CONFIG) and the environment."""
    if config is None and os.environ.get(CONFIG_ENV):
        config = Path(os.environ[CONFIG_ENV])
    if config is not None and not config.is_file():
        raise ConfigFileError(
            f"configuration file {str(config)!r} not found; pass an existing TOML "
            f"file with --config or {CONFIG_ENV}"
        )
    token = _config_file.set(config)
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileError(f"configuration file {str(config)!r}: {err}") from err
    finally:
        _config_file.reset(token)
