"""Kafka client settings and the one list of ``DRIFTWIRE_*`` environment variables.

Precedence, lowest to highest: config file section < environment < explicit
overrides (CLI options).  Secrets never appear in ``repr`` or logs.

>>> s = KafkaSettings.load({"bootstrap_servers": "k1:9092"}, env={}, client_id="demo")
>>> s.confluent_config()["bootstrap.servers"], s.client_id
('k1:9092', 'demo')
>>> "hunter2" in repr(KafkaSettings(sasl_password="hunter2"))
False
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class EnvVar:
    """A documented environment variable; ``field`` names the KafkaSettings field it sets."""

    name: str
    description: str
    field: str | None = None


# Every DRIFTWIRE_* variable the program reads is listed here (and nowhere else), so
# docs, docker-compose.yml and tests can check names against one source.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("DRIFTWIRE_BOOTSTRAP_SERVERS", "Kafka bootstrap, host:port[,...]", "bootstrap_servers"),
    EnvVar("DRIFTWIRE_SECURITY_PROTOCOL", "security protocol, e.g. SASL_SSL", "security_protocol"),
    EnvVar("DRIFTWIRE_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", "sasl_mechanism"),
    EnvVar("DRIFTWIRE_SASL_USERNAME", "SASL user name", "sasl_username"),
    EnvVar("DRIFTWIRE_SASL_PASSWORD", "SASL password (never logged)", "sasl_password"),
    EnvVar("DRIFTWIRE_SSL_CA_LOCATION", "PEM file of CA certificates to trust", "ssl_ca_location"),
    EnvVar("DRIFTWIRE_SSL_CERTIFICATE_LOCATION", "cert PEM (mTLS)", "ssl_certificate_location"),
    EnvVar("DRIFTWIRE_SSL_KEY_LOCATION", "client private key PEM (mTLS)", "ssl_key_location"),
    EnvVar("DRIFTWIRE_SSL_KEY_PASSWORD", "client key password (never logged)", "ssl_key_password"),
    EnvVar("DRIFTWIRE_CLIENT_ID", "Kafka client.id prefix", "client_id"),
    EnvVar("DRIFTWIRE_LOG_LEVEL", "log level: DEBUG, INFO, WARNING, ERROR"),
    EnvVar("DRIFTWIRE_HOME", "cache root for Kafka jars and the local broker (~/.cache/driftwire)"),
    EnvVar("DRIFTWIRE_TEST_BOOTSTRAP", "tests: use this running broker instead of starting one"),
)

ENV_VAR_NAMES: frozenset[str] = frozenset(v.name for v in ENV_VARS)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SECRETS = ("sasl_password", "ssl_key_password")


@dataclass(frozen=True)
class KafkaSettings:
    """How every driftwire Kafka client (confluent-kafka or aiokafka) connects."""

    bootstrap_servers: str = "localhost:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = None
    client_id: str = "driftwire"

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol {protocol!r} not in {SECURITY_PROTOCOLS}")
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism is not None:
            mechanism = self.sasl_mechanism.upper()
            if mechanism not in SASL_MECHANISMS:
                raise ValueError(f"sasl_mechanism {mechanism!r} not in {SASL_MECHANISMS}")
            object.__setattr__(self, "sasl_mechanism", mechanism)
        if protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {protocol} needs sasl_mechanism")

    @classmethod
    def load(
        cls,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> KafkaSettings:
        """Merge config dict < ``DRIFTWIRE_*`` env < overrides (``None`` overrides are ignored)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for source, label in ((config or {}), "config"), (overrides, "override"):
            unknown = set(source) - known
            if unknown:
                raise ValueError(f"unknown kafka {label} keys: {sorted(unknown)}")
        values.update({k: v for k, v in (config or {}).items() if v is not None})
        env = os.environ if env is None else env
        values.update({v.field: env[v.name] for v in ENV_VARS if v.field and env.get(v.name)})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> KafkaSettings:
        return dataclasses.replace(self, **changes)

    def confluent_config(self) -> dict[str, str]:
        """librdkafka properties for confluent-kafka Producer/Consumer/AdminClient."""
        mapping = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        return {k: v for k, v in mapping.items() if v is not None}

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's AIOKafkaProducer/AIOKafkaConsumer."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context  # only needed with TLS

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_ca_location,
                certfile=self.ssl_certificate_location,
                keyfile=self.ssl_key_location,
                password=self.ssl_key_password,
            )
        return kwargs

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = "'***'" if f.name in _SECRETS and value else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"KafkaSettings({', '.join(parts)})"

    __str__ = __repr__
