"""Synchronous and asyncio clients for the vidseek gRPC service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar, Unpack

import grpc
from grpc import aio

from vidseek.client import _convert
from vidseek.client.errors import (
    DeadlineExceededError,
    UnavailableError,
    VidseekClientError,
    from_rpc_error,
)
from vidseek.client.models import Event, IngestJob, SearchOptions, SearchPage, Video
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _credentials(tls: bool, root_certificates: bytes | None) -> grpc.ChannelCredentials | None:
    return grpc.ssl_channel_credentials(root_certificates) if tls or root_certificates else None


_SEARCH_OPTIONS = frozenset(SearchOptions.__annotations__)
# Words in a connection failure that mean TLS itself failed (not an absent server).
_TLS_FAILURE = ("ssl", "tls", "handshake", "certificate")
_PROBE = pb.ListVideosRequest(page_size=1)


class _TlsError(UnavailableError):
    """A TLS failure: waiting longer will not help."""


def _probe_result(exc: grpc.RpcError, target: str) -> UnavailableError | None:
    """None if a probe call reached the server (any answer but UNAVAILABLE, even
    UNAUTHENTICATED); a :class:`_TlsError` for a TLS failure; else the
    UnavailableError to report if the server never comes up."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    details = exc.details() or ""
    if any(w in details.lower() for w in _TLS_FAILURE):
        return _TlsError(
            f"TLS handshake with {target} failed ({details}); check the server's TLS "
            "setting and the client's (tls=True / root_certificates; CLI: --tls, --ca-file)",
            "UNAVAILABLE",
        )
    return UnavailableError(details, "UNAVAILABLE")


