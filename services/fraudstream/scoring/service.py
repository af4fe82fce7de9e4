"""Wiring of the scorer process: settings -> Redis, rules, model, batch scorer, Kafka loop."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry

from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.observability.http import HealthState
from fraudstream.observability.http import serve as serve_http
from fraudstream.observability.process import run_service, stop_on_signals
from fraudstream.registry import Registry
from fraudstream.rules.engine import RulePack, RuleProvider, RuleSource
from fraudstream.rules.lists import RedisLists
from fraudstream.rules.published import PublishedRules
from fraudstream.scoring.core import BatchResult, BatchScorer, InputRecord
from fraudstream.scoring.decide import DecisionPolicy
from fraudstream.scoring.instance import InstanceLease
from fraudstream.scoring.labels import LabelFolder
from fraudstream.scoring.metrics import CircuitState, Dependency, ModelRef, ScorerMetrics
from fraudstream.scoring.model import ServingModel
from fraudstream.scoring.models import ModelSet, ModelWatcher
from fraudstream.scoring.runner import ScorerLoop
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import CircuitBreaker, ScorerState, redis_client
from fraudstream.scoring.sync import Progress

_log = logging.getLogger(__name__)
# A batch allocates tens of thousands of short-lived objects that reference counting frees;
# with CPython's default thresholds (700, 10, 10) the cyclic collector still runs every few
# events and its older generations rescan everything the process loaded. Measured with
# load_tests/bench_batch.py: ~164 -> ~105 µs per event, as fast as with the collector off.
GC_THRESHOLDS = (100_000, 50, 100)
REPLAY_TIMEOUT_MS = 10_000  # catch-up saves of 500 records; far from the hot path


def tune_gc() -> None:
    """Call once startup has loaded models and clients: they move out of the collector's
    view (`gc.freeze`), and collections become rare enough not to tax every batch."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def build(settings: ScorerSettings) -> tuple[ScorerLoop, ModelWatcher]:
    """Everything the loop needs; connections are made lazily by the clients."""
    endpoints = resolve_endpoints(settings)
    client = redis_client(
        endpoints.redis_url, settings.redis_timeout_ms, cluster=settings.redis_cluster
    )
    rules = _rules(settings, endpoints.kafka_bootstrap)
    watcher = ModelWatcher(
        settings, endpoints.kafka_bootstrap, Registry(settings.registry_dir), settings.model_name
    )

    def current_rules() -> RuleProvider:
        rules.maybe_reload()
        return rules

    scorer = BatchScorer(
        rules=lambda: current_rules().pack,
        models=lambda: watcher.current,
        state=ScorerState(
            client, prefix=f"{settings.redis_prefix}:fs", topic=settings.topic_transactions
        ),
        lists=RedisLists(client, prefix=f"{settings.redis_prefix}:list"),
        policy=DecisionPolicy.from_settings(settings),
        max_message_bytes=settings.max_message_bytes,
    )
    loop = ScorerLoop(settings, endpoints.kafka_bootstrap, scorer)
    loop.rule_source = rules
    replay_client = redis_client(endpoints.redis_url, REPLAY_TIMEOUT_MS,
                                 cluster=settings.redis_cluster)  # fmt: skip
    loop.replay_state = ScorerState(
        replay_client, prefix=f"{settings.redis_prefix}:fs", topic=settings.topic_transactions,
        breaker=CircuitBreaker(cooldown_s=5.0),
    )  # fmt: skip
    return loop, watcher


