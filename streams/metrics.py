"""Prometheus metrics and a health endpoint for one worker process.

Each :class:`WorkerMetrics` owns its own ``CollectorRegistry`` (no global state), served
with ``/health`` by :class:`MetricsServer` on a background thread.

>>> m = WorkerMetrics()
>>> m.events_in.labels(topic="features").inc(3)
>>> b'driftwire_events_in_total{topic="features"} 3.0' in m.exposition()
True
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("driftwire_events_in", "Messages consumed", ["topic"], registry=r)
        self.decoded = Counter("driftwire_events_decoded", "Valid events", ["topic"], registry=r)
        self.dead_lettered = Counter(
            "driftwire_events_dead_lettered", "Messages sent to the DLQ", ["reason"], registry=r
        )
        self.late = Counter(
            "driftwire_events_late", "Events after their pane closed", ["topic"], registry=r
        )
        self.profiled = Counter(
            "driftwire_events_profiled", "Events taken into panes", ["topic"], registry=r
        )
        self.windows_closed = Counter(
            "driftwire_windows_closed", "Panes closed by stage 2", ["model"], registry=r
        )
        self.alerts = Counter(
            "driftwire_alerts", "Alerts published", ["model", "kind", "status"], registry=r
        )
        self.consumer_lag = Gauge(
            "driftwire_consumer_lag",
            "Messages behind the log end",
            ["topic", "partition"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "driftwire_batch_seconds",
            "Time to process one consumed batch",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.close_delay = Histogram(
            "driftwire_window_close_delay_seconds",
            "Wall time minus (pane end + lateness) when stage 2 closes a pane: how far behind "
            "event time the worker runs (meaningful when event time is close to wall time)",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self.decode_seconds = Counter(
            "driftwire_decode_seconds", "Time spent decoding input messages", registry=r
        )
        self.broker_up = Gauge(
            "driftwire_broker_up", "1 while the worker's Kafka clients reach a broker", registry=r
        )
        self.kafka_errors = Counter(
            "driftwire_kafka_errors", "librdkafka client errors", ["code"], registry=r
        )
        self.consumer_replaced = Counter(
            "driftwire_consumer_replaced",
            "Consumers replaced after staying out of their group with the broker up",
            registry=r,
        )
        self.reference_changes = Counter(
            "driftwire_reference_changes",
            "New reference profiles scheduled from the references topic",
            ["model"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "driftwire_delivery_failures",
            "Messages the broker did not accept (the worker stops on the first)",
            ["topic", "error"],
            registry=r,
        )
        self.broker_ok = True
        self.broker_up.set(1)
        self.failure: str | None = None  # why the worker is stopping, for /health
        self.last_batch = time.monotonic()
        self.assigned: list[str] = []
        self.running = False

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def health(self, stale_after: float = 60.0) -> tuple[bool, dict]:
        """Healthy while the poll loop turns (within `stale_after` s) with a broker in reach."""
        age = time.monotonic() - self.last_batch
        ok = self.running and age < stale_after and self.broker_ok and not self.failure
        body = {"ok": ok, "loop_age_s": round(age, 3), "assigned": self.assigned}
        return ok, {**body, "broker_up": self.broker_ok, "failure": self.failure}

    def set_broker_up(self, up: bool) -> None:
        self.broker_ok = up
        self.broker_up.set(int(up))


class MetricsServer:
    """`GET /metrics` (Prometheus text) and `GET /health` (JSON; 503 when unhealthy)."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        handler = _handler_for(metrics)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics", *self.httpd.server_address[:2])
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, metrics.exposition())
            elif self.path == "/health":
                ok, body = metrics.health()
                self._reply(200 if ok else 503, "application/json", json.dumps(body).encode())
            else:
                self._reply(404, "text/plain", b"not found")

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep scrapes out of the logs
            pass

    return Handler
