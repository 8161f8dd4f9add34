"""The operator's Prometheus metrics, in a registry of its own (made at start-up, not import).

* ``fx_executions_total{phase}``: Executions that reached a phase;
* ``fx_delivery_seconds``: from admission to the run pod's secrets delivered;
* ``fx_admission_seconds``: from an Execution seen to its Job created;
* ``fx_store_seconds{operation}``: store calls (resolve, apply, claim);
* ``fx_errors_total{reason}``: refusals and failures by condition reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.executions = Counter("fx_executions", "Executions that reached a phase",
                                  ["phase"], registry=self.registry)
        self.delivery = Histogram("fx_delivery_seconds", "Admission to secrets delivered",
                                  buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.admission = Histogram("fx_admission_seconds", "Execution seen to Job created",
                                   buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.store = Histogram("fx_store_seconds", "Store calls", ["operation"],
                               buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("fx_errors", "Refusals and failures by reason", ["reason"],
                              registry=self.registry)

    @contextmanager
    def timing_store(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.store.labels(operation).observe(time.perf_counter() - started)
