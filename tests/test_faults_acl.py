"""Access control: a SASL/PLAIN broker with the KRaft StandardAuthorizer and ACLs.

A separate broker (not the session one) whose client listener is SASL_PLAINTEXT with
three JAAS users: ``admin`` (super user, sets up topics and ACLs), ``alice`` (the ACLs
a worker needs) and ``bob`` (the same, but DENY WRITE on his alerts topic). The
controller listener stays PLAINTEXT on loopback; its ANONYMOUS principal is a super
user so the broker can talk to its own controller.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from driftwire.detectors.generators import Shift, StreamSpec, generate, take_events
from driftwire.schemas.serde import Codec
from driftwire.streams.broker import BrokerError, LocalBroker, MissingToolError
from workerkit import feature_records, read_alerts, start_worker, stop, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

PASSWORDS = {"admin": "admin-Secret-1", "alice": "alice-Secret-2", "bob": "bob-Secret-3"}
MODEL = "acl-model"
WINDOW = {"size": "10s", "min_count": 200}


SCRAM = "SCRAM-SHA-256"


def client(user: str, password: str | None = None, mechanism: str = "PLAIN") -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password or PASSWORDS[user],
    }


def sasl_overrides() -> dict[str, str]:
    users = " ".join(f'user_{u}="{p}"' for u, p in PASSWORDS.items())
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="admin" password="{PASSWORDS["admin"]}" {users};'
    )
    return {
        # the listener keeps its name (LocalBroker picks its port) but speaks SASL
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": f"PLAIN,{SCRAM}",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.plaintext.plain.sasl.jaas.config": jaas,
        # SCRAM users live in the KRaft metadata (LocalBroker's scram_users, at format time)
        f"listener.name.plaintext.{SCRAM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin;User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }


@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalBroker(
        tmp_path_factory.mktemp("sasl-broker"),
        overrides=sasl_overrides(),
        client_config=client("admin"),
        scram_users=PASSWORDS,
    )
    try:
        bootstrap = broker.start(timeout=120)
    except (MissingToolError, BrokerError) as exc:
        pytest.fail(f"SASL broker did not start: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.stop()


def _allow(principal: str, kind: ResourceType, name: str, op: AclOperation, prefixed=False):
    pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
    return AclBinding(kind, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)


def worker_acls(principal: str, features: str, app_id: str) -> list[AclBinding]:
    """What a worker needs: read the features, own its app's topics and consumer group."""
    return [
        _allow(principal, ResourceType.TOPIC, features, AclOperation.READ),
        _allow(principal, ResourceType.TOPIC, features, AclOperation.DESCRIBE),
        _allow(principal, ResourceType.TOPIC, f"{app_id}-", AclOperation.ALL, prefixed=True),
        _allow(principal, ResourceType.GROUP, app_id, AclOperation.READ, prefixed=True),
    ]


def _deny_write(principal: str, topic: str) -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{principal}",
        "*",
        AclOperation.WRITE,
        AclPermissionType.DENY,
    )


