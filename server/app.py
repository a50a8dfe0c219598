"""Application start-up: build the store, services and gRPC server from settings."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.embedder import Embedder, QueryEmbedder, load_embedder
from vidseek.indexer.engine import CaptionEngine
from vidseek.indexer.pipeline import IngestConfig
from vidseek.indexer.planner import PlanConfig
from vidseek.server.interceptors import ErrorAndAuthInterceptor
from vidseek.server.jobs import JobRunner
from vidseek.server.metrics import Metrics, MetricsInterceptor
from vidseek.server.refine import RefineConfig, Refiner
from vidseek.server.search import SearchService
from vidseek.server.search.video_ranker import VideoRanker, default_ranker
from vidseek.server.service import VideoSearchServicer
from vidseek.server.settings import Settings, max_window_video_tokens, refine_warm_up_shape
from vidseek.storage.errors import ConfigError
from vidseek.storage.locks import DirectoryLock
from vidseek.storage.store import Store, rebuild_snapshot
from vidseek.storage.vector_index import AutoParams, HnswParams, IvfParams
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc

__all__ = [
    "App",
    "create_server",
    "embedder_for",
    "job_runner",
    "load_captioner",
    "refine_config",
    "serve",
]

if TYPE_CHECKING:
    from vidseek.server.task_queue import JobQueue

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VideoSearch"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_video_ranker(setting: str) -> VideoRanker | None:
    """The search's video ranker named by the ``video_ranker`` setting."""
    if setting == "off":
        return None
    return default_ranker() if setting == "learned" else VideoRanker.load(setting)


def load_captioner(settings: Settings) -> Captioner | CaptionEngine:
    """The captioning backend the settings select (imported only when selected)."""
    if settings.captioner == "vllm":
        from vidseek.indexer.engine_vllm import AsyncVllmEngine

        return AsyncVllmEngine(
            settings.model,
            max_new_tokens=settings.max_new_tokens,
            constrained_json=settings.constrained_output,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len,
            renderer_workers=settings.vllm_renderer_workers,
            data_parallel_size=settings.vllm_data_parallel_size,
            max_video_tokens=max_window_video_tokens(settings),
            engine_options=settings.vllm_engine_options,
            grounding_warm_up=refine_warm_up_shape(settings),
        )
    if settings.captioner == "openai":
        from vidseek.indexer.captioner_openai import OpenAICaptioner

        return OpenAICaptioner(
            settings.openai_base_url,
            settings.model,
            api_key=settings.openai_api_key,
            max_new_tokens=settings.max_new_tokens,
            constrained_json=settings.constrained_output,
            max_concurrency=settings.openai_max_concurrency,
            send_priority=settings.openai_send_priority,
        )
    from vidseek.indexer.captioner_transformers import TransformersCaptioner

    return TransformersCaptioner(
        settings.model,
        device=_device(settings),
        max_new_tokens=settings.max_new_tokens,
        constrained_json=settings.constrained_output,
    )


def ingest_config(settings: Settings) -> IngestConfig:
    """The pipeline configuration named by the settings."""
    return IngestConfig(
        plan=PlanConfig(
            sample_fps=settings.sample_fps,
            max_frame_pixels=settings.max_frame_pixels,
            window_seconds=settings.window_seconds,
            overlap_seconds=settings.window_overlap_seconds,
            context_tokens=settings.context_tokens,
            max_output_tokens=settings.max_new_tokens,
        ),
        decode_backend=settings.decode_backend,
        decode_timeout=settings.decode_timeout,
        decode_nice=settings.decode_nice,
        decode_threads=settings.decode_threads,
        decode_lookahead=settings.decode_lookahead,
        batch_windows=settings.batch_windows,
        max_in_flight=settings.max_in_flight,
    )


def refine_config(settings: Settings) -> RefineConfig:
    """The search-refinement configuration named by the settings."""
    return RefineConfig(
        fps=settings.refine_fps,
        pad_seconds=settings.refine_pad_seconds,
        max_pixels=settings.refine_max_pixels,
        max_frames=settings.refine_max_frames,
        max_moments=settings.refine_max_moments,
        timeout=settings.refine_timeout,
        decode_backend=settings.decode_backend,
    )


