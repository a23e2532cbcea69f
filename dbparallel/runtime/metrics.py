"""Exporting the metrics (runtime/metric_specs.py names them): where their values go (Ray's
metrics system, a local run's Prometheus endpoint, memory) and the recorders that turn a
block's step statistics and an assembly's metrics into them.

Recording a number (trainers return stats) is separate from exporting it (this module).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any

from dbparallel.runtime.metric_specs import (
    ASSEMBLY_PREFIX,
    BLOCK_METRICS,
    RAY_PREFIX,
    SPEC,
    MetricSpec,
)
from dbparallel.runtime.metrics_port import PORT_TRIES, ports_in_use


# ---------------------------------------------------------------------------- sinks
class Sink:
    """Where recorded values go: Ray's metrics, a prometheus_client registry, or memory."""

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        raise NotImplementedError

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        raise NotImplementedError

    def drop(self, spec: MetricSpec, tags: dict[str, str]) -> None:
        """Stop exporting the gauge ``spec`` of ``tags`` (nothing where it was never set)."""
        raise NotImplementedError


class MemorySink(Sink):
    """Keeps the last value of every gauge and the sum of every counter (tests, reports)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def _key(self, spec: MetricSpec, tags: dict[str, str]) -> tuple:
        return (spec.name, tuple(sorted(tags.items())))

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.values[self._key(spec, tags)] = value

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        key = self._key(spec, tags)
        self.values[key] = self.values.get(key, 0.0) + value

    def drop(self, spec: MetricSpec, tags: dict[str, str]) -> None:
        self.values.pop(self._key(spec, tags), None)

    def get(self, name: str, **tags: str) -> float | None:
        return self.values.get((name, tuple(sorted(tags.items()))))


class RaySink(Sink):
    """Ray's metrics system: scraped from every node's metrics port with a ``ray_`` prefix.

    Ray 2.60's node agent forgets a gauge's value that its worker has not set again within two
    of the cluster's export intervals (20 s on a default ``ray start``): a value set once (a
    block's sigma range and memory, the driver's stalled flag, an assembly's metrics) would
    vanish from the scrape while its process still runs. So every gauge this sink set is set
    again every ``KEEP_ALIVE_S`` by a daemon thread, until ``close()`` or ``drop()``: it is
    exported for as long as its process lives, and goes with it, as the alerts and dashboard
    read it (deploy/prometheus/alerts.yaml). The thread ends when its process leaves Ray; the
    next ``set()`` in a Ray instance the process joins later starts another, which sets every
    gauge held again there. A child forked from the process holds none of them."""

    KEEP_ALIVE_S = 0.5  # below half the shortest export interval Ray allows (1 s)

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._keeper: threading.Thread | None = None  # None: none runs; set() starts one
        _SINKS.add(self)

    def _metric(self, spec: MetricSpec) -> Any:
        if spec.name not in self._metrics:
            from ray.util import metrics

            cls = metrics.Counter if spec.kind == "counter" else metrics.Gauge
            self._metrics[spec.name] = cls(spec.name, spec.description, spec.tag_keys)
        return self._metrics[spec.name]

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self._metric(spec).set(value, tags)
            if not self._closed.is_set():
                self._gauges[(spec.name, tuple(sorted(tags.items())))] = value
                if self._keeper is None:  # the first gauge, or the first in a new Ray instance
                    self._keeper = threading.Thread(target=self._keep_alive, daemon=True,
                                                    name="dbparallel-gauges")
                    self._keeper.start()

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._metric(spec).inc(value, tags)  # Ray keeps exporting counters on its own

    def drop(self, spec: MetricSpec, tags: dict[str, str]) -> None:
        """No longer set again: Ray stops exporting it within two export intervals."""
        with self._lock:
            self._gauges.pop((spec.name, tuple(sorted(tags.items()))), None)

    def close(self) -> None:
        """Stop setting the gauges again (before leaving Ray): they vanish as ``drop``'s do."""
        self._closed.set()
        with self._lock:
            self._gauges.clear()

    def _keep_alive(self) -> None:
        import ray

        while not self._closed.wait(self.KEEP_ALIVE_S):
            with self._lock:  # set() sees this thread running, or None and starts another
                if not ray.is_initialized():
                    self._keeper = None
                    return
                for (name, tags), value in self._gauges.items():
                    self._metrics[name].set(value, dict(tags))

    def _forked(self) -> None:
        """In a child forked from this process: no keeper thread runs there, and its locks (in
        ``_closed`` too) may have been copied held by it; the gauges are the parent's to keep."""
        closed, self._closed = self._closed.is_set(), threading.Event()
        if closed:
            self._closed.set()
        self._lock = threading.Lock()
        self._keeper = None
        self._gauges.clear()


_SINKS: weakref.WeakSet[RaySink] = weakref.WeakSet()  # this process's, for a forked child


