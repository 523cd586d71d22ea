"""KafkaSettings: precedence, client configs, and secrets kept out of repr."""

from __future__ import annotations

import pytest
from driftwire.streams.settings import ENV_VAR_NAMES, ENV_VARS, KafkaSettings


def test_precedence_config_then_env_then_overrides():
    config = {"bootstrap_servers": "cfg:9092", "client_id": "cfg", "sasl_username": "cfg-user"}
    env = {"DRIFTWIRE_BOOTSTRAP_SERVERS": "env:9092", "DRIFTWIRE_CLIENT_ID": "env"}
    s = KafkaSettings.load(config, env=env, client_id="cli", sasl_username=None)
    assert s.bootstrap_servers == "env:9092"  # env beats config
    assert s.client_id == "cli"  # override beats env
    assert s.sasl_username == "cfg-user"  # a None override leaves the lower layer alone


def test_empty_env_value_does_not_override_config():
    env = {"DRIFTWIRE_BOOTSTRAP_SERVERS": ""}
    s = KafkaSettings.load({"bootstrap_servers": "cfg:9092"}, env=env)
    assert s.bootstrap_servers == "cfg:9092"


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="bootstrap_server"):
        KafkaSettings.load({"bootstrap_server": "typo:9092"}, env={})


def test_sasl_ssl_maps_to_both_clients():
    s = KafkaSettings.load(
        env={
            "DRIFTWIRE_BOOTSTRAP_SERVERS": "k:9093",
            "DRIFTWIRE_SECURITY_PROTOCOL": "sasl_ssl",
            "DRIFTWIRE_SASL_MECHANISM": "scram-sha-512",
            "DRIFTWIRE_SASL_USERNAME": "svc",
            "DRIFTWIRE_SASL_PASSWORD": "s3cret",
        }
    )
    conf = s.confluent_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cret"
    assert "ssl.ca.location" not in conf  # unset options are left to librdkafka's defaults
    kwargs = s.aiokafka_kwargs()
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["ssl_context"] is not None


def test_repr_and_str_hide_secrets():
    s = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_password="hunter2",
        ssl_key_password="keypass",
    )
    for text in (repr(s), str(s), f"{s}"):
        assert "hunter2" not in text and "keypass" not in text
        assert "sasl_password='***'" in text


@pytest.mark.parametrize(
    "bad",
    [
        {"security_protocol": "TLS"},
        {"security_protocol": "SASL_SSL"},  # SASL needs a mechanism
        {"sasl_mechanism": "KERBEROS5"},
    ],
)
def test_invalid_security_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        KafkaSettings.load(bad, env={})


def test_every_settings_field_has_one_env_var():
    fields = [v.field for v in ENV_VARS if v.field]
    assert sorted(fields) == sorted(KafkaSettings.__dataclass_fields__)
    assert len(ENV_VAR_NAMES) == len(ENV_VARS)
    assert all(name.startswith("DRIFTWIRE_") for name in ENV_VAR_NAMES)
