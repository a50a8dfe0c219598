"""Synchronous and asyncio clients for the vidseek gRPC service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import grpc
from grpc import aio

from vidseek.client import _convert
from vidseek.client.errors import (
    DeadlineExceededError,
    UnavailableError,
    VidseekClientError,
    from_rpc_error,
)
from vidseek.client.models import Event, IngestJob, Moment, Video
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _credentials(tls: bool, root_certificates: bytes | None) -> grpc.ChannelCredentials | None:
    return grpc.ssl_channel_credentials(root_certificates) if tls or root_certificates else None


def _search_request(
    query: str, top_k: int, video_ids: Sequence[str], min_score: float
) -> pb.SearchRequest:
    return pb.SearchRequest(
        query=query, top_k=top_k, video_ids=list(video_ids), min_score=min_score
    )


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
        """Block until the server accepts connections; UnavailableError after ``timeout``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise UnavailableError(
                f"no server answered within {timeout:g} s", "UNAVAILABLE"
            ) from exc

    def search(
        self,
        query: str,
        top_k: int = 10,
        *,
        video_ids: Sequence[str] = (),
        min_score: float = 0.0,
    ) -> list[Moment]:
        """Moments matching ``query``, best first."""
        resp = self._call(self._stub.Search, _search_request(query, top_k, video_ids, min_score))
        return [_convert.moment(m) for m in resp.moments]

    def ingest(self, uri: str) -> IngestJob:
        """Queue a video (a path the server can read) for indexing."""
        return _convert.job(self._call(self._stub.IngestVideo, pb.IngestVideoRequest(uri=uri)))

    def get_job(self, job_id: str) -> IngestJob:
        return _convert.job(
            self._call(self._stub.GetIngestJob, pb.GetIngestJobRequest(job_id=job_id))
        )

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_progress: Callable[[IngestJob], None] | None = None,
    ) -> IngestJob:
        """Poll a job until it succeeds or fails; raises DeadlineExceededError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state.done:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError(
                    f"job {job_id} not done after {timeout} s", "DEADLINE_EXCEEDED"
                )
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

    async def search(
        self,
        query: str,
        top_k: int = 10,
        *,
        video_ids: Sequence[str] = (),
        min_score: float = 0.0,
    ) -> list[Moment]:
        resp = await self._call(
            self._stub.Search, _search_request(query, top_k, video_ids, min_score)
        )
        return [_convert.moment(m) for m in resp.moments]

    async def ingest(self, uri: str) -> IngestJob:
        return _convert.job(
            await self._call(self._stub.IngestVideo, pb.IngestVideoRequest(uri=uri))
        )

    async def get_job(self, job_id: str) -> IngestJob:
        return _convert.job(
            await self._call(self._stub.GetIngestJob, pb.GetIngestJobRequest(job_id=job_id))
        )

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
        resp = await self._call(self._stub.DeleteVideo, pb.DeleteVideoRequest(video_id=video_id))
        return resp.events_deleted

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
