"""A real single-node Apache Kafka broker (KRaft) run from the official jars.

No Docker engine exists on the machines this project is developed and tested on,
and no mock stands in for Kafka.  This module fetches ``org.apache.kafka:kafka_2.13``
from Maven Central with Maven, formats KRaft storage and runs ``kafka.Kafka`` as
broker+controller on loopback.  Tests (the ``kafka_bootstrap`` fixture) and the CLI
(``driftwire broker start|stop|status|fetch``) both use :class:`LocalBroker`.

>>> broker = LocalBroker("/tmp/driftwire-broker")   # doctest: +SKIP
>>> with broker as bootstrap:                        # doctest: +SKIP
...     print(bootstrap)                             # e.g. 127.0.0.1:40123
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

DEFAULT_VERSION = "4.4.0"
# Kafka 4.x logs through slf4j 1.7 -> log4j2; it does not ship a binding as a Maven
# dependency, so we add log4j-slf4j-impl (the slf4j 1.x binding) and pin log4j-api/core
# to the same release so the three always match.
LOG4J_VERSION = "2.25.5"
DEFAULT_HEAP = ("256m", "512m")  # (-Xms, -Xmx): a dev broker must not eat a shared box
STATE_FILE = "broker.json"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message says why."""


class MissingToolError(BrokerError):
    """Java or Maven is not installed, so the broker cannot run on this machine."""


def driftwire_home() -> Path:
    """Cache root: ``$DRIFTWIRE_HOME`` or ``~/.cache/driftwire``."""
    return Path(os.environ.get("DRIFTWIRE_HOME") or Path.home() / ".cache" / "driftwire")


def default_state_dir() -> Path:
    return driftwire_home() / "broker"


def find_java() -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java`` if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise MissingToolError(
            "java not found: install a JDK/JRE 17+ (e.g. apt-get install default-jre-headless) "
            "or set JAVA_HOME"
        )
    return java


# ---------------------------------------------------------------------------- jars


def _runtime_pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.kafka", "kafka-server", version),
        ("org.apache.logging.log4j", "log4j-api", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.driftwire</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def _cached_classpath(cp_file: Path) -> str | None:
    if not cp_file.is_file():
        return None
    classpath = cp_file.read_text().strip()
    jars = classpath.split(os.pathsep) if classpath else []
    if jars and all(Path(j).is_file() for j in jars):
        return classpath
    return None  # e.g. ~/.m2 was wiped: resolve again


def ensure_kafka_jars(version: str = DEFAULT_VERSION, home: Path | None = None) -> str:
    """Download the Kafka server jars (once) and return the Java classpath.

    Jars live in Maven's local repository; the pom and the classpath file are
    cached under ``<home>/kafka/<version>/``.  A file lock makes concurrent callers
    (two pytest sessions, a CLI) wait for one download instead of racing.
    """
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):  # it names a directory and goes in a pom
        raise BrokerError(f"Kafka version must look like 4.4.0, got {version!r}")
    cache = (home or driftwire_home()) / "kafka" / version
    cache.mkdir(parents=True, exist_ok=True)
    cp_file = cache / "classpath.txt"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        classpath = _cached_classpath(cp_file)
        if classpath:
            return classpath
        _resolve_with_maven(version, cache, cp_file)
        classpath = _cached_classpath(cp_file)
    if not classpath:
        raise BrokerError(f"maven wrote no usable classpath to {cp_file}")
    return classpath


