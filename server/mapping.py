"""All proto <-> domain mapping of the server, in one place."""

from __future__ import annotations

from vidseek.server.search import MomentResult, SearchPage, SearchQuery, VideoHits
from vidseek.storage.errors import InvalidArgument
from vidseek.storage.models import IngestJobRow
from vidseek.storage.store import EventRecord, VideoRecord
from vidseek.v1 import video_search_pb2 as pb

__all__ = [
    "event_to_proto",
    "job_to_proto",
    "moment_to_proto",
    "page_token",
    "parse_page_token",
    "search_query_from_proto",
    "search_response_to_proto",
    "video_hits_to_proto",
    "video_to_proto",
]

JOB_STATES = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}


def search_query_from_proto(req: pb.SearchRequest) -> SearchQuery:
    """The domain query of a request; unset optional times become ``None``."""
    return SearchQuery(
        text=req.query,
        top_k=req.top_k,
        video_ids=tuple(req.video_ids),
        min_score=req.min_score,
        start_seconds=req.start_seconds if req.HasField("start_seconds") else None,
        end_seconds=req.end_seconds if req.HasField("end_seconds") else None,
        group_by_video=req.group_by_video,
        moments_per_video=req.moments_per_video,
        page_token=req.page_token,
        collection=req.collection,
        refine=req.refine,
    )


def moment_to_proto(m: MomentResult) -> pb.Moment:
    return pb.Moment(
        video_id=m.video_id,
        start_seconds=m.start_seconds,
        end_seconds=m.end_seconds,
        description=m.description,
        score=m.score,
        event_ids=list(m.event_ids),
        video_uri=m.video_uri,
        coarse_start_seconds=m.coarse_start_seconds,
        coarse_end_seconds=m.coarse_end_seconds,
        refined=m.refined,
    )


def video_hits_to_proto(v: VideoHits) -> pb.VideoHits:
    return pb.VideoHits(
        video_id=v.video_id,
        score=v.score,
        video_uri=v.video_uri,
        moments=[moment_to_proto(m) for m in v.moments],
    )


def search_response_to_proto(page: SearchPage) -> pb.SearchResponse:
    return pb.SearchResponse(
        moments=[moment_to_proto(m) for m in page.moments],
        videos=[video_hits_to_proto(v) for v in page.videos],
        next_page_token=page.next_page_token,
    )


def video_to_proto(v: VideoRecord) -> pb.Video:
    return pb.Video(
        video_id=v.id,
        uri=v.uri,
        content_hash=v.content_hash,
        duration_seconds=v.duration,
        fps=v.fps,
        width=v.width,
        height=v.height,
        frame_count=v.frame_count,
        event_count=v.event_count,
        created_at=v.created_at,
        collection=v.collection,
    )


def job_to_proto(j: IngestJobRow) -> pb.IngestJob:
    return pb.IngestJob(
        job_id=j.id,
        uri=j.uri,
        state=JOB_STATES.get(j.state, pb.JOB_STATE_UNSPECIFIED),
        video_id=j.video_id or "",
        windows_total=j.windows_total,
        windows_done=j.windows_done,
        windows_unparsed=j.windows_unparsed,
        events_indexed=j.events_indexed,
        error=j.error,
        plan=j.plan,
        created_at=j.created_at,
        updated_at=j.updated_at,
        windows_skipped=j.windows_skipped,
        windows_reused=j.windows_reused,
        collection=j.collection,
    )


def event_to_proto(e: EventRecord) -> pb.Event:
    return pb.Event(
        event_id=e.id, start_seconds=e.start_seconds, end_seconds=e.end_seconds, description=e.text
    )


def parse_page_token(token: str) -> int:
    """The offset a page token stands for; InvalidArgument if it is not one of ours."""
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidArgument(f"invalid page_token {token!r}")
    return int(token)


def page_token(offset: int, page_size: int, returned: int) -> str:
    """The next page's token, or '' when this page was the last."""
    return str(offset + returned) if returned == page_size else ""
