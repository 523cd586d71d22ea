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
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from driftwire.streams.broker import DEFAULT_VERSION, BrokerError, LocalBroker, MissingToolError

BROKER_KEY = pytest.StashKey[str]()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class KafkaTally:
    """Counts outcomes of ``@pytest.mark.kafka`` tests, so a run shows they really ran
    against a broker, and fails in CI if any of them was skipped."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "kafka" not in report.keywords:
            return
        if report.skipped or report.failed or report.when == "call":
            # an expected failure ran against the broker: it is not a skip
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            self.outcomes[outcome] += 1

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config) -> None:
        if not self.outcomes:
            return
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))
        where = config.stash.get(BROKER_KEY, "no broker started")
        terminalreporter.write_line(f"kafka integration tests: {counts} (broker: {where})")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if _in_ci() and self.outcomes["skipped"] and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(KafkaTally(), "driftwire-kafka-tally")


@pytest.fixture(scope="session")
def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for the whole test session."""
    external = os.environ.get("DRIFTWIRE_TEST_BOOTSTRAP")
    if external:
        request.config.stash[BROKER_KEY] = f"{external} (DRIFTWIRE_TEST_BOOTSTRAP)"
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
    request.config.stash[BROKER_KEY] = f"Apache Kafka {DEFAULT_VERSION} at {bootstrap}"
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