def _resolve_with_maven(version: str, cache: Path, cp_file: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingToolError(
            "mvn not found: install Apache Maven (e.g. apt-get install maven) to fetch the "
            f"Kafka {version} jars from Maven Central"
        )
    (cache / "pom.xml").write_text(_runtime_pom(version))
    log.info("fetching Apache Kafka %s jars from Maven Central into %s", version, cache)
    tmp_cp = cp_file.with_suffix(".tmp")
    cmd = [mvn, "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={tmp_cp}"]
    proc = subprocess.run(cmd, cwd=cache, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    (cache / "mvn.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not tmp_cp.is_file():
        output = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise BrokerError(
            f"maven could not resolve Kafka {version} (exit {proc.returncode}):\n{output}"
        )
    tmp_cp.replace(cp_file)  # atomic: readers never see a half-written classpath


# ---------------------------------------------------------------------------- config


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, url-safe base64, no padding (as ``Uuid``)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka rejects ids that look like a CLI flag
            return cid


def broker_properties(
    port: int, controller_port: int, data_dir: Path, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``server.properties`` for a single-node broker+controller on loopback."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One node: every internal topic must fit replication factor 1.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Few internal partitions: creating 50 of them on first group join costs seconds.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Auto-creation stays on: on a dev/demo broker a producer, a faust worker and an
        # alert subscriber start in any order, and a consumer of a not-yet-created topic
        # should wait rather than fail.  Tests create their topics explicitly (with the
        # partition count they need) so they never depend on it.
        "auto.create.topics.enable": "true",
        "log.retention.hours": "168",
    }
    props.update(overrides or {})
    return props


def log4j2_properties(log_file: Path) -> str:
    """log4j2 config sending every Kafka logger to one size-capped file."""
    return f"""status = warn
name = driftwire-broker
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def _read_meta_cluster_id(data_dir: Path) -> str | None:
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


# ---------------------------------------------------------------------------- process


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the broker if the process that started it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        # A zombie (exited, not yet reaped) is not a running broker.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_our_broker(pid: int, props_file: Path) -> bool:
    """Guard against pid reuse: the pid must be a kafka.Kafka run on our config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)  # no /proc (not Linux): trust the pid file
    args = [a.decode(errors="replace") for a in cmdline]
    return "kafka.Kafka" in args and str(props_file) in args


def tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"(no {path.name})"
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64_000))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def error_summary(*paths: Path, limit: int = 6) -> str:
    """The last ERROR/FATAL/'Caused by' lines of the logs: why the broker died."""
    wanted = (" ERROR ", " FATAL ", "Caused by:", "Exception in thread", "Error:")
    hits = [
        line.strip()
        for path in paths
        for line in tail(path, 400).splitlines()
        if any(w in line for w in wanted)
    ]
    unique = list(dict.fromkeys(hits))  # a cause is often logged twice
    return "\n  ".join(unique[-limit:])


def probe(
    bootstrap: str, timeout: float = 5.0, client_config: Mapping[str, str] | None = None
) -> bool:
    """True if a broker at ``bootstrap`` answers a metadata request with itself in it.

    ``client_config``: extra librdkafka settings (e.g. SASL credentials for a broker
    whose listener requires them).
    """
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 1.0)):
            pass
    except OSError:
        return False  # cheap check first: no librdkafka connection-refused noise
    admin = AdminClient(
        {
            **(client_config or {}),
            "bootstrap.servers": bootstrap,
            "logger": logging.getLogger("driftwire.librdkafka"),
        }
    )
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # KafkaException on timeout / transport error
        return False


# ---------------------------------------------------------------------------- broker


