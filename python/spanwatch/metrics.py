"""Prometheus metrics of the service, built on an injected registry so tests
and several services in one process stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]


class Metrics:
    """Every metric the service exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter("spanwatch_events", "Events processed", registry=r)
        self.skipped = Counter(
            "spanwatch_events_skipped",
            "Events already in restored client state (replayed after a restart)",
            registry=r,
        )
        self.alerts = Counter("spanwatch_alerts", "Alerts produced", ["severity"], registry=r)
        self.dead_letters = Counter(
            "spanwatch_dead_letters",
            "Records sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "spanwatch_batch_seconds",
            "Time to process one batch (a poll, in pieces of at most 500 records)",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lag = Gauge(
            "spanwatch_consumer_lag", "Records behind the log end", ["partition"], registry=r
        )
        self.clients = Gauge("spanwatch_clients", "Clients held in memory", registry=r)
        self.partitions = Gauge(
            "spanwatch_assigned_partitions", "Prompt partitions this process holds", registry=r
        )
        self.evictions = Gauge("spanwatch_evictions", "Clients evicted so far", registry=r)
        self.checkpoints = Counter(
            "spanwatch_checkpoints", "State checkpoints written and committed", registry=r
        )
        self.summaries = Counter(
            "spanwatch_summaries", "Client summaries published or read", registry=r
        )
        self.group_alerts = Counter(
            "spanwatch_group_alerts", "Group alerts produced", ["severity"], registry=r
        )
        self.restored = Counter(
            "spanwatch_clients_restored", "Client states restored from the state topic", registry=r
        )
        self.state_refused = Counter(
            "spanwatch_state_records_refused",
            "State records that could not be restored (an older sketch format or damage); "
            "those clients start afresh",
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Starts the /metrics HTTP endpoint in a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)
