"""protobuf -> SDK model conversion (the SDK's only contact with generated messages)."""

from __future__ import annotations

from vidseek.client.models import (
    Event,
    IngestJob,
    JobState,
    Moment,
    SearchPage,
    Video,
    VideoHits,
)
from vidseek.v1 import video_search_pb2 as pb

_STATES = {
    pb.JOB_STATE_QUEUED: JobState.QUEUED,
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
    pb.JOB_STATE_CANCELLED: JobState.CANCELLED,
}


def moment(m: pb.Moment) -> Moment:
    return Moment(
        video_id=m.video_id,
        start_seconds=m.start_seconds,
        end_seconds=m.end_seconds,
        description=m.description,
        score=m.score,
        event_ids=tuple(m.event_ids),
        video_uri=m.video_uri,
        coarse_start_seconds=(
            m.coarse_start_seconds if m.HasField("coarse_start_seconds") else None
        ),
        coarse_end_seconds=m.coarse_end_seconds if m.HasField("coarse_end_seconds") else None,
        refined=m.refined,
    )


def search_page(r: pb.SearchResponse) -> SearchPage:
    return SearchPage(
        (moment(m) for m in r.moments),
        videos=[
            VideoHits(
                video_id=v.video_id,
                score=v.score,
                video_uri=v.video_uri,
                moments=tuple(moment(m) for m in v.moments),
            )
            for v in r.videos
        ],
        next_page_token=r.next_page_token,
    )


def job(j: pb.IngestJob) -> IngestJob:
    return IngestJob(
        job_id=j.job_id,
        uri=j.uri,
        state=_STATES.get(j.state, JobState.QUEUED),
        video_id=j.video_id,
        windows_total=j.windows_total,
        windows_done=j.windows_done,
        windows_unparsed=j.windows_unparsed,
        events_indexed=j.events_indexed,
        error=j.error,
        plan=j.plan,
        created_at=j.created_at,
        updated_at=j.updated_at,
        windows_skipped=j.windows_skipped,
        collection=j.collection,
        windows_reused=j.windows_reused,
    )


def video(v: pb.Video) -> Video:
    return Video(
        video_id=v.video_id,
        uri=v.uri,
        content_hash=v.content_hash,
        duration_seconds=v.duration_seconds,
        fps=v.fps,
        width=v.width,
        height=v.height,
        frame_count=v.frame_count,
        event_count=v.event_count,
        created_at=v.created_at,
        collection=v.collection,
    )


def event(e: pb.Event) -> Event:
    return Event(
        event_id=e.event_id,
        start_seconds=e.start_seconds,
        end_seconds=e.end_seconds,
        description=e.description,
    )