@dataclass
class App:
    """Everything a running server holds."""

    settings: Settings
    store: Store
    embedder: Embedder
    search: SearchService
    jobs: JobRunner
    health: health.HealthServicer
    refiner: Refiner | None = None
    queries: QueryEmbedder | None = None
    lock: DirectoryLock | None = None
    metrics: Metrics | None = None
    metrics_port: int = 0
    """The bound port of the Prometheus endpoint (0: off)."""
    _catching_up: threading.Event | None = None
    _catch_up_thread: threading.Thread | None = None

    def start_catch_up(self, interval: float) -> None:
        """Catch the index up from the SQL change log every ``interval`` s (a replica)."""
        stop = self._catching_up = threading.Event()

        def run() -> None:
            while not stop.wait(interval):
                try:
                    self.store.catch_up()
                except Exception:  # the database may be briefly away; try again next time
                    log.warning("catching the index up failed; retrying", exc_info=True)

        self._catch_up_thread = threading.Thread(target=run, name="index-catch-up", daemon=True)
        self._catch_up_thread.start()

    def shutdown(self, grace: float | None = None) -> None:
        """Stop ingest after its current window, then snapshot and close storage."""
        self.health.enter_graceful_shutdown()
        if self._catching_up is not None and self._catch_up_thread is not None:
            self._catching_up.set()
            self._catch_up_thread.join(timeout=30)
        if self.refiner is not None:
            self.refiner.close()
        self.jobs.stop(timeout=grace)
        if self.metrics is not None:
            self.metrics.close()
        if self.queries is not None:
            self.queries.close()
        try:
            self.store.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def build_app(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    captioner_factory: Callable[[], Captioner | CaptionEngine] | None = None,
) -> App:
    """Open storage and build the services (the captioner loads on the first job).

    Holds the data directory's lock until :meth:`App.shutdown`, so an offline
    ``vidseek index rebuild`` cannot write the snapshot under a running server.
    """
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(Path(settings.data_dir), "server")
    lock.acquire()
    try:
        return _build_app(settings, lock, embedder, captioner_factory)
    except BaseException:
        lock.release()
        raise


def embedder_for(settings: Settings) -> Embedder:
    """The text embedder the settings name."""
    return load_embedder(
        settings.embedder,
        device=_device(settings),
        threads=settings.embedder_threads,
        backend=settings.embedder_backend,
    )


def job_runner(
    settings: Settings,
    store: Store,
    embedder: Embedder,
    captioner_factory: Callable[[], Captioner | CaptionEngine] | None = None,
    *,
    queue: JobQueue | None = None,
) -> JobRunner:
    """The ingest job runner the settings describe (a server's, or a worker's)."""
    roots = [Path(r.strip()) for r in settings.allowed_roots.split(",") if r.strip()]
    return JobRunner(
        store,
        embedder,
        captioner_factory or (lambda: load_captioner(settings)),
        ingest_config(settings),
        roots,
        workers=settings.ingest_workers,
        model=settings.model,
        max_in_flight=settings.max_in_flight,
        refine_hold=settings.refine_hold_seconds,
        decode_processes=settings.decode_processes,
        max_queued_jobs=settings.max_queued_jobs,
        accept_jobs=settings.role == "all",
        task_queue=queue,
    )


def _build_app(
    settings: Settings,
    lock: DirectoryLock,
    embedder: Embedder | None,
    captioner_factory: Callable[[], Captioner | CaptionEngine] | None,
) -> App:
    emb = embedder or embedder_for(settings)
    store = Store(
        settings.resolved_database_url,
        settings.index_path,
        emb.dim,
        index_kind=settings.index_kind,
        hnsw=hnsw_params(settings),
        ivf=ivf_params(settings),
        auto=auto_params(settings),
    )
    queue = None
    if settings.job_queue == "procrastinate" and settings.role == "all":
        from vidseek.server.task_queue import JobQueue

        try:
            queue = JobQueue(settings.resolved_database_url)
        except BaseException:
            store.close()
            raise
    jobs = job_runner(settings, store, emb, captioner_factory, queue=queue)
    # Refinement shares the ingest jobs' engine (ahead of them) but decodes in a
    # decoder process of its own.
    refiner = Refiner(store, jobs.captioner, refine_config(settings))
    queries = QueryEmbedder(emb, settings.query_cache_size)
    search = SearchService(
        store,
        queries,
        default_top_k=settings.default_top_k,
        max_top_k=settings.max_top_k,
        max_query_chars=settings.max_query_chars,
        # Search-side hook (SearchService's refiner / max_refine / refine_budget_s):
        # refine=true requests go to the refiner, bounded by the refine_* settings.
        refiner=refiner,
        max_refine=settings.refine_max_moments,
        refine_budget_s=settings.refine_timeout,
        video_ranker=load_video_ranker(settings.video_ranker),
    )
    return App(
        settings=settings,
        store=store,
        embedder=emb,
        search=search,
        jobs=jobs,
        health=health.HealthServicer(),
        refiner=refiner,
        queries=queries,
        lock=lock,
    )


