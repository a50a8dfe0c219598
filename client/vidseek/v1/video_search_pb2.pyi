from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class IngestVideoRequest(_message.Message):
    __slots__ = ("uri", "collection")
    URI_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    uri: str
    collection: str
    def __init__(self, uri: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class GetIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListIngestJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListIngestJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[IngestJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[IngestJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class IngestJob(_message.Message):
    __slots__ = ("job_id", "uri", "state", "video_id", "windows_total", "windows_done", "windows_unparsed", "events_indexed", "error", "plan", "created_at", "updated_at", "windows_skipped", "collection", "windows_reused")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_DONE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_UNPARSED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_INDEXED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_REUSED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    uri: str
    state: JobState
    video_id: str
    windows_total: int
    windows_done: int
    windows_unparsed: int
    events_indexed: int
    error: str
    plan: str
    created_at: float
    updated_at: float
    windows_skipped: int
    collection: str
    windows_reused: int
    def __init__(self, job_id: _Optional[str] = ..., uri: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., video_id: _Optional[str] = ..., windows_total: _Optional[int] = ..., windows_done: _Optional[int] = ..., windows_unparsed: _Optional[int] = ..., events_indexed: _Optional[int] = ..., error: _Optional[str] = ..., plan: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., windows_skipped: _Optional[int] = ..., collection: _Optional[str] = ..., windows_reused: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "video_ids", "min_score", "start_seconds", "end_seconds", "group_by_video", "moments_per_video", "page_token", "refine", "collection")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    VIDEO_IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_VIDEO_FIELD_NUMBER: _ClassVar[int]
    MOMENTS_PER_VIDEO_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    video_ids: _containers.RepeatedScalarFieldContainer[str]
    min_score: float
    start_seconds: float
    end_seconds: float
    group_by_video: bool
    moments_per_video: int
    page_token: str
    refine: bool
    collection: str
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., video_ids: _Optional[_Iterable[str]] = ..., min_score: _Optional[float] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., group_by_video: _Optional[bool] = ..., moments_per_video: _Optional[int] = ..., page_token: _Optional[str] = ..., refine: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class Moment(_message.Message):
    __slots__ = ("video_id", "start_seconds", "end_seconds", "description", "score", "event_ids", "video_uri", "coarse_start_seconds", "coarse_end_seconds", "refined")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_URI_FIELD_NUMBER: _ClassVar[int]
    COARSE_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COARSE_END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REFINED_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    start_seconds: float
    end_seconds: float
    description: str
    score: float
    event_ids: _containers.RepeatedScalarFieldContainer[int]
    video_uri: str
    coarse_start_seconds: float
    coarse_end_seconds: float
    refined: bool
    def __init__(self, video_id: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., description: _Optional[str] = ..., score: _Optional[float] = ..., event_ids: _Optional[_Iterable[int]] = ..., video_uri: _Optional[str] = ..., coarse_start_seconds: _Optional[float] = ..., coarse_end_seconds: _Optional[float] = ..., refined: _Optional[bool] = ...) -> None: ...

class VideoHits(_message.Message):
    __slots__ = ("video_id", "score", "video_uri", "moments")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_URI_FIELD_NUMBER: _ClassVar[int]
    MOMENTS_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    score: float
    video_uri: str
    moments: _containers.RepeatedCompositeFieldContainer[Moment]
    def __init__(self, video_id: _Optional[str] = ..., score: _Optional[float] = ..., video_uri: _Optional[str] = ..., moments: _Optional[_Iterable[_Union[Moment, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("moments", "videos", "next_page_token")
    MOMENTS_FIELD_NUMBER: _ClassVar[int]
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    moments: _containers.RepeatedCompositeFieldContainer[Moment]
    videos: _containers.RepeatedCompositeFieldContainer[VideoHits]
    next_page_token: str
    def __init__(self, moments: _Optional[_Iterable[_Union[Moment, _Mapping]]] = ..., videos: _Optional[_Iterable[_Union[VideoHits, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetVideoRequest(_message.Message):
    __slots__ = ("video_id",)
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    def __init__(self, video_id: _Optional[str] = ...) -> None: ...

class Video(_message.Message):
    __slots__ = ("video_id", "uri", "content_hash", "duration_seconds", "fps", "width", "height", "frame_count", "event_count", "created_at", "collection")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    uri: str
    content_hash: str
    duration_seconds: float
    fps: float
    width: int
    height: int
    frame_count: int
    event_count: int
    created_at: float
    collection: str
    def __init__(self, video_id: _Optional[str] = ..., uri: _Optional[str] = ..., content_hash: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., frame_count: _Optional[int] = ..., event_count: _Optional[int] = ..., created_at: _Optional[float] = ..., collection: _Optional[str] = ...) -> None: ...

class ListVideosRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVideosResponse(_message.Message):
    __slots__ = ("videos", "next_page_token")
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    videos: _containers.RepeatedCompositeFieldContainer[Video]
    next_page_token: str
    def __init__(self, videos: _Optional[_Iterable[_Union[Video, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteVideoRequest(_message.Message):
    __slots__ = ("video_id",)
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    def __init__(self, video_id: _Optional[str] = ...) -> None: ...

class DeleteVideoResponse(_message.Message):
    __slots__ = ("events_deleted",)
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    events_deleted: int
    def __init__(self, events_deleted: _Optional[int] = ...) -> None: ...

class GetTimelineRequest(_message.Message):
    __slots__ = ("video_id", "start_seconds", "end_seconds")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    start_seconds: float
    end_seconds: float
    def __init__(self, video_id: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "start_seconds", "end_seconds", "description")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    start_seconds: float
    end_seconds: float
    description: str
    def __init__(self, event_id: _Optional[int] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class GetTimelineResponse(_message.Message):
    __slots__ = ("video_id", "events")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, video_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...