class Observability:
    """Metrics and health fed by the loop's callbacks."""

    def __init__(self, loop: ScorerLoop) -> None:
        self.loop = loop
        self.registry = CollectorRegistry()
        self.metrics = ScorerMetrics(self.registry)
        self.health = HealthState()
        self.health.set_rules_only_allowed(True)
        loop.on_batch = self.on_batch
        loop.on_abort = lambda: self.metrics.count_kafka_transaction("aborted")
        loop.on_progress = self.on_catch_up
        loop.idle = self.on_idle
        state = loop.scorer.state
        if state is not None:
            state.breaker.on_change = lambda s: self.metrics.set_circuit_state(
                Dependency.REDIS, CircuitState(s)
            )
            state.on_error = self.metrics.count_redis_error
        self._replayed: dict[int, int] = {}
        self.watcher: ModelWatcher | None = None

    def watch(self, watcher: ModelWatcher) -> None:
        """Model and rule reloads feed the metrics; the watcher's health feeds readiness."""
        self.watcher = watcher
        watcher.on_swap = self.on_swap
        watcher.on_error = lambda _message: self.metrics.count_model_load_error()
        self.metrics.count_model_load_error(watcher.error_count)  # failures at start-up
        self.on_swap(watcher.current)
        rules = self.loop.rule_source
        if rules is not None:
            self.metrics.set_rule_pack(rules.pack.version)
            rules.on_reload = self.metrics.set_rule_pack
            rules.on_reload_error = lambda _message: self.metrics.count_rule_reload_error()

    def on_swap(self, models: ModelSet) -> None:
        champion = models.champion
        _log.info("serving champion %s, shadow %s, canary %s (share %.2f)",
                  _name(champion), _name(models.shadow), _name(models.canary),
                  models.canary_share)  # fmt: skip
        self.health.set_model_loaded(champion is not None)
        self.metrics.set_model(_ref(champion), _ref(models.shadow), _ref(models.canary))
        self.metrics.set_degraded(Dependency.MODEL, champion is None)

    def on_batch(self, result: BatchResult, records: Sequence[InputRecord]) -> None:
        now = result.committed_at or time.time()
        self.health.mark_progress()  # a commit: progress by definition
        self.metrics.mark_progress(time.time())
        metrics = self.metrics
        metrics.observe_batch(len(records), result.stage_seconds)
        metrics.count_decisions(Counter((v.action.value, v.path.value) for v in result.verdicts))
        for reason, count in Counter(result.dlq_reasons).items():
            metrics.count_dlq(reason, count)
        stamps = np.array([r.timestamp_ms or now * 1000 for r in records], dtype=np.float64)
        metrics.observe_latencies(now - stamps / 1000)
        metrics.set_degraded(Dependency.REDIS, result.degraded or result.lists_unavailable)
        if result.unsaved:
            metrics.count_state_refused(len(result.unsaved))
        if result.shadow:
            champion, shadow = np.array(result.shadow).T
            metrics.observe_shadow_deltas(champion, shadow)
        metrics.count_kafka_transaction("committed")

    def on_catch_up(self, progress: object) -> None:
        """A catch-up replay saved a chunk: count it, and log every 100,000 offsets."""
        if not isinstance(progress, Progress):
            return
        done = progress.at - self._replayed.get(progress.partition, progress.start)
        self._replayed[progress.partition] = progress.at
        self.metrics.count_state_replayed(max(done, 0))
        if progress.at // 100_000 != (progress.at - done) // 100_000 or not progress.remaining:
            elapsed = time.monotonic() - progress.started
            _log.info("partition %d: state rebuilt to offset %d, %d to go (%.0f offsets/s)",
                      progress.partition, progress.at, progress.remaining,
                      (progress.at - progress.start) / max(elapsed, 1e-9))  # fmt: skip

    def on_idle(self) -> None:
        """About once a second: lag and health. Liveness counts a tick as progress only
        when nothing waits (lag 0); with input waiting, only commits count (`on_batch`),
        so a loop that reads and rolls back forever fails its liveness probe."""
        lag = self.loop.lag()
        if lag == 0:
            self.health.mark_progress()
            self.metrics.mark_progress(time.time())
        if self.watcher is not None:
            self.health.set_model_watcher_ok(self.watcher.healthy, self.watcher.last_error or "")
        self.health.set_assigned(len(self.loop.assigned))
        self.metrics.set_consumer_state(lag, len(self.loop.assigned))
        sync = self.loop.sync
        if sync is not None:
            jobs = sync.rebuilding()
            unsynced = len({p for _t, p in self.loop.assigned} - set(sync.synced(
                p for _t, p in self.loop.assigned)))  # fmt: skip
            self.metrics.set_state_sync(sum(j.remaining for j in jobs.values()), unsynced)
            self.health.set_rebuilding(bool(jobs))


def serve(settings: ScorerSettings | None = None) -> None:
    """Run until SIGTERM/SIGINT; the batch in flight is finished first."""
    # Installed before the (slow) model loading, so a stop during startup is clean too.
    stop = stop_on_signals(_log, "finishing the batch in flight")
    settings = settings or ScorerSettings()
    lease = _lease(settings, stop)
    lease.acquire()  # before the producer exists: a second scorer with our id is refused
    loop, watcher = build(settings)
    observed = Observability(loop)
    observed.watch(watcher)
    watcher.start()
    folder = LabelFolder(settings, loop.bootstrap, loop.scorer.state) if loop.scorer.state else None
    if folder is not None:
        folder.start()
    server = serve_http(
        observed.registry, observed.health, host=settings.metrics_host, port=settings.metrics_port
    )
    _log.info("metrics and health on http://%s:%d", server.host, server.port)
    tune_gc()
    try:
        loop.run(stop)
    finally:
        if folder is not None:
            folder.stop()
        watcher.stop()
        if isinstance(loop.rule_source, PublishedRules):
            loop.rule_source.stop()
        server.close()
        lease.release()


def _rules(settings: ScorerSettings, bootstrap: str) -> RuleProvider:
    """The file source, or the published pack read to the topic's end (the file, when it
    exists, stands in until a pack is published)."""
    if settings.rules_source == "file":
        return RuleSource(settings.rules_file)
    path = settings.rules_file
    fallback = RulePack.from_yaml(path.read_text(), str(path)) if path.is_file() else None
    published = PublishedRules(settings, bootstrap, settings.rules_pack, fallback=fallback)
    published.start()
    _log.info("following rule pack %r on %s: version %s", settings.rules_pack,
              settings.topic_rules, published.pack.version)  # fmt: skip
    return published


def _lease(settings: ScorerSettings, stop: threading.Event) -> InstanceLease:
    """The Redis lease on this scorer's transactional.id (its own client: the hot path's
    is too impatient); losing it to another live scorer stops this one."""
    endpoints = resolve_endpoints(settings)
    client = redis_client(endpoints.redis_url, 2000, cluster=settings.redis_cluster)

    def lost(holder: object) -> None:
        _log.error("another scorer holds transactional.id %s (%s): stopping",
                   settings.transactional_id, holder)  # fmt: skip
        stop.set()

    return InstanceLease(client, settings.transactional_id, prefix=settings.redis_prefix,
                         on_lost=lost)  # fmt: skip


def _name(model: ServingModel | None) -> str:
    return model.version if model else "none"


def _ref(model: ServingModel | None) -> ModelRef | None:
    return ModelRef(model.name, model.version) if model else None


def main() -> None:
    """Console script `fraud-scorer`."""
    run_service(serve, _log)


if __name__ == "__main__":
    main()
