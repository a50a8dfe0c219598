"""Background ingest jobs: a queue persisted in SQL, run by ``workers`` threads.

Jobs survive restarts: on start, jobs left ``queued`` or ``running`` are queued
again, and their videos resume at the first uncommitted window.

All workers share one captioning engine (:mod:`vidseek.indexer.engine`), with at
most ``max_in_flight`` ingestion windows in it at once, and one pool of decoder
processes. Each job sends its windows to the engine as soon as they are decoded
and commits each when its answer arrives, so the engine sees the windows of every
running job together; search refinement uses the same engine, ahead of them.

Cancelling a job stops it after the windows in flight are committed; what was
committed stays indexed, and the job ends ``cancelled``.

With a :class:`~vidseek.server.task_queue.JobQueue` (``VIDSEEK_JOB_QUEUE=procrastinate``)
the runner only records and queues jobs: ``vidseek worker`` processes run them
through :meth:`JobRunner.run`, and cancelling goes through the queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.decode_pool import DecodePool
from vidseek.indexer.embedder import Embedder
from vidseek.indexer.engine import BoundedEngine, CaptionEngine, as_engine
from vidseek.indexer.pipeline import (
    IngestConfig,
    Ingestor,
    IngestProgress,
    StageTimes,
    content_hash,
    register_video,
    window_ids,
)
from vidseek.indexer.planner import plan_windows
from vidseek.indexer.types import VideoInfo
from vidseek.indexer.video import DecodeWorker, probe, side_backend
from vidseek.storage.errors import (
    CaptionerUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    VidseekError,
)
from vidseek.storage.models import IngestJobRow
from vidseek.storage.store import Store, collection_name

if TYPE_CHECKING:
    from vidseek.server.task_queue import JobQueue

__all__ = ["JobRunner", "check_ingest_path"]

log = logging.getLogger(__name__)


def check_ingest_path(uri: str, allowed_roots: list[Path]) -> Path:
    """The resolved path of ``uri``; PermissionDenied if outside the roots, else NotFound if
    absent.

    Symlinks and ``..`` are resolved before the check, so neither leads out of a root.
    The roots are checked first: every path outside them gets the same answer,
    whether or not it exists, so the error does not tell what exists there.
    """
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise InvalidArgument(f"{uri}: {scheme} URLs are not supported; give a file path")
    path = Path(uri).expanduser()
    resolved = path.resolve()
    if allowed_roots and not any(resolved.is_relative_to(r.resolve()) for r in allowed_roots):
        raise PermissionDenied(f"{uri} is outside the allowed roots")
    if not path.exists():
        raise NotFound(f"video file not found: {uri}")
    return resolved


# After the captioning model fails to load, jobs fail at once with that error for
# this long rather than each trying again (a missing hub model costs minutes a try).
CAPTIONER_RETRY_S = 300.0


class JobRunner:
    """Runs queued ingest jobs on ``workers`` background threads.

    ``max_in_flight`` caps the ingestion windows in the shared engine; ``refine_hold``
    holds new ones back while a refinement is in it, for at most that many seconds
    (:class:`~vidseek.indexer.engine.BoundedEngine`);
    ``decode_processes`` sizes the shared decode pool (0: three quarters of the cores,
    one left at least).
    ``max_queued_jobs`` (0: no cap) bounds the jobs queued or running: a submission
    past it is refused with ResourceExhausted. ``accept_jobs=False`` (a search
    replica) runs no jobs, neither new nor left unfinished in the shared database,
    and refuses submissions and cancellations with FailedPrecondition. With a
    ``task_queue`` it runs no jobs either: it defers each to the task queue, whose
    workers call :meth:`run`.
    ``model`` names the captioning model in errors. If the model cannot load,
    every job fails at once with that one error for ``CAPTIONER_RETRY_S``
    seconds instead of loading it again per job.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        captioner_factory: Callable[[], Captioner | CaptionEngine],
        config: IngestConfig,
        allowed_roots: list[Path],
        workers: int = 1,
        model: str = "",
        *,
        max_in_flight: int = 64,
        refine_hold: float = 0.0,
        decode_processes: int = 0,
        max_queued_jobs: int = 0,
        accept_jobs: bool = True,
        task_queue: JobQueue | None = None,
    ) -> None:
        if workers < 1:
            raise InvalidArgument(f"workers must be >= 1, got {workers}")
        self.store = store
        self.embedder = embedder
        self._captioner_factory = captioner_factory
        self._captioner: BoundedEngine | None = None
        self._max_in_flight = max_in_flight
        self._refine_hold = refine_hold
        self._decode_processes = decode_processes
        self._max_queued_jobs = max_queued_jobs
        self.accept_jobs = accept_jobs
        self.task_queue = task_queue
        self._submit_lock = threading.Lock()
        self._decode_pool: DecodePool | None = None
        self.timings = StageTimes()
        self._captioner_lock = threading.Lock()
        self._model = model
        self._load_failure: tuple[str, float] | None = None  # message, retry after
        self._ingestors: list[Ingestor] = []
        self._local = threading.local()
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        # Probing at submit time runs in its own decoder process, so RPCs never
        # wait behind the ingest job's decoding.
        self._probe_worker = DecodeWorker(side_backend(config.decode_backend))
        self.config = config
        self.allowed_roots = allowed_roots
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"ingest-jobs-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        """Re-queue unfinished jobs and start the worker threads (none on a replica, none
        with a task queue: its workers run the jobs)."""
        if not self.accept_jobs:
            return
        if self.task_queue is not None:
            # Unfinished jobs without a task in the queue (left by the embedded mode, or
            # by a crash between recording a job and queueing it) are queued.
            for state in ("queued", "running"):
                for job in reversed(self.store.list_jobs(0, 1_000_000, states=[state])):
                    self.task_queue.ensure_queued(job.id)
            return
        for state in ("running", "queued"):
            for job in reversed(self.store.list_jobs(0, 1_000_000, states=[state])):
                self._queue.put(job.id)
        for t in self._threads:
            t.start()

    def submit(self, uri: str, collection: str = "") -> str:
        """Validate ``uri`` (exists, allowed, probes as a video) and queue a job for it.

        The video goes into ``collection`` (a name of at most 200 characters;
        empty for none).
        """
        self._check_accepts("ingest")
        collection = collection_name(collection)
        path = check_ingest_path(uri, self.allowed_roots)
        if not path.is_file():
            raise NotFound(f"not a file: {uri}")
        info = probe(str(path), timeout=self.config.decode_timeout, worker=self._probe_worker)
        job_id = uuid.uuid4().hex
        if self._finish_if_indexed(job_id, path, info, collection):
            return job_id
        with self._submit_lock:  # the count and the insert together
            if self._max_queued_jobs:
                waiting = self.store.count_jobs(["queued", "running"])
                if waiting >= self._max_queued_jobs:
                    raise ResourceExhausted(
                        f"{waiting} ingest jobs are queued or running, the most this server "
                        f"takes (VIDSEEK_MAX_QUEUED_JOBS={self._max_queued_jobs}); "
                        "retry once some have finished",
                        retry_after=30.0,
                    )
            self.store.create_job(job_id, str(path), collection)
        if self.task_queue is None:
            self._queue.put(job_id)
            return job_id
        try:
            self.task_queue.defer(job_id)
        except Exception as exc:
            self.store.update_job(job_id, state="failed", error=f"could not queue the job: {exc}")
            raise
        return job_id

    def _check_accepts(self, what: str) -> None:
        if not self.accept_jobs:
            raise FailedPrecondition(
                f"this server is a search replica (VIDSEEK_ROLE=search) and does not {what}; "
                "send it to a server with VIDSEEK_ROLE=all"
            )

    def _finish_if_indexed(self, job_id: str, path: Path, info: VideoInfo, collection: str) -> bool:
        """Record a job that is already done if every window of the file is committed.

        Known at submission, without waiting behind running jobs: the same content
        (hash), planned as now, captioned by the current model with the current
        prompt. The model is the loaded engine's (else the configured name). Only a
        path already registered is hashed here, so a new file costs the RPC no hashing.
        """
        if not self.store.has_video_at(str(path)):
            return False
        chash = content_hash(path)
        try:
            video = self.store.get_video(chash[:16])
        except NotFound:
            return False
        engine = self._captioner
        model = engine.model_id if engine is not None else self._model
        plan = plan_windows(info, self.config.plan)
        wanted = set(window_ids(chash, plan, model).values())
        if not model or not wanted <= self.store.committed_window_ids(video.id):
            return False
        register_video(self.store, path, chash, info, collection)
        self.store.create_job(job_id, str(path), collection)
        n = len(plan.windows)
        self.store.update_job(
            job_id,
            state="succeeded",
            video_id=video.id,
            plan=plan.summary(),
            windows_total=n,
            windows_done=n,
            windows_reused=n,
            events_indexed=video.event_count,
        )
        log.info("ingest job %s (%s): already indexed (same content)", job_id, path)
        return True

    def cancel(self, job_id: str) -> IngestJobRow:
        """Cancel a queued or running job; a running one stops after its current window.

        Returns the job as it is now (a running job is still ``running`` until its
        worker notices). Cancelling a finished job is an error naming its state.
        """
        self._check_accepts("cancel jobs")
        job = self.store.get_job(job_id)
        if job.state not in ("queued", "running"):
            raise FailedPrecondition(f"ingest job {job_id} is already {job.state}")
        if self.task_queue is not None:
            # Deleted from the queue if no worker has it (or no live task is left for
            # it); else its worker is asked to stop and records ``cancelled`` itself.
            if self.task_queue.cancel(job_id) != "aborting":
                self.store.update_job(job_id, state="cancelled")
            return self.store.get_job(job_id)
        with self._cancel_lock:
            self._cancelled.add(job_id)
        if job.state == "queued":
            self.store.update_job(job_id, state="cancelled")
        return self.store.get_job(job_id)

    def _is_cancelled(self, job_id: str) -> bool:
        with self._cancel_lock:
            return job_id in self._cancelled

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current windows commit; unfinished jobs resume on next start."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        self._probe_worker.close()
        for ingestor in self._ingestors:
            ingestor.close()
        if self._decode_pool is not None:
            self._decode_pool.close()
        if self._captioner is not None:
            self._captioner.close()
        if self.task_queue is not None:
            self.task_queue.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            self.run(
                job_id, partial(self._should_stop, job_id), partial(self._is_cancelled, job_id)
            )

    def _should_stop(self, job_id: str) -> bool:
        return self._stop.is_set() or self._is_cancelled(job_id)

    def run(
        self, job_id: str, should_stop: Callable[[], bool], is_cancelled: Callable[[], bool]
    ) -> str:
        """Run one job to its end; returns how it ended.

        ``should_stop`` is checked between windows; when it turns true, the windows in
        flight commit and the job ends ``cancelled`` if ``is_cancelled()``, else it is
        ``queued`` again and the outcome is ``"interrupted"`` (run it again later: it
        resumes). Other outcomes: ``"succeeded"``, ``"failed"`` (recorded on the job,
        whatever the job raised), ``"cancelled"``.
        """
        try:
            return self._run_job(job_id, should_stop, is_cancelled)
        except Exception:  # the runner must survive anything one job does
            log.exception("ingest job %s crashed", job_id)
            self._safe_update(job_id, state="failed", error="internal error (see server log)")
            return "failed"

    def _ingestor(self) -> Ingestor:
        """This worker thread's ingestor (the shared engine and decode pool)."""
        ingestor: Ingestor | None = getattr(self._local, "ingestor", None)
        if ingestor is None:
            engine = self.captioner()
            with self._captioner_lock:
                if self._decode_pool is None:
                    self._decode_pool = DecodePool(
                        self.config.decode_backend,
                        self._decode_processes,
                        nice=self.config.decode_nice,
                        codec_threads=self.config.decode_threads,
                        lookahead=self.config.decode_lookahead,
                    )
                ingestor = Ingestor(
                    self.store,
                    engine,
                    self.embedder,
                    self.config,
                    decode_pool=self._decode_pool,
                    timings=self.timings,
                )
                self._ingestors.append(ingestor)
            self._local.ingestor = ingestor
        return ingestor

    def _run_job(
        self, job_id: str, should_stop: Callable[[], bool], is_cancelled: Callable[[], bool]
    ) -> str:
        job = self.store.get_job(job_id)
        if job.state in ("cancelled", "succeeded", "failed"):  # e.g. a retried queue task
            return job.state
        if is_cancelled():
            return "cancelled"
        self.store.update_job(job_id, state="running")

        def report(p: IngestProgress) -> None:
            self.store.update_job(
                job_id,
                video_id=p.video_id,
                plan=p.plan,
                windows_total=p.windows_total,
                windows_done=p.windows_done,
                windows_unparsed=p.windows_unparsed,
                windows_skipped=p.windows_skipped,
                windows_reused=p.windows_reused,
                events_indexed=p.events_indexed,
            )

        try:
            check_ingest_path(job.uri, self.allowed_roots)
            result = self._ingestor().ingest(
                job.uri,
                on_progress=report,
                should_stop=should_stop,
                collection=job.collection,
            )
        except VidseekError as exc:
            log.warning("ingest job %s (%s) failed: %s", job_id, job.uri, exc)
            self.store.update_job(job_id, state="failed", error=str(exc))
            return "failed"
        if result.interrupted and is_cancelled():
            self.store.update_job(job_id, state="cancelled")
            return "cancelled"
        if result.interrupted:
            self.store.update_job(job_id, state="queued")  # resumes on next start
            return "interrupted"
        self.store.snapshot()
        p = result.progress
        # A job with damaged stretches still succeeds; ``error`` says what was left out.
        note = (
            f"{p.windows_skipped} window(s) skipped; first gap: {p.gap}"
            if p.windows_skipped
            else ""
        )
        # The video's events, not only this run's: a resumed job reuses committed windows.
        events = self.store.get_video(p.video_id).event_count if p.video_id else 0
        self.store.update_job(job_id, state="succeeded", error=note or p.gap, events_indexed=events)
        log.info(
            "ingest job %s (%s) succeeded: %d events in %d windows (%d reused, %d skipped)",
            job_id,
            job.uri,
            events,
            p.windows_done,
            p.windows_reused,
            p.windows_skipped,
        )
        return "succeeded"

    def loaded_engine(self) -> BoundedEngine | None:
        """The shared engine if it has loaded, without loading it."""
        return self._captioner

    def captioner(self) -> BoundedEngine:
        """The shared engine, loaded on first use; CaptionerUnavailable if it cannot load."""
        with self._captioner_lock:
            if self._captioner is None:
                failed = self._load_failure
                if failed is not None and time.monotonic() < failed[1]:
                    raise CaptionerUnavailable(failed[0])
                try:
                    engine = as_engine(
                        self._captioner_factory(), max_batch=self.config.batch_windows
                    )
                except Exception as exc:  # model files missing, out of memory, bad weights...
                    if self._stop.is_set():  # e.g. SIGTERM while a refinement loads it
                        log.info("captioning model load abandoned, the server is stopping: %s", exc)
                        raise CaptionerUnavailable("the server is stopping") from exc
                    name = f" {self._model!r}" if self._model else ""
                    message = (
                        f"could not load the captioning model{name}: {exc}. Give a local model "
                        "directory (--model DIR), or put the model in the Hugging Face cache and "
                        "set HF_HUB_OFFLINE=1, or use a served model (--captioner openai or "
                        f"vllm). Jobs fail at once for {CAPTIONER_RETRY_S:.0f} s, then the "
                        "next job tries to load it again."
                    )
                    log.error("%s", message, exc_info=exc)
                    self._load_failure = (message, time.monotonic() + CAPTIONER_RETRY_S)
                    raise CaptionerUnavailable(message) from exc
                if self._stop.is_set():  # loaded after stop(): nobody else will close it
                    engine.close()
                    raise CaptionerUnavailable("the server is stopping")
                self._captioner = BoundedEngine(
                    engine, self._max_in_flight, refine_hold=self._refine_hold
                )
                self._load_failure = None
            return self._captioner

    def _safe_update(self, job_id: str, **fields: object) -> None:
        try:
            self.store.update_job(job_id, **fields)
        except Exception:
            log.exception("could not update job %s", job_id)