def _after_fork_in_child() -> None:
    for sink in list(_SINKS):
        sink._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class PrometheusSink(Sink):
    """A prometheus_client registry, served over HTTP by a local run (``metrics.port``),
    under the names a Ray run exports (``exported_name``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self._metrics: dict[str, Any] = {}

    def _metric(self, spec: MetricSpec) -> Any:
        if spec.name not in self._metrics:
            import prometheus_client as pc

            cls = pc.Counter if spec.kind == "counter" else pc.Gauge  # a Counter adds _total
            self._metrics[spec.name] = cls(RAY_PREFIX + spec.name, spec.description,
                                           list(spec.tag_keys), registry=self.registry)
        return self._metrics[spec.name]

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._metric(spec).labels(**tags).set(value)

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self._metric(spec).labels(**tags).inc(value)

    def drop(self, spec: MetricSpec, tags: dict[str, str]) -> None:
        with contextlib.suppress(KeyError):  # never set
            self._metric(spec).remove(*(tags[k] for k in spec.tag_keys))

    def serve(self, port: int) -> tuple[Any, int]:
        """Start the HTTP endpoint on ``port``, or on the first free one of the
        ``PORT_TRIES - 1`` after it (another process took it); (the server, whose
        ``shutdown()`` stops it, and its port). UserError naming metrics.port if none is
        free."""
        from prometheus_client import start_http_server

        for candidate in range(port, min(port + PORT_TRIES, 65536)):
            try:
                server, _ = start_http_server(candidate, registry=self.registry)
                return server, candidate
            except OSError:
                continue
        raise ports_in_use(port, min(port + PORT_TRIES, 65536) - 1)


# ---------------------------------------------------------------------------- recorders
class BlockRecorder:
    """Turns one block's step stats into metric values."""

    def __init__(self, run: str, run_id: str, block: int,
                 sigma_range: tuple[float, float] | None, sink: Sink | None = None):
        self.sink = sink or RaySink()
        self.tags = {"run": run, "run_id": run_id, "block": str(block)}
        if sigma_range is not None:
            self.sink.set(SPEC["dbparallel_block_sigma_low"], sigma_range[0], self.tags)
            self.sink.set(SPEC["dbparallel_block_sigma_high"], sigma_range[1], self.tags)
        self._memory_sent = False

    def record(self, stats: Any, trainer: Any) -> None:
        """``stats``: a StepStats; ``trainer``: its BlockTrainer (memory, FLOPs, peak)."""
        s = self.sink
        s.inc(SPEC["dbparallel_block_steps"], 1, self.tags)
        s.set(SPEC["dbparallel_block_step_time_seconds"], stats.step_time_s, self.tags)
        if stats.step_time_s > 0:
            s.set(SPEC["dbparallel_block_samples_per_second"],
                  stats.samples / stats.step_time_s, self.tags)
        if stats.finite:
            s.set(SPEC["dbparallel_block_loss"], stats.loss, self.tags)
        else:
            s.inc(SPEC["dbparallel_block_nonfinite_steps"], 1, self.tags)
        busy = stats.data_wait_s + stats.step_time_s
        if busy > 0:
            s.set(SPEC["dbparallel_block_data_wait_ratio"], stats.data_wait_s / busy, self.tags)
        if trainer.heldout_loss is not None:
            s.set(SPEC["dbparallel_block_heldout_loss"], trainer.heldout_loss, self.tags)
        if not self._memory_sent and trainer.memory is not None:
            s.set(SPEC["dbparallel_block_memory_bytes"], trainer.memory.total, self.tags)
            self._memory_sent = True
        flops = trainer.model_flops_per_step
        if flops and stats.finite and stats.step_time_s > 0:
            s.set(SPEC["dbparallel_block_model_flops_per_step"], flops, self.tags)
            tflops = flops / stats.step_time_s / 1e12
            s.set(SPEC["dbparallel_block_achieved_tflops"], tflops, self.tags)
            if trainer.peak_tflops:
                s.set(SPEC["dbparallel_block_mfu"], tflops / trainer.peak_tflops, self.tags)

    def resumed(self, restarts: int, nonfinite_steps: int) -> None:
        """A new actor process starts its counters at the run's totals so far: the block's
        restarts and the non-finite steps its checkpoint counted as skipped."""
        if restarts:
            self.sink.inc(SPEC["dbparallel_block_restarts"], restarts, self.tags)
        if nonfinite_steps:
            self.sink.inc(SPEC["dbparallel_block_nonfinite_steps"], nonfinite_steps, self.tags)

    def stalled(self, is_stalled: bool) -> None:
        self.sink.set(SPEC["dbparallel_block_stalled"], float(is_stalled), self.tags)

    def finished(self) -> None:
        """No process trains the block any more (a --local run goes on to the next): its
        gauges go, as a Ray worker's go when it ends, and its counters stay, as Ray keeps a
        dead worker's. Kept, a done block's last throughput would be added to the dashboard's
        "all blocks" sums, and its step time would count as "a process trains the block" for
        the alerts (deploy/prometheus/alerts.yaml)."""
        for spec in BLOCK_METRICS:
            if spec.kind == "gauge":
                self.sink.drop(spec, self.tags)


class AssemblyRecorder:
    """Exports the composed network's metrics as ``dbparallel_assembly_<key>``."""

    def __init__(self, run: str, run_id: str, sink: Sink | None = None):
        self.sink = sink or RaySink()
        self.tags = {"run": run, "run_id": run_id}

    def failed(self) -> None:
        """One more assembly during training failed."""
        self.sink.inc(SPEC["dbparallel_assembly_failures"], 1, self.tags)

    def record(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            spec = SPEC.get(ASSEMBLY_PREFIX + key)
            if spec is not None:
                self.sink.set(spec, float(value), self.tags)


def series_line(run: str, run_id: str) -> str:
    """What a run prints of the labels that pick its series out (the dashboard's Run and Run
    ID): ``metrics: this run's series: ray_dbparallel_*{run="tiny",run_id="3f9a1c2b7d4e"}``."""
    import json

    name, id_ = (json.dumps(v, ensure_ascii=False) for v in (run, run_id))  # PromQL's quotes
    return f"metrics: this run's series: {RAY_PREFIX}dbparallel_*{{run={name},run_id={id_}}}"