def rebuild_index(settings: Settings) -> int:
    """Rebuild the FAISS index snapshot from SQL; returns the number of vectors.

    Needs no embedder: the dimension comes from the stored embeddings. Refuses
    (ConfigError) while a server holds the data directory.
    """
    with DirectoryLock(Path(settings.data_dir), "index rebuild"):
        return rebuild_snapshot(
            settings.resolved_database_url,
            settings.index_path,
            index_kind=settings.index_kind,
            hnsw=hnsw_params(settings),
            ivf=ivf_params(settings),
            auto=auto_params(settings),
        )


def auto_params(settings: Settings) -> AutoParams:
    """The ``auto`` index parameters named by the settings (the rest at their defaults)."""
    return AutoParams(threshold=settings.auto_index_threshold)


def hnsw_params(settings: Settings) -> HnswParams:
    """The HNSW parameters named by the settings (the rest at their defaults)."""
    return HnswParams(ef_search=settings.hnsw_ef_search)


def ivf_params(settings: Settings) -> IvfParams:
    """The IVF parameters named by the settings (the rest at their defaults)."""
    return IvfParams(nlist=settings.ivf_nlist, nprobe=settings.ivf_nprobe)


def _loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_server(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    captioner_factory: Callable[[], Captioner | CaptionEngine] | None = None,
) -> tuple[grpc.Server, int, App]:
    """Build and start a server; returns (server, bound port, app). Port 0 picks a free one."""
    tokens = settings.auth_tokens()
    if not tokens and not settings.allow_unauthenticated and not _loopback(settings.host):
        raise ConfigError(
            f"refusing to serve {settings.host} without a token: anyone who can reach it could "
            "ingest and delete. Set VIDSEEK_AUTH_TOKEN or VIDSEEK_AUTH_TOKENS_FILE, or "
            "VIDSEEK_ALLOW_UNAUTHENTICATED=true behind a proxy that authenticates."
        )
    app = build_app(settings, embedder=embedder, captioner_factory=captioner_factory)
    metrics = None
    if settings.metrics_port:
        metrics = Metrics()
        metrics.watch(app.store, app.jobs)
        try:
            app.metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        except ConfigError:
            app.shutdown()
            raise
        app.metrics = metrics
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_workers),
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        interceptors=[
            *([MetricsInterceptor(metrics)] if metrics is not None else []),
            ErrorAndAuthInterceptor(tokens),
        ],
    )
    pb_grpc.add_VideoSearchServicer_to_server(
        VideoSearchServicer(
            app.store,
            app.search,
            app.jobs,
            max_watchers=max(1, settings.grpc_workers // 2),
        ),
        server,
    )
    health_pb2_grpc.add_HealthServicer_to_server(app.health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert_file:
        creds = grpc.ssl_server_credentials(
            [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())]
        )
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    app.jobs.start()
    if settings.role == "search" or settings.job_queue == "procrastinate":
        # Others write the index's events: replicas' writers, or queue workers.
        app.start_catch_up(settings.catch_up_seconds)
    server.start()
    for name in ("", SERVICE_NAME):
        app.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, app


def serve(settings: Settings, *, ready: Callable[[int], None] | None = None) -> None:
    """Run the server until SIGTERM/SIGINT, then shut down gracefully."""
    server, port, app = create_server(settings)
    log.info("vidseek serving on %s:%d (data in %s)", settings.host, port, settings.data_dir)
    if ready:
        ready(port)
    done = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down (grace %.0f s)", signum, settings.grace_seconds)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    last_snapshot = time.monotonic()
    while not done.wait(1.0):
        if time.monotonic() - last_snapshot > settings.snapshot_interval_seconds:
            app.store.snapshot()
            last_snapshot = time.monotonic()
    app.health.enter_graceful_shutdown()
    stopped = server.stop(settings.grace_seconds)
    app.shutdown(settings.grace_seconds)
    stopped.wait()