# A watch that fails with these falls back to polling: an older server without the
# RPC, a server with too many watchers, a server going away mid-stream.
_NO_WATCH = (
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def _job_timeout(job_id: str, timeout: float | None) -> DeadlineExceededError:
    return DeadlineExceededError(f"job {job_id} not done after {timeout} s", "DEADLINE_EXCEEDED")


def _not_ready(timeout: float, last: UnavailableError | None) -> UnavailableError:
    why = f"; last error: {last.message}" if last is not None and last.message else ""
    return UnavailableError(f"no server answered within {timeout:g} s{why}", "UNAVAILABLE")


def _search_request(query: str, top_k: int, options: SearchOptions) -> pb.SearchRequest:
    unknown = set(options) - _SEARCH_OPTIONS
    if unknown:
        raise TypeError(f"unknown search option(s): {', '.join(sorted(unknown))}")
    req = pb.SearchRequest(
        query=query,
        top_k=top_k,
        video_ids=list(options.get("video_ids", ())),
        min_score=options.get("min_score", 0.0),
        group_by_video=options.get("group_by_video", False),
        moments_per_video=options.get("moments_per_video", 0),
        page_token=options.get("page_token", ""),
        refine=options.get("refine", False),
        collection=options.get("collection", ""),
    )
    # Unset (None) times stay unset on the wire: unbounded.
    start, end = options.get("start_seconds"), options.get("end_seconds")
    if start is not None:
        req.start_seconds = start
    if end is not None:
        req.end_seconds = end
    return req


class Client:
    """Blocking client. ``Client("localhost:50051").search("a man opens a door")``.

    Errors are :class:`~vidseek.client.errors.VidseekClientError` subclasses;
    retriable ones (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED) are
    retried ``retries`` times with exponential backoff before they are raised.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = 30.0,
        retries: int = 3,
    ) -> None:
        creds = _credentials(tls, root_certificates)
        self._channel = (
            grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
        )
        self._stub = pb_grpc.VideoSearchStub(self._channel)
        self._metadata = _metadata(token)
        self._target = target
        self.timeout = timeout
        self.retries = retries

    def _call(self, fn: Callable[..., T], request: object, timeout: float | None = None) -> T:
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return fn(request, timeout=timeout or self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if not err.retriable or attempt == self.retries:
                    raise err from exc
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_until_ready(self, timeout: float) -> None:
        """Block until the server answers; UnavailableError after ``timeout``.

        A TLS failure (handshake refused, certificate not trusted, TLS against a
        plaintext server) raises at once, naming TLS, instead of waiting.
        """
        deadline = time.monotonic() + timeout
        last: UnavailableError | None = None
        while True:
            left = deadline - time.monotonic()
            try:
                self._stub.ListVideos(
                    _PROBE, timeout=max(0.05, min(left, 2.0)), metadata=self._metadata
                )
                return
            except grpc.RpcError as exc:
                last = _probe_result(exc, self._target)
                if last is None:
                    return
                if isinstance(last, _TlsError):
                    raise last from exc
            if time.monotonic() + 0.2 >= deadline:
                raise _not_ready(timeout, last)
            time.sleep(0.2)

    def search(self, query: str, top_k: int = 10, **options: Unpack[SearchOptions]) -> SearchPage:
        """Moments matching ``query``, best first: one page of ``top_k``.

        ``top_k`` counts moments, or videos with ``group_by_video=True`` (0: the
        server default, 10; at most the server's limit, 1000). The options are
        :class:`~vidseek.client.SearchOptions` (filters by video, collection and
        time range, ``min_score``, grouping, ``refine``, ``page_token``). The
        result is a list of moments with ``videos`` and ``next_page_token``::

            page = c.search("a goal", top_k=20, collection="matches", start_seconds=600)
            more = c.search("a goal", top_k=20, collection="matches", start_seconds=600,
                            page_token=page.next_page_token)
        """
        return _convert.search_page(
            self._call(self._stub.Search, _search_request(query, top_k, options))
        )

    def search_pages(
        self, query: str, top_k: int = 10, **options: Unpack[SearchOptions]
    ) -> Iterator[SearchPage]:
        """Every page of a search, fetched lazily (``top_k`` per page)."""
        while True:
            page = self.search(query, top_k, **options)
            yield page
            if not page.next_page_token:
                return
            options["page_token"] = page.next_page_token

    def ingest(self, uri: str, *, collection: str = "") -> IngestJob:
        """Queue a video (a path the server can read) for indexing.

        ``collection`` (at most 200 characters) names a group of videos that
        searches can be restricted to.
        """
        return _convert.job(
            self._call(
                self._stub.IngestVideo, pb.IngestVideoRequest(uri=uri, collection=collection)
            )
        )

    def get_job(self, job_id: str) -> IngestJob:
        return _convert.job(
            self._call(self._stub.GetIngestJob, pb.GetIngestJobRequest(job_id=job_id))
        )

    def cancel_job(self, job_id: str) -> IngestJob:
        """Cancel a queued or running job; a running one stops after its current window.

        Returns the job as it is now (a running job may still say ``running``
        until it has committed that window). FailedPreconditionError for a job
        that has already ended.
        """
        return _convert.job(
            self._call(self._stub.CancelIngestJob, pb.CancelIngestJobRequest(job_id=job_id))
        )

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_progress: Callable[[IngestJob], None] | None = None,
    ) -> IngestJob:
        """Follow a job until it ends; DeadlineExceededError after ``timeout`` s.

        Streams the job's changes (``WatchIngestJob``: ``on_progress`` sees each
        change as it happens); polls every ``poll_interval`` s instead where the
        server cannot stream (an older server, too many watchers, a restart).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        request = pb.GetIngestJobRequest(job_id=job_id)
        try:
            stream = self._stub.WatchIngestJob(
                request, timeout=_left(deadline), metadata=self._metadata
            )
            for message in stream:
                job = _convert.job(message)
                if on_progress is not None:
                    on_progress(job)
                if job.state.done:
                    return job
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _job_timeout(job_id, timeout) from exc
            if exc.code() not in _NO_WATCH:
                raise from_rpc_error(exc) from exc
        while True:
            job = self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state.done:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise _job_timeout(job_id, timeout)
            time.sleep(poll_interval)

    def list_jobs(self, page_size: int = 100) -> Iterator[IngestJob]:
        """All ingest jobs, newest first (pages fetched lazily)."""
        token = ""
        while True:
            resp = self._call(
                self._stub.ListIngestJobs,
                pb.ListIngestJobsRequest(page_size=page_size, page_token=token),
            )
            yield from (_convert.job(j) for j in resp.jobs)
            token = resp.next_page_token
            if not token:
                return

    def get_video(self, video_id: str) -> Video:
        return _convert.video(
            self._call(self._stub.GetVideo, pb.GetVideoRequest(video_id=video_id))
        )

    def list_videos(self, page_size: int = 100) -> Iterator[Video]:
        """All indexed videos (pages fetched lazily)."""
        token = ""
        while True:
            resp = self._call(
                self._stub.ListVideos, pb.ListVideosRequest(page_size=page_size, page_token=token)
            )
            yield from (_convert.video(v) for v in resp.videos)
            token = resp.next_page_token
            if not token:
                return

    def delete_video(self, video_id: str) -> int:
        """Delete a video and its events; returns the number of events deleted."""
        return self._call(
            self._stub.DeleteVideo, pb.DeleteVideoRequest(video_id=video_id)
        ).events_deleted

    def timeline(
        self, video_id: str, start_seconds: float = 0.0, end_seconds: float = 0.0
    ) -> list[Event]:
        """A video's events in time order (end 0: to the end)."""
        resp = self._call(
            self._stub.GetTimeline,
            pb.GetTimelineRequest(
                video_id=video_id, start_seconds=start_seconds, end_seconds=end_seconds
            ),
        )
        return [_convert.event(e) for e in resp.events]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client with the same methods as :class:`Client` (awaitables)."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = 30.0,
        retries: int = 3,
    ) -> None:
        creds = _credentials(tls, root_certificates)
        self._channel = aio.secure_channel(target, creds) if creds else aio.insecure_channel(target)
        self._stub = pb_grpc.VideoSearchStub(self._channel)
        self._metadata = _metadata(token)
        self._target = target
        self.timeout = timeout
        self.retries = retries

    async def _call(self, fn: Callable[..., Awaitable[T]], request: object) -> T:
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return await fn(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                err: VidseekClientError = from_rpc_error(exc)
                if not err.retriable or attempt == self.retries:
                    raise err from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def wait_until_ready(self, timeout: float) -> None:
        """Wait until the server answers (see :meth:`Client.wait_until_ready`)."""
        deadline = time.monotonic() + timeout
        last: UnavailableError | None = None
        while True:
            left = deadline - time.monotonic()
            try:
                await self._stub.ListVideos(
                    _PROBE, timeout=max(0.05, min(left, 2.0)), metadata=self._metadata
                )
                return
            except grpc.RpcError as exc:
                last = _probe_result(exc, self._target)
                if last is None:
                    return
                if isinstance(last, _TlsError):
                    raise last from exc
            if time.monotonic() + 0.2 >= deadline:
                raise _not_ready(timeout, last)
            await asyncio.sleep(0.2)

    async def search(
        self, query: str, top_k: int = 10, **options: Unpack[SearchOptions]
    ) -> SearchPage:
        """Moments matching ``query``, best first (see :meth:`Client.search`)."""
        return _convert.search_page(
            await self._call(self._stub.Search, _search_request(query, top_k, options))
        )

    async def search_pages(
        self, query: str, top_k: int = 10, **options: Unpack[SearchOptions]
    ) -> AsyncIterator[SearchPage]:
        """Every page of a search, fetched lazily (see :meth:`Client.search_pages`)."""
        while True:
            page = await self.search(query, top_k, **options)
            yield page
            if not page.next_page_token:
                return
            options["page_token"] = page.next_page_token

    async def ingest(self, uri: str, *, collection: str = "") -> IngestJob:
        """Queue a video for indexing (see :meth:`Client.ingest`)."""
        return _convert.job(
            await self._call(
                self._stub.IngestVideo, pb.IngestVideoRequest(uri=uri, collection=collection)
            )
        )

    async def get_job(self, job_id: str) -> IngestJob:
        return _convert.job(
            await self._call(self._stub.GetIngestJob, pb.GetIngestJobRequest(job_id=job_id))
        )

    async def cancel_job(self, job_id: str) -> IngestJob:
        """Cancel a queued or running job (see :meth:`Client.cancel_job`)."""
        return _convert.job(
            await self._call(self._stub.CancelIngestJob, pb.CancelIngestJobRequest(job_id=job_id))
        )

    async def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_progress: Callable[[IngestJob], None] | None = None,
    ) -> IngestJob:
        """Follow a job until it ends (see :meth:`Client.wait_for_job`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        request = pb.GetIngestJobRequest(job_id=job_id)
        try:
            stream = self._stub.WatchIngestJob(
                request, timeout=_left(deadline), metadata=self._metadata
            )
            async for message in stream:
                job = _convert.job(message)
                if on_progress is not None:
                    on_progress(job)
                if job.state.done:
                    return job
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _job_timeout(job_id, timeout) from exc
            if exc.code() not in _NO_WATCH:
                raise from_rpc_error(exc) from exc
        while True:
            job = await self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state.done:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise _job_timeout(job_id, timeout)
            await asyncio.sleep(poll_interval)

    async def list_jobs(self, page_size: int = 100) -> AsyncIterator[IngestJob]:
        """All ingest jobs, newest first (pages fetched lazily)."""
        token = ""
        while True:
            resp = await self._call(
                self._stub.ListIngestJobs,
                pb.ListIngestJobsRequest(page_size=page_size, page_token=token),
            )
            for j in resp.jobs:
                yield _convert.job(j)
            token = resp.next_page_token
            if not token:
                return

    async def get_video(self, video_id: str) -> Video:
        return _convert.video(
            await self._call(self._stub.GetVideo, pb.GetVideoRequest(video_id=video_id))
        )

    async def list_videos(self, page_size: int = 100) -> AsyncIterator[Video]:
        token = ""
        while True:
            resp = await self._call(
                self._stub.ListVideos, pb.ListVideosRequest(page_size=page_size, page_token=token)
            )
            for v in resp.videos:
                yield _convert.video(v)
            token = resp.next_page_token
            if not token:
                return

    async def delete_video(self, video_id: str) -> int:
        """Delete a video and its events; returns the number of events deleted."""
        resp = await self._call(self._stub.DeleteVideo, pb.DeleteVideoRequest(video_id=video_id))
        return resp.events_deleted

    async def timeline(
        self, video_id: str, start_seconds: float = 0.0, end_seconds: float = 0.0
    ) -> list[Event]:
        """A video's events in time order (end 0: to the end)."""
        resp = await self._call(
            self._stub.GetTimeline,
            pb.GetTimelineRequest(
                video_id=video_id, start_seconds=start_seconds, end_seconds=end_seconds
            ),
        )
        return [_convert.event(e) for e in resp.events]

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