class Cluster:
    """The SASL broker seen as admin, with one features topic holding a drifting stream."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.admin = AdminClient({**client("admin"), "bootstrap.servers": bootstrap})
        self.features = f"features-{uuid.uuid4().hex[:8]}"
        self.create(self.features, 2)
        spec = StreamSpec(n_numeric=4, n_categorical=1, rate=500.0, seed=3, model_id=MODEL)
        with open(self.reference, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in feature_records(take_events(spec, 5_000)))
        drift = [Shift(features=("x0",), start_ms=30_000, magnitude=2.0)]
        batch = next(iter(generate(spec, 80_000, drifts=drift, batch_size=10**7)))
        self.events = len(batch)
        codec = Codec("FeatureEvent", "avro")
        producer = Producer({**client("admin"), "bootstrap.servers": bootstrap, "linger.ms": 20})
        for rec in feature_records(batch):
            producer.produce(self.features, codec.encode(rec), rec["prediction_id"].encode())
            producer.poll(0)
        assert producer.flush(60) == 0

    @property
    def reference(self) -> Path:
        return self.workdir / "reference.jsonl"

    def create(self, topic: str, partitions: int = 1) -> None:
        self.admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)

    def grant(self, acls: list[AclBinding]) -> None:
        for future in self.admin.create_acls(acls).values():
            future.result(30)

    def revoke(self, acl: AclBinding) -> None:
        wanted = AclBindingFilter(
            acl.restype,
            acl.name,
            acl.resource_pattern_type,
            acl.principal,
            acl.host,
            acl.operation,
            acl.permission_type,
        )
        for future in self.admin.delete_acls([wanted]).values():
            future.result(30)

    def config(
        self, app_id: str, user: str, password: str | None = None, mechanism: str = "PLAIN"
    ) -> Path:
        raw = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": mechanism,
                "sasl_username": user,
                "sasl_password": password or PASSWORDS[user],
            },
            "topics": {"features": self.features, "alerts": f"{app_id}-alerts"},
            "worker": {
                "app_id": app_id,
                "idle_timeout": "5s",
                "batch_timeout": "100ms",
                "session_timeout": "6s",
            },
            "models": [
                {
                    "id": MODEL,
                    "window": WINDOW,
                    "alerts": {"fire_after": 1, "resolve_after": 2},
                    "reference": {"source": "file", "path": str(self.reference)},
                }
            ],
        }
        path = self.workdir / f"{app_id}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def alert_ids(self, app_id: str) -> set[str]:
        alerts = read_alerts(self.bootstrap, f"{app_id}-alerts", client("admin"))
        return {a.alert_id for a in alerts}


@pytest.fixture(scope="module")
def cluster(sasl_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(sasl_bootstrap, tmp_path_factory.mktemp("acl"))


@pytest.fixture(scope="module")
def alice_alerts(cluster: Cluster) -> set[str]:
    """Alert ids of a worker with the right credentials and ACLs, run to the end."""
    app_id = f"dwa{uuid.uuid4().hex[:6]}"
    cluster.grant(worker_acls("alice", cluster.features, app_id))
    worker = start_worker(cluster.config(app_id, "alice"), cluster.workdir / "alice.log")
    try:
        wait_until(lambda: _drift_found(cluster, app_id), timeout=120, every=1)
        wait_until(lambda: worker.metrics().get(_profiled(cluster)) == cluster.events, 60, 0.5)
        assert worker.health() == 200
    finally:
        assert stop(worker) == 0
    return cluster.alert_ids(app_id)


def _profiled(cluster: Cluster) -> str:
    return f'driftwire_events_profiled_total{{topic="{cluster.features}"}}'


def _drift_found(cluster: Cluster, app_id: str) -> bool:
    alerts = read_alerts(cluster.bootstrap, f"{app_id}-alerts", client("admin"))
    return any(a.feature == "x0" and a.kind.value == "data_drift" for a in alerts)


def test_a_worker_with_the_right_credentials_and_acls_works_end_to_end(
    alice_alerts: set[str],
) -> None:
    assert alice_alerts  # the x0 shift was found; every event profiled, health 200


def test_a_worker_logging_in_with_scram_gets_the_same_alerts(
    cluster: Cluster, alice_alerts: set[str]
) -> None:
    app_id = f"dws{uuid.uuid4().hex[:6]}"
    cluster.grant(worker_acls("alice", cluster.features, app_id))
    log = cluster.workdir / "scram.log"
    worker = start_worker(cluster.config(app_id, "alice", mechanism=SCRAM), log)
    try:
        wait_until(lambda: cluster.alert_ids(app_id) >= alice_alerts, timeout=120, every=1)
        assert worker.health() == 200
    finally:
        assert stop(worker) == 0
    assert cluster.alert_ids(app_id) == alice_alerts
    assert PASSWORDS["alice"] not in log.read_text()


@pytest.mark.parametrize("mechanism", ["PLAIN", SCRAM])
def test_wrong_credentials_fail_fast_with_a_clear_message_and_no_secret(
    cluster: Cluster, mechanism: str
) -> None:
    app_id = f"dww{uuid.uuid4().hex[:6]}"
    wrong = "not-Alices-Password-42"
    log = cluster.workdir / f"wrong-{mechanism}.log"
    worker = start_worker(cluster.config(app_id, "alice", wrong, mechanism), log)
    try:
        code = worker.proc.wait(20)  # fail fast: not the 30 s metadata timeout
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        pytest.fail("a worker with wrong credentials was still running after 20 s")
    output = log.read_text()
    assert code != 0
    assert "refused the credentials of user 'alice'" in output
    reason = {"PLAIN": "Invalid username or password", SCRAM: "invalid credentials"}[mechanism]
    assert reason in output
    assert wrong not in output and PASSWORDS["alice"] not in output


def test_without_write_access_to_alerts_the_worker_stops_and_loses_nothing(
    cluster: Cluster, alice_alerts: set[str]
) -> None:
    app_id = f"dwb{uuid.uuid4().hex[:6]}"
    alerts_topic = f"{app_id}-alerts"
    cluster.create(alerts_topic)
    denied = _deny_write("bob", alerts_topic)
    cluster.grant([*worker_acls("bob", cluster.features, app_id), denied])
    log = cluster.workdir / "bob.log"
    worker = start_worker(cluster.config(app_id, "bob"), log)
    try:
        code = worker.proc.wait(120)  # it must stop by itself, loudly
    except subprocess.TimeoutExpired:
        stop(worker)
        pytest.fail("a worker that cannot write its alerts kept running")
    output = log.read_text()
    assert code != 0
    assert f"could not write to {alerts_topic}" in output
    assert "TOPIC_AUTHORIZATION_FAILED" in output
    assert not cluster.alert_ids(app_id)
    # once the operator grants the write, a restart publishes every alert: none was dropped
    cluster.revoke(denied)
    worker = start_worker(cluster.config(app_id, "bob"), cluster.workdir / "bob-2.log")
    try:
        wait_until(lambda: cluster.alert_ids(app_id) >= alice_alerts, timeout=120, every=1)
    finally:
        assert stop(worker) == 0
    assert cluster.alert_ids(app_id) == alice_alerts
