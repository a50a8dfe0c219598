"""Prometheus metrics on their own port (``VIDSEEK_METRICS_PORT``; 0, the default, is off).

Served by prometheus-client's HTTP server at ``http://HOST:PORT/metrics``. Every name
starts with ``vidseek_``:

- ``rpc_requests_total{method, code}`` (counter): RPCs answered, by gRPC status code.
- ``rpc_duration_seconds{method}`` (histogram): time to answer an RPC (a stream: until
  it ends).
- ``ingest_windows_total{status}`` (counter): windows committed (``parsed``,
  ``partial``, ``unparsed``) or ``skipped``.
- ``ingest_video_seconds_total`` (counter): seconds of video in the windows committed.
- ``ingest_stage_seconds_total{stage}`` (counter): ingest time by stage: ``decode`` (in
  decoder processes), ``decode_wait`` (a job waiting for its next window's frames),
  ``submit_wait`` (waiting for room in the engine), ``answer_wait`` (waiting for
  answers), ``commit`` (parse, embed, SQL).
- ``engine_windows_total{outcome}`` (counter): windows the captioning engine
  ``completed`` or ``failed`` (refinement included).
- ``engine_windows_in_flight`` (gauge): windows in the captioning engine now.
- ``engine_seconds_total{phase}`` (counter): engine time summed over windows:
  ``preprocess`` (prompt and vision inputs), ``generate``.
- ``engine_tokens_total{kind}`` (counter): ``prompt`` and ``output`` tokens.
- ``ingest_jobs{state}`` (gauge): jobs ``queued`` or ``running`` (the queue depth).
- ``index_events`` (gauge): vectors in the FAISS index.
- ``index_snapshot_age_seconds`` (gauge): since the index snapshot on disk was written
  (absent before the first).
- ``index_change_log_lag`` (gauge): change-log entries in SQL the index has not applied.

Counters and gauges of ingestion and the engine are read from the running services
when the endpoint is scraped, so collecting costs nothing between scrapes; the engine
figures appear once the model has loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vidseek.server.interceptors import Behaviour, rewrap
from vidseek.storage.errors import ConfigError

if TYPE_CHECKING:
    from vidseek.server.jobs import JobRunner
    from vidseek.storage.store import Store

__all__ = ["Metrics", "MetricsInterceptor"]

# Seconds: from a cached search (~1 ms) to a long refinement or a watch stream.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


class _ServiceCollector(Collector):
    """Reads ingestion, engine and index figures from the services at scrape time."""

    def __init__(self, store: Store, jobs: JobRunner) -> None:
        self.store = store
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        counts = self.jobs.timings.counts()
        windows = CounterMetricFamily(
            "vidseek_ingest_windows", "Windows committed or skipped, by status.", labels=["status"]
        )
        for status in ("parsed", "partial", "unparsed", "skipped"):
            windows.add_metric([status], counts.get(f"windows_{status}", 0.0))
        yield windows
        yield CounterMetricFamily(
            "vidseek_ingest_video_seconds",
            "Seconds of video in the windows committed.",
            value=counts.get("video_seconds", 0.0),
        )
        stages = CounterMetricFamily(
            "vidseek_ingest_stage_seconds", "Ingest time by stage.", labels=["stage"]
        )
        for stage, seconds in sorted(self.jobs.timings.snapshot().items()):
            stages.add_metric([stage], seconds)
        yield stages
        decoded = CounterMetricFamily(
            "vidseek_ingest_windows_decoded",
            "Ingestion windows whose decode ended (decoded or failed), by the decoder "
            "backend that decoded them.",
            labels=["backend"],
        )
        decode_seconds = CounterMetricFamily(
            "vidseek_ingest_decode_seconds",
            "Seconds decoding ingestion windows, by decoder backend.",
            labels=["backend"],
        )
        for backend, used in self.jobs.timings.decoders().items():
            decoded.add_metric([backend], used["windows"])
            decode_seconds.add_metric([backend], used["seconds"])
        yield decoded
        yield decode_seconds
        engine = self.jobs.loaded_engine()
        if engine is not None:
            stats = engine.stats.snapshot()
            done = CounterMetricFamily(
                "vidseek_engine_windows", "Windows the engine answered.", labels=["outcome"]
            )
            done.add_metric(["completed"], stats["completed"])
            done.add_metric(["failed"], stats["failed"])
            yield done
            yield GaugeMetricFamily(
                "vidseek_engine_windows_in_flight",
                "Windows in the captioning engine now.",
                value=stats["in_flight"],
            )
            phases = CounterMetricFamily(
                "vidseek_engine_seconds", "Engine time summed over windows.", labels=["phase"]
            )
            phases.add_metric(["preprocess"], stats["preprocess_s"])
            phases.add_metric(["generate"], stats["generate_s"])
            yield phases
            tokens = CounterMetricFamily(
                "vidseek_engine_tokens", "Prompt and output tokens.", labels=["kind"]
            )
            tokens.add_metric(["prompt"], stats["prompt_tokens"])
            tokens.add_metric(["output"], stats["output_tokens"])
            yield tokens
        jobs = GaugeMetricFamily("vidseek_ingest_jobs", "Jobs queued or running.", labels=["state"])
        for state in ("queued", "running"):
            jobs.add_metric([state], self.store.count_jobs([state]))
        yield jobs
        yield GaugeMetricFamily(
            "vidseek_index_events", "Vectors in the FAISS index.", value=self.store.index.ntotal
        )
        path = self.store.index_path
        if path.exists():
            yield GaugeMetricFamily(
                "vidseek_index_snapshot_age_seconds",
                "Seconds since the index snapshot on disk was written.",
                value=max(0.0, time.time() - path.stat().st_mtime),
            )
        yield GaugeMetricFamily(
            "vidseek_index_change_log_lag",
            "Change-log entries in SQL the index has not applied yet.",
            value=self.store.change_log_lag(),
        )


class Metrics:
    """A registry of its own per server (several servers may share a process, as in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc_requests = Counter(
            "vidseek_rpc_requests",
            "RPCs answered, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "vidseek_rpc_duration_seconds",
            "Seconds to answer an RPC (a stream: until it ends).",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._server: Any = None

    def watch(self, store: Store, jobs: JobRunner) -> None:
        """Report the services' figures at every scrape."""
        self.registry.register(_ServiceCollector(store, jobs))

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port (``port`` 0 is not allowed here).

        ConfigError if the address cannot be bound (say, the port is taken).
        """
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        name = method.rsplit("/", 1)[-1]
        self.rpc_requests.labels(name, code).inc()
        self.rpc_seconds.labels(name).observe(seconds)


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    getter = getattr(context, "code", None)  # set by abort() or set_code()
    code = getter() if callable(getter) else None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(code.name)


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every RPC, by its final status code."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        observe = self.metrics.observe

        def answer_once(behaviour: Behaviour) -> Behaviour:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                started, failed = time.perf_counter(), True
                try:
                    answer = behaviour(request, context)
                    failed = False
                    return answer
                finally:
                    observe(method, _code(context, failed), time.perf_counter() - started)

            return call

        def answer_stream(behaviour: Behaviour) -> Behaviour:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started, failed, gone = time.perf_counter(), True, False
                try:
                    yield from behaviour(request, context)
                    failed = False
                except GeneratorExit:  # the client went away before the stream ended
                    gone = True
                    raise
                finally:
                    code = "CANCELLED" if gone else _code(context, failed)
                    observe(method, code, time.perf_counter() - started)

            return call

        return rewrap(handler, answer_once, answer_stream)
