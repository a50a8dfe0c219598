"""Background ingest jobs: a queue persisted in SQL, run one video at a time.

Jobs survive restarts: on start, jobs left ``queued`` or ``running`` are queued
again, and their videos resume at the first uncommitted window.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from vidseek.indexer.captioner import Captioner
from vidseek.indexer.embedder import Embedder
from vidseek.indexer.pipeline import IngestConfig, Ingestor, IngestProgress
from vidseek.indexer.types import CaptionOutput, WindowClip
from vidseek.indexer.video import DecodeWorker, probe
from vidseek.storage.errors import (
    CaptionerUnavailable,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    VidseekError,
)
from vidseek.storage.store import Store

__all__ = ["JobRunner", "SerialCaptioner", "check_ingest_path"]

log = logging.getLogger(__name__)


def check_ingest_path(uri: str, allowed_roots: list[Path]) -> Path:
    """The resolved path of ``uri``; NotFound if absent, PermissionDenied if outside the roots.

    Symlinks and ``..`` are resolved before the check, so neither leads out of a root.
    """
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise InvalidArgument(f"{uri}: {scheme} URLs are not supported; give a file path")
    path = Path(uri).expanduser()
    if not path.exists():
        raise NotFound(f"video file not found: {uri}")
    resolved = path.resolve()
    if allowed_roots and not any(resolved.is_relative_to(r.resolve()) for r in allowed_roots):
        raise PermissionDenied(f"{uri} is outside the allowed roots")
    return resolved


class SerialCaptioner:
    """A captioner shared by ingestion and search refinement: one engine call at a time.

    ``lock`` is exposed so a caller with a deadline can try to acquire it first.
    """

    def __init__(self, inner: Captioner) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def describe(self, clips: Sequence[WindowClip]) -> list[CaptionOutput]:
        with self.lock:
            return self.inner.describe(clips)

    def close(self) -> None:
        self.inner.close()


class JobRunner:
    """Runs queued ingest jobs on a background thread."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        captioner_factory: Callable[[], Captioner],
        config: IngestConfig,
        allowed_roots: list[Path],
    ) -> None:
        self.store = store
        self.embedder = embedder
        self._captioner_factory = captioner_factory
        self._captioner: SerialCaptioner | None = None
        self._captioner_lock = threading.Lock()
        self._ingestor: Ingestor | None = None
        # Probing at submit time runs in its own decoder process, so RPCs never
        # wait behind the ingest job's decoding.
        self._probe_worker = DecodeWorker(config.decode_backend)
        self.config = config
        self.allowed_roots = allowed_roots
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-jobs", daemon=True)

    def start(self) -> None:
        """Re-queue unfinished jobs and start the worker thread."""
        for state in ("running", "queued"):
            for job in reversed(self.store.list_jobs(0, 1_000_000, states=[state])):
                self._queue.put(job.id)
        self._thread.start()

    def submit(self, uri: str, collection: str = "") -> str:
        """Validate ``uri`` (exists, allowed, probes as a video) and queue a job for it.

        The video goes into ``collection`` (a name of at most 200 characters;
        empty for none).
        """
        collection = collection.strip()
        if len(collection) > 200:
            raise InvalidArgument(
                f"collection name is {len(collection)} characters; the limit is 200"
            )
        path = check_ingest_path(uri, self.allowed_roots)
        if not path.is_file():
            raise NotFound(f"not a file: {uri}")
        probe(str(path), timeout=self.config.decode_timeout, worker=self._probe_worker)
        job_id = uuid.uuid4().hex
        self.store.create_job(job_id, str(path), collection)
        self._queue.put(job_id)
        return job_id

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current window commits; unfinished jobs resume on next start."""
        self._stop.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._probe_worker.close()
        if self._ingestor is not None:
            self._ingestor.close()
        if self._captioner is not None:
            self._captioner.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._run_job(job_id)
            except Exception:  # the runner must survive anything one job does
                log.exception("ingest job %s crashed", job_id)
                self._safe_update(job_id, state="failed", error="internal error (see server log)")

    def _run_job(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
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
                events_indexed=p.events_indexed,
            )

        try:
            check_ingest_path(job.uri, self.allowed_roots)
            if self._ingestor is None:
                self._ingestor = Ingestor(self.store, self.captioner(), self.embedder, self.config)
            result = self._ingestor.ingest(
                job.uri,
                on_progress=report,
                should_stop=self._stop.is_set,
                collection=job.collection,
            )
        except VidseekError as exc:
            log.warning("ingest job %s (%s) failed: %s", job_id, job.uri, exc)
            self.store.update_job(job_id, state="failed", error=str(exc))
            return
        if result.interrupted:
            self.store.update_job(job_id, state="queued")  # resumes on next start
            return
        self.store.snapshot()
        p = result.progress
        # A job with damaged stretches still succeeds; ``error`` says what was left out.
        note = (
            f"{p.windows_skipped} window(s) skipped; first gap: {p.gap}"
            if p.windows_skipped
            else ""
        )
        self.store.update_job(job_id, state="succeeded", error=note or p.gap)

    def captioner(self) -> SerialCaptioner:
        """The captioner, loaded on first use; CaptionerUnavailable if it cannot load."""
        with self._captioner_lock:
            if self._captioner is None:
                try:
                    self._captioner = SerialCaptioner(self._captioner_factory())
                except Exception as exc:  # model files missing, out of memory, bad weights...
                    log.exception("could not load the captioner")
                    raise CaptionerUnavailable(
                        f"could not load the captioning model: {exc}"
                    ) from exc
            return self._captioner

    def _safe_update(self, job_id: str, **fields: object) -> None:
        try:
            self.store.update_job(job_id, **fields)
        except Exception:
            log.exception("could not update job %s", job_id)
