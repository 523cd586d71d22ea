"""Shared fixtures: a real Apache Kafka broker for integration tests.

``kafka_bootstrap`` uses ``$DRIFTWIRE_TEST_BOOTSTRAP`` if set, else starts a
:class:`~driftwire.streams.broker.LocalBroker` in a temp dir for the session and
always stops it.  Without Java/Maven, kafka tests are skipped on a laptop but FAIL
when ``CI`` is set: integration tests must never be skipped silently in CI.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from driftwire.streams.broker import BrokerError, LocalBroker, MissingToolError


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for the whole test session."""
    external = os.environ.get("DRIFTWIRE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), detach=False)
    try:
        bootstrap = broker.start(timeout=120)
    except MissingToolError as exc:
        if _in_ci():
            pytest.fail(f"CI=true but the Kafka broker cannot run here: {exc}", pytrace=False)
        pytest.skip(f"no local Kafka broker possible: {exc}")
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def make_topic(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory creating a fresh, uniquely named topic; all are deleted after the test.

    ``make_topic(partitions=3, config={"cleanup.policy": "compact"}) -> "t-<test>-<id>"``
    """
    created: list[str] = []
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]

    def create(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:8]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        kafka_admin.create_topics([topic], operation_timeout=30)[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        # Don't wait: deletion is housekeeping, and names never collide anyway.
        kafka_admin.delete_topics(created, operation_timeout=0)
