"""A real single-node Apache Kafka broker (KRaft combined mode) run with the local Java.

The jars come from Maven Central once, via Maven, into a git-ignored cache; the broker's
storage is formatted on first start; its settings make transactions work on one node.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from fraudstream.errors import LocalStackError
from fraudstream.localstack import processes

MAIN_CLASS = "kafka.Kafka"
LOG4J_VERSION = "2.24.3"  # Kafka 4.x logs through slf4j 1.7: the binding is log4j-slf4j-impl.

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fraudstream</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


@dataclass(frozen=True)
class KafkaLayout:
    """Where one broker's jars, config, data and log live."""

    lib_dir: Path
    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"


def ensure_jars(cache_dir: Path, version: str) -> Path:
    """Fetch Kafka and its logging backend from Maven Central once; returns the lib dir."""
    lib_dir = (cache_dir / f"kafka-{version}" / "lib").resolve()
    marker = lib_dir / ".complete"
    if marker.exists():
        return lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalStackError(
            "Maven (mvn) is needed once to fetch the Kafka jars from Maven Central: "
            "install it (Debian: apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS"
        )
    if lib_dir.exists():
        shutil.rmtree(lib_dir)  # a previous fetch was interrupted
    lib_dir.mkdir(parents=True)
    pom = lib_dir.parent / "pom.xml"
    pom.write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={lib_dir}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not any(lib_dir.glob(f"kafka_2.13-{version}.jar")):
        raise LocalStackError(
            f"fetching Kafka {version} with Maven failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    marker.write_text(version)
    return lib_dir


def require_java() -> str:
    """Path of the java binary, or a clear error."""
    java = shutil.which("java")
    if java is None:
        raise LocalStackError(
            "Java >= 17 is needed to run the embedded Kafka broker: install it "
            "(Debian: apt-get install openjdk-17-jre-headless) or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return java


def server_properties(layout: KafkaLayout, broker_port: int, controller_port: int) -> str:
    """Broker settings for one node that serves transactions and consumer groups."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(layout.data_dir.resolve()),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # One node: internal topics must not ask for more replicas than exist, or
        # init_transactions() and group joins time out.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A frozen producer's open transaction is aborted within a second of its timeout
        # instead of up to 10 s later (the default check interval).
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "message.max.bytes": str(8 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def cluster_id() -> str:
    """A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.

    (Kafka's own generator rejects a leading '-', which command-line parsers take for a flag.)
    """
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def prepare(layout: KafkaLayout, broker_port: int, controller_port: int) -> None:
    """Write the config and, on first use, format the broker's storage."""
    layout.home.mkdir(parents=True, exist_ok=True)
    layout.config_file.write_text(server_properties(layout, broker_port, controller_port))
    layout.log4j_file.write_text(_LOG4J2)
    if (layout.data_dir / "meta.properties").exists():
        return
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [require_java(), "-cp", f"{layout.lib_dir}/*",
         f"-Dlog4j2.configurationFile={layout.log4j_file}", "kafka.tools.StorageTool",
         "format", "--standalone", f"--cluster-id={cluster_id()}",
         "--config", str(layout.config_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise LocalStackError(f"formatting Kafka storage failed:\n{result.stderr[-2000:]}")


def start(layout: KafkaLayout, heap: str) -> int:
    """Launch the broker in the background; returns its pid (readiness is awaited elsewhere)."""
    argv = [
        require_java(),
        "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={layout.log4j_file}",
        "-cp",
        f"{layout.lib_dir}/*",
        MAIN_CLASS,
        str(layout.config_file),
    ]
    return processes.start_daemon(argv, layout.log_file)
