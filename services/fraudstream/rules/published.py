"""Rule packs published on a compacted topic, so every scorer runs the same version.

`fraudctl rules publish FILE` validates a pack and writes it to `fraud.rules` under its
pack name (the record key; compaction keeps the latest per name). A scorer with
`FRAUD_RULES_SOURCE=topic` follows that topic in a thread, from its beginning and without
a consumer group, and swaps a newly published pack in between batches, as the file
source does on an edit. A published pack that does not validate is refused and the last
good one stays (`last_error` says why). At start-up the scorer reads the topic to its end
before it scores, so it begins with the pack its peers run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Producer, TopicPartition

from fraudstream import kafka_clients
from fraudstream.contracts import Rejection, RulePackEvent, decode, encode
from fraudstream.contracts.messages import MAX_RULE_PACK_CHARS
from fraudstream.errors import ConfigurationError, FraudStreamError, InfrastructureUnavailable
from fraudstream.rules.engine import RulePack
from fraudstream.settings import CommonSettings

_log = logging.getLogger(__name__)
MAX_EVENT_BYTES = 4 * MAX_RULE_PACK_CHARS + 4096  # JSON escapes; the contract bounds the text
POLL_S = 0.5


def _ignore(_value: str) -> None:
    """Default callback."""


def publish(
    settings: CommonSettings, bootstrap: str, text: str, *, pack: str, actor: str
) -> RulePackEvent:
    """Validate `text` as a rule pack and publish it as `pack`; returns the event written."""
    rules = RulePack.from_yaml(text, f"pack {pack!r}")  # ConfigurationError names the problem
    event = RulePackEvent(pack=pack, version=rules.version, text=text, actor=actor,
                          at=datetime.now(UTC))  # fmt: skip
    producer = kafka_clients.producer(settings, bootstrap)
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _message: object) -> None:
        if err is not None:
            failures.append(err)

    producer.produce(settings.topic_rules, encode(event), key=pack.encode(), on_delivery=delivered)
    if producer.flush(30) or failures:
        raise InfrastructureUnavailable(
            f"rule pack {pack!r} not published to {settings.topic_rules}: "
            f"{failures[0] if failures else 'delivery timed out'}"
        )
    return event


class PublishedRules:
    """The latest valid pack published under one name, followed in a background thread.

    The same interface the scorer uses for the file source (`pack`, `maybe_reload`,
    `last_error`, `on_reload`, `on_reload_error`); callbacks run on the caller of
    `maybe_reload`, between batches.
    """

    def __init__(
        self,
        settings: CommonSettings,
        bootstrap: str,
        pack: str,
        *,
        fallback: RulePack | None = None,
        on_reload: Callable[[str], None] = _ignore,
        on_reload_error: Callable[[str], None] = _ignore,
        producer: Producer | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.name = pack
        self.on_reload = on_reload
        self.on_reload_error = on_reload_error
        self.last_error: str | None = None
        self._fallback = fallback
        self._pack: RulePack | None = None
        self._lock = threading.Lock()
        self._pending: RulePack | None = None
        self._errors: list[str] = []
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rule-watcher", daemon=True)

    @property
    def pack(self) -> RulePack:
        """The pack in use: the latest valid published one, else the fallback."""
        if self._pack is not None:
            return self._pack
        if self._fallback is None:
            raise ConfigurationError(f"no rule pack {self.name!r} published yet")
        return self._fallback

    def start(self, timeout_s: float = 30.0) -> None:
        """Follow the topic; returns once it was read to its end (what was published
        before this instance started), raising if that takes longer than `timeout_s` or
        nothing valid was published and there is no fallback."""
        self._thread.start()
        if not self._caught_up.wait(timeout_s):
            raise InfrastructureUnavailable(
                f"could not read {self.settings.topic_rules} within {timeout_s:.0f} s"
            )
        self.maybe_reload()
        self.pack  # noqa: B018 - raises when there is no pack at all

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def maybe_reload(self) -> bool:
        """Swap in a newly published pack (call between batches); True if one is active."""
        with self._lock:
            pending, self._pending = self._pending, None
            errors, self._errors = self._errors, []
        for message in errors:
            self.last_error = message
            _log.error("keeping rule pack %s: %s", self._version(), message)
            self.on_reload_error(message)
        if pending is None:
            return False
        self._pack = pending
        self.last_error = None
        _log.info("loaded published rule pack %s (%d rules)", pending.version, len(pending))
        self.on_reload(pending.version)
        return True

    def _version(self) -> str:
        try:
            return self.pack.version
        except ConfigurationError:
            return "(none)"

    def _run(self) -> None:
        topic = self.settings.topic_rules
        consumer = kafka_clients.consumer(
            self.settings, self.bootstrap, f"rules-{self.name}-unused",
            {"enable.partition.eof": False},
        )  # fmt: skip
        try:
            partition = TopicPartition(topic, 0, OFFSET_BEGINNING)
            _low, end = consumer.get_watermark_offsets(partition, timeout=10)
            consumer.assign([partition])
            if end <= 0:
                self._caught_up.set()
            while not self._stop.is_set():
                for message in consumer.consume(100, timeout=POLL_S):
                    if message.error() is None:
                        self._read(message.key(), message.value())
                    if (message.offset() or 0) + 1 >= end:
                        self._caught_up.set()
                if not self._caught_up.is_set():
                    position = consumer.position([TopicPartition(topic, 0)])[0].offset
                    if position >= end:
                        self._caught_up.set()
        except Exception as exc:  # the thread must say why it died
            with self._lock:
                self._errors.append(f"rule watcher stopped: {type(exc).__name__}: {exc}")
            _log.exception("rule watcher stopped")
        finally:
            consumer.close()

    def _read(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic: a new pending pack, or an error to report."""
        if key is None or key.decode(errors="replace") != self.name:
            return
        event = decode(RulePackEvent, value, MAX_EVENT_BYTES)
        try:
            if isinstance(event, Rejection):
                raise ConfigurationError(f"record refused: {event.reason.value}: {event.detail}")
            pack = RulePack.from_yaml(event.text, f"published pack {self.name!r}")
        except FraudStreamError as exc:
            with self._lock:
                self._errors.append(str(exc))
            return
        with self._lock:
            self._pending = pack
