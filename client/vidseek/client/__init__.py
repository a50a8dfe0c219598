"""vidseek Python SDK: search hours of video by text and get moments back.

>>> from vidseek.client import Client
>>> with Client("localhost:50051") as c:
...     for m in c.search("a man opens a door", top_k=5):
...         print(m.video_id, m.start_seconds, m.end_seconds, m.description)
...     for page in c.search_pages("a goal", collection="matches", group_by_video=True):
...         for video in page.videos:
...             print(video.video_id, video.score, len(video.moments))
"""

from vidseek.client._client import AsyncClient, Client
from vidseek.client.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
    VidseekClientError,
)
from vidseek.client.models import (
    Event,
    IngestJob,
    JobState,
    Moment,
    SearchOptions,
    SearchPage,
    Video,
    VideoHits,
)

__all__ = [
    "AsyncClient",
    "Client",
    "DeadlineExceededError",
    "Event",
    "FailedPreconditionError",
    "FieldViolation",
    "IngestJob",
    "InvalidArgumentError",
    "JobState",
    "Moment",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SearchOptions",
    "SearchPage",
    "ServerError",
    "UnauthenticatedError",
    "UnavailableError",
    "Video",
    "VideoHits",
    "VidseekClientError",
]
