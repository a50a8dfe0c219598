"""The gRPC servicer: translates proto -> domain call -> proto, nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc

from vidseek.server import mapping
from vidseek.server.jobs import JobRunner
from vidseek.server.search import SearchService
from vidseek.storage.errors import InvalidArgument, ResourceExhausted
from vidseek.storage.store import Store
from vidseek.v1 import video_search_pb2 as pb
from vidseek.v1 import video_search_pb2_grpc as pb_grpc

__all__ = ["VideoSearchServicer"]

MAX_PAGE_SIZE = 1000
_FINAL_STATES = frozenset((pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED))
# Seconds of the caller's deadline kept back from refinement, to answer in time.
REFINE_DEADLINE_MARGIN_S = 0.5


def _page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {requested}", field="page_size")
    return min(requested or 100, MAX_PAGE_SIZE)


def _required(value: str, name: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{name} is required", field=name)
    return value.strip()


# How often a job watcher re-reads its job when nothing in this process changed it
# (a job changed by another process is seen within this many seconds).
WATCH_POLL_S = 1.0


class VideoSearchServicer(pb_grpc.VideoSearchServicer):
    def __init__(
        self, store: Store, search: SearchService, jobs: JobRunner, max_watchers: int = 4
    ) -> None:
        self.store = store
        self.search_service = search
        self.jobs = jobs
        # Each watch holds one RPC thread while its job runs: cap them.
        self._watchers = threading.BoundedSemaphore(max_watchers)

    def IngestVideo(
        self, request: pb.IngestVideoRequest, context: grpc.ServicerContext
    ) -> pb.IngestJob:
        job_id = self.jobs.submit(_required(request.uri, "uri"), collection=request.collection)
        return mapping.job_to_proto(self.store.get_job(job_id))

    def GetIngestJob(
        self, request: pb.GetIngestJobRequest, context: grpc.ServicerContext
    ) -> pb.IngestJob:
        return mapping.job_to_proto(self.store.get_job(_required(request.job_id, "job_id")))

    def WatchIngestJob(
        self, request: pb.GetIngestJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.IngestJob]:
        job_id = _required(request.job_id, "job_id")
        if not self._watchers.acquire(blocking=False):
            raise ResourceExhausted(
                "too many job watchers on this server; poll GetIngestJob instead"
            )
        try:
            # A client that goes away wakes the loop at once, and it ends.
            context.add_callback(self.store.notify_job_change)
            last = None
            while context.is_active():
                seen = self.store.job_change_count
                job = mapping.job_to_proto(self.store.get_job(job_id))
                if job != last:
                    yield job
                    last = job
                if job.state in _FINAL_STATES:
                    return
                self.store.wait_for_job_change(seen, WATCH_POLL_S)
        finally:
            self._watchers.release()

    def CancelIngestJob(
        self, request: pb.CancelIngestJobRequest, context: grpc.ServicerContext
    ) -> pb.IngestJob:
        return mapping.job_to_proto(self.jobs.cancel(_required(request.job_id, "job_id")))

    def ListIngestJobs(
        self, request: pb.ListIngestJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListIngestJobsResponse:
        offset = mapping.parse_page_token(request.page_token)
        size = _page_size(request.page_size)
        jobs = self.store.list_jobs(offset, size)
        return pb.ListIngestJobsResponse(
            jobs=[mapping.job_to_proto(j) for j in jobs],
            next_page_token=mapping.page_token(offset, size, len(jobs)),
        )

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        remaining = context.time_remaining()
        deadline = (
            None if remaining is None else time.monotonic() + remaining - REFINE_DEADLINE_MARGIN_S
        )
        page = self.search_service.search_page(
            mapping.search_query_from_proto(request), deadline=deadline
        )
        return mapping.search_response_to_proto(page)

    def GetVideo(self, request: pb.GetVideoRequest, context: grpc.ServicerContext) -> pb.Video:
        return mapping.video_to_proto(self.store.get_video(_required(request.video_id, "video_id")))

    def ListVideos(
        self, request: pb.ListVideosRequest, context: grpc.ServicerContext
    ) -> pb.ListVideosResponse:
        offset = mapping.parse_page_token(request.page_token)
        size = _page_size(request.page_size)
        videos = self.store.list_videos(offset, size)
        return pb.ListVideosResponse(
            videos=[mapping.video_to_proto(v) for v in videos],
            next_page_token=mapping.page_token(offset, size, len(videos)),
        )

    def DeleteVideo(
        self, request: pb.DeleteVideoRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVideoResponse:
        n = self.store.delete_video(_required(request.video_id, "video_id"))
        return pb.DeleteVideoResponse(events_deleted=n)

    def GetTimeline(
        self, request: pb.GetTimelineRequest, context: grpc.ServicerContext
    ) -> pb.GetTimelineResponse:
        video_id = _required(request.video_id, "video_id")
        end = request.end_seconds or None
        if request.start_seconds < 0 or (end is not None and end < request.start_seconds):
            raise InvalidArgument(
                f"invalid time range [{request.start_seconds}, {request.end_seconds}]",
                field="end_seconds" if request.start_seconds >= 0 else "start_seconds",
            )
        events = self.store.timeline(video_id, request.start_seconds, end)
        return pb.GetTimelineResponse(
            video_id=video_id, events=[mapping.event_to_proto(e) for e in events]
        )