@dataclass
class BrokerStatus:
    """What ``status()`` found in a state dir."""

    state_dir: str
    running: bool
    answering: bool = False
    pid: int | None = None
    bootstrap: str | None = None
    version: str | None = None
    cluster_id: str | None = None
    log_file: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _State:
    """Persisted in ``<state_dir>/broker.json`` so another process can find the broker."""

    pid: int
    port: int
    controller_port: int
    cluster_id: str
    version: str
    started_at: float = field(default_factory=time.time)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalBroker:
    """A single-node Kafka broker+controller on loopback, state kept in ``state_dir``.

    ``detach=False`` (tests): the broker gets SIGTERM if this Python process dies.
    ``detach=True`` (CLI): the broker runs in its own session and outlives the CLI;
    ``stop()`` from any process with the same ``state_dir`` ends it.
    ``client_config``: librdkafka settings the readiness probe connects with, for a
    listener that ``overrides`` made SASL-only.

    >>> broker = LocalBroker(tmp_dir, port=None)          # doctest: +SKIP
    >>> bootstrap = broker.start(timeout=90)               # doctest: +SKIP
    >>> broker.status().answering                          # doctest: +SKIP
    True
    >>> broker.stop()                                      # doctest: +SKIP
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        version: str = DEFAULT_VERSION,
        heap: tuple[str, str] = DEFAULT_HEAP,
        overrides: Mapping[str, str] | None = None,
        detach: bool = False,
        client_config: Mapping[str, str] | None = None,
        scram_users: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.port = port
        self.version = version
        self.heap = heap
        self.overrides = dict(overrides or {})
        self.detach = detach
        self.client_config = dict(client_config or {})
        # KRaft keeps SCRAM credentials in its metadata log: they go in when storage is
        # formatted (user -> password, SCRAM-SHA-256 and SCRAM-SHA-512 both)
        self.scram_users = dict(scram_users or {})
        self._proc: subprocess.Popen | None = None

    # paths -----------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "server.log"

    @property
    def console_file(self) -> Path:
        """JVM stdout/stderr: errors before log4j starts (bad Java version, OOM)."""
        return self.state_dir / "logs" / "console.log"

    @property
    def props_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def bootstrap(self) -> str | None:
        state = self._read_state()
        return state.bootstrap if state else None

    # public API --------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> str:
        """Start the broker (or reuse the running one) and return its bootstrap address.

        Returns once an AdminClient metadata request answers.  Raises
        :class:`BrokerError` with the tail of the broker log if it does not.
        """
        state = self._running_state()
        if state is not None:
            log.info("broker already running in %s at %s", self.state_dir, state.bootstrap)
            self._wait_ready(state, timeout)
            return state.bootstrap
        classpath = ensure_kafka_jars(self.version)
        java = find_java()
        state = self._prepare(java, classpath)
        self._launch(java, classpath, state)
        self._wait_ready(state, timeout)
        log.info("broker %s up at %s (pid %d)", self.version, state.bootstrap, state.pid)
        return state.bootstrap

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        Returns True if a running broker was stopped, False if none was running.
        """
        state = self._running_state()
        if state is None:
            self._forget()
            return False
        log.info("stopping broker pid %d", state.pid)
        self._signal(state.pid, signal.SIGTERM)
        if not self._wait_exit(state.pid, timeout):
            log.warning("broker pid %d ignored SIGTERM for %.0fs: SIGKILL", state.pid, timeout)
            self._signal(state.pid, signal.SIGKILL)
            self._wait_exit(state.pid, 10.0)
        self._forget()
        return True

    def status(self, probe_timeout: float = 3.0) -> BrokerStatus:
        state = self._running_state()
        if state is None:
            return BrokerStatus(str(self.state_dir), running=False, log_file=str(self.log_file))
        return BrokerStatus(
            state_dir=str(self.state_dir),
            running=True,
            answering=probe(state.bootstrap, probe_timeout, self.client_config),
            pid=state.pid,
            bootstrap=state.bootstrap,
            version=state.version,
            cluster_id=state.cluster_id,
            log_file=str(self.log_file),
        )

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # internals ----------------------------------------------------------------
    def _prepare(self, java: str, classpath: str) -> _State:
        """Pick ports, write configs, format KRaft storage on first start."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        props = broker_properties(port, controller_port, self.data_dir, self.overrides)
        _write_properties(self.props_file, props)
        (self.state_dir / "log4j2.properties").write_text(log4j2_properties(self.log_file))
        cluster_id = _read_meta_cluster_id(self.data_dir)
        if cluster_id is None:  # first start: restarts keep their data and cluster id
            cluster_id = new_cluster_id()
            self._format(java, classpath, cluster_id)
        return _State(0, port, controller_port, cluster_id, self.version)

    def _format(self, java: str, classpath: str, cluster_id: str) -> None:
        cmd = [
            java,
            # A short-lived tool: the C1 compiler alone starts it about twice as fast.
            "-XX:TieredStopAtLevel=1",
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.props_file),
            "--ignore-formatted",
        ]
        for user, password in sorted(self.scram_users.items()):
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                cmd += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BrokerError(
                f"formatting KRaft storage in {self.data_dir} failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )

    def _jvm_opts(self) -> list[str]:
        xms, xmx = self.heap
        return [
            f"-Xms{xms}",
            f"-Xmx{xmx}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
        ]

    def _launch(self, java: str, classpath: str, state: _State) -> None:
        cmd = [java, *self._jvm_opts(), "-cp", classpath, "kafka.Kafka", str(self.props_file)]
        with open(self.console_file, "ab") as console:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=self.detach,
                preexec_fn=None if self.detach else _die_with_parent,
            )
        state.pid = self._proc.pid
        self._write_state(state)

    def _wait_ready(self, state: _State, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(state.pid):
                self._forget()
                raise BrokerError(self._failure("exited during startup"))
            wait = min(5.0, max(0.5, deadline - time.monotonic()))
            if probe(state.bootstrap, wait, self.client_config):
                return
            time.sleep(0.25)
        self.stop(timeout=10)
        raise BrokerError(self._failure(f"did not answer metadata within {timeout:.0f}s"))

    def _failure(self, what: str) -> str:
        return (
            f"Kafka broker in {self.state_dir} {what}.\n"
            f"Errors: {error_summary(self.log_file, self.console_file) or '(none logged)'}\n"
            f"--- {self.console_file} (tail) ---\n{tail(self.console_file, 15)}\n"
            f"--- {self.log_file} (tail) ---\n{tail(self.log_file, 30)}"
        )

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _pid_alive(pid)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _running_state(self) -> _State | None:
        state = self._read_state()
        if state is None or not state.pid:
            return None
        if self._alive(state.pid) and _is_our_broker(state.pid, self.props_file):
            return state
        return None

    def _read_state(self) -> _State | None:
        path = self.state_dir / STATE_FILE
        try:
            return _State(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_state(self, state: _State) -> None:
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(path)

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()


__all__ = [
    "DEFAULT_VERSION",
    "BrokerError",
    "BrokerStatus",
    "LocalBroker",
    "MissingToolError",
    "driftwire_home",
    "ensure_kafka_jars",
    "find_java",
    "free_port",
    "probe",
]
