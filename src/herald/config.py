"""The one typed settings object; the only module that reads the environment.

Settings come from ``HERALD_*`` environment variables and, with lower precedence, from a TOML
file (``HERALD_CONFIG``, default ``./herald.toml`` when it exists) whose keys are the variable
names in lower case without the prefix. Invalid values stop start-up with a
:class:`~herald.errors.ConfigError` that names the setting.
"""

from __future__ import annotations

import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from herald import limits
from herald.errors import ConfigError

__all__ = ["Settings", "load_settings"]

_ENV_PREFIX = "HERALD_"


class Settings(BaseSettings):
    """Every setting of Herald. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    data_dir: Path = Path(".herald")
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    public_url: str = ""
    database_url: str = ""
    redis_url: SecretStr | None = None
    #: Cluster mode: several nodes share the database and Redis (live fan-out over the Redis
    #: bus, tickets in Redis). Default: on exactly when HERALD_REDIS_URL is set; turning it
    #: on without Redis is refused (nonces, revocations and limits would be node-local).
    cluster: bool | None = None
    #: This node's name in ``herald cluster status`` (default: host name and port).
    node_id: str = ""
    #: Worker processes serving one port (``herald serve --workers``); more than one shares
    #: state through Redis like a cluster's nodes, so HERALD_REDIS_URL is required.
    workers: int = Field(default=1, ge=1, le=64)
    #: Bind the port with SO_REUSEPORT (set by ``herald serve --workers`` for its workers:
    #: the kernel spreads connections over every process bound to the port).
    reuse_port: bool = False
    master_key: SecretStr | None = None
    key_provider: Literal["local", "aws-kms"] = "local"
    aws_kms_key_id: str = ""
    aws_kms_previous_key_ids: str = ""
    aws_region: str = "us-east-1"
    aws_kms_endpoint_url: str | None = None
    key_cache_ttl: float = Field(default=60.0, gt=0, le=3600)
    replay_window: int = Field(default=300, ge=1, le=900)
    require_signatures: bool = True
    nonce_capacity: int = Field(default=1_000_000, ge=1000, le=100_000_000)
    egress_allow: str = ""
    egress_ca_file: Path | None = None
    smtp_url: SecretStr | None = None
    smtp_from: str = ""
    webpush_subject: str = ""
    delivery_lease: float = Field(default=60.0, ge=1, le=3600)
    delivery_retry_base: float = Field(default=2.0, gt=0, le=3600)
    delivery_retry_cap: float = Field(default=600.0, gt=0, le=86400)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    #: Token bucket per app (every authenticated request) and per subscriber (stream
    #: connections, tickets, device registrations): tokens per second and burst.
    rate_limit_app_rate: float = Field(default=1000.0, gt=0, le=1_000_000)
    rate_limit_app_burst: int = Field(default=2000, ge=1, le=1_000_000)
    rate_limit_subscriber_rate: float = Field(default=2.0, gt=0, le=1_000_000)
    rate_limit_subscriber_burst: int = Field(default=30, ge=1, le=1_000_000)
    #: Token endpoint lockout: failures per client id / address before the first lock,
    #: its length in seconds (doubling per further failure) and the longest lock.
    lockout_threshold: int = Field(default=5, ge=1, le=1000)
    #: Failures from one source address (for any client ids) before it is locked: higher,
    #: since many clients may share an address behind NAT.
    lockout_address_threshold: int = Field(default=100, ge=1, le=1_000_000)
    lockout_base: float = Field(default=1.0, gt=0, le=3600)
    lockout_cap: float = Field(default=900.0, gt=0, le=86400)
    #: Seconds between a node's re-reads of the token-signing keys (rotations on other
    #: nodes or by the CLI), and the JWKS cache lifetime it advertises.
    key_reload_interval: float = Field(default=30.0, ge=0.2, le=3600)
    jwks_max_age: int = Field(default=300, ge=0, le=86400)
    #: Default content de-duplication window in seconds (0: off); a message may set its own.
    dedup_window: int = Field(default=0, ge=0, le=7 * 86400)

    insecure_http: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: PEM CA bundle for client certificates (mutual TLS, optional per connection): tokens
    #: requested over a connection with a certificate are bound to it (RFC 8705 §3).
    tls_client_ca_file: Path | None = None
    hsts_max_age: int = Field(default=31536000, ge=0)

    access_token_ttl: int = Field(
        default=limits.ACCESS_TOKEN_TTL_DEFAULT, ge=60, le=limits.ACCESS_TOKEN_TTL_MAX
    )
    #: Operator tokens and web console sessions (absolute lifetime; sign in again after).
    operator_token_ttl: int = Field(
        default=limits.OPERATOR_TOKEN_TTL, ge=10, le=limits.OPERATOR_TOKEN_TTL_MAX
    )
    max_body_bytes: int = Field(default=limits.MAX_BODY_BYTES, ge=1024, le=1024 * 1024)
    stream_queue_size: int = Field(default=limits.STREAM_QUEUE_MAX, ge=8, le=1_000_000)
    heartbeat_interval: float = Field(default=limits.HEARTBEAT_INTERVAL, gt=0, le=300)
    audit_origin: str = ""
    audit_checkpoint_entries: int = Field(default=1000, ge=1, le=10_000_000)
    audit_checkpoint_seconds: float = Field(default=10.0, gt=0, le=86400)
    audit_witness_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in {"https", "http"} or not parts.netloc:
                raise ValueError("must be an absolute http(s) URL such as https://push.example.com")
            if parts.query or parts.fragment:
                raise ValueError("must not carry a query or fragment")
            return value.rstrip("/")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must be a sqlite:/// path or a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _check_cluster(self) -> Settings:
        if self.cluster and self.redis_url is None:
            raise ValueError(
                "cluster mode needs HERALD_REDIS_URL: without it nonces, revoked tokens, "
                "rate limits, stream tickets and live fan-out would stay on one node"
            )
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                "several workers need HERALD_REDIS_URL: they share nonces, revoked tokens, "
                "rate limits, stream tickets and live fan-out through it, like cluster nodes"
            )
        if self.workers > 1 and self.cluster is False:
            raise ValueError("several workers run in cluster mode; HERALD_CLUSTER=false forbids it")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the TOML file; no dotenv or secrets directory."""
        del dotenv_settings, file_secret_settings
        toml_path = Path(os.environ.get(_ENV_PREFIX + "CONFIG", "herald.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # -- derived values -------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        """``http`` only when ``insecure_http`` is set explicitly."""
        return "http" if self.insecure_http else "https"

    @cached_property
    def base_url(self) -> str:
        """The public base URL: ``@target-uri`` base for signatures and the token ``iss``."""
        if self.public_url:
            return self.public_url
        host = self.host
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def vapid_subject(self) -> str:
        """RFC 8292 ``sub``: who push services contact about this sender."""
        if self.webpush_subject:
            return self.webpush_subject
        if self.base_url.startswith("https://"):
            return self.base_url
        return f"mailto:webpush@{urlsplit(self.base_url).hostname or 'localhost'}"

    @property
    def witness_dir(self) -> Path:
        """Where checkpoint copies go: outside the data dir unless configured otherwise."""
        if self.audit_witness_dir is not None:
            return self.audit_witness_dir
        return self.data_dir.parent / (self.data_dir.name + "-witness")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the async driver SQLAlchemy needs."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'herald.db'}"
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url

    @property
    def cluster_mode(self) -> bool:
        """Whether this node is one of several sharing the database and Redis."""
        return self.redis_url is not None if self.cluster is None else self.cluster

    @property
    def node_name(self) -> str:
        """This node's name among the cluster's nodes."""
        return self.node_id or f"{socket.gethostname()}:{self.port}"

    @property
    def cert_file(self) -> Path:
        """The server certificate chain (PEM)."""
        return self.tls_cert_file or self.data_dir / "tls" / "server.pem"

    @property
    def key_file(self) -> Path:
        """The server private key (PEM)."""
        return self.tls_key_file or self.data_dir / "tls" / "server.key"

    @property
    def ca_file(self) -> Path:
        """The development CA certificate created by ``herald init``."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def master_key_file(self) -> Path:
        """The 0600 master key file of the ``local`` key provider."""
        return self.data_dir / "master.key"

    @property
    def cert_bound_tokens(self) -> bool:
        """Whether client certificates are requested and tokens bound to them (RFC 8705)."""
        return not self.insecure_http and self.tls_client_ca_file is not None

    def security_summary(self) -> dict[str, Any]:
        """What ``/readyz`` and start-up report about the security posture."""
        return {
            "tls": not self.insecure_http,
            "hsts": not self.insecure_http and self.hsts_max_age > 0,
            "encryption_at_rest": True,
            "token_alg": "EdDSA",
            "request_signatures": self.require_signatures,
            "cert_bound_tokens": self.cert_bound_tokens,
            "replay_store": "redis" if self.redis_url is not None else "memory",
            "cluster": self.cluster_mode,
            "warnings": self.security_warnings(),
        }

    def security_warnings(self) -> list[str]:
        """Every setting that weakens the secure defaults, in words (start-up and /readyz)."""
        warnings = []
        if self.insecure_http:
            warnings.append("insecure_http: TLS is off; run only behind a TLS-terminating proxy")
        if not self.require_signatures:
            warnings.append(
                "require_signatures is off: unsigned requests are accepted and replays of "
                "them are not detected"
            )
        return warnings


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, the TOML file and ``overrides``.

    Raises:
        ConfigError: naming the first invalid setting and why.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            where = f"{_ENV_PREFIX}{name.upper()}: " if name else ""
            messages.append(where + str(err["msg"]).removeprefix("Value error, "))
        raise ConfigError("invalid configuration: " + "; ".join(messages)) from None
