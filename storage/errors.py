"""The one exception hierarchy of vidseek's domain code.

Every error a user can cause or see is a :class:`VidseekError`. Each class names
the gRPC status code the server answers with (as a string, so that domain code
never imports grpc); one server interceptor does the mapping.

::

    VidseekError                      INTERNAL
    ├── InvalidArgument               INVALID_ARGUMENT
    │   └── VideoError                INVALID_ARGUMENT   (a file is not a usable video)
    │       └── DecodeTimeout         DEADLINE_EXCEEDED  (the decoder hung)
    ├── NotFound                      NOT_FOUND
    ├── PermissionDenied              PERMISSION_DENIED
    ├── ResourceExhausted             RESOURCE_EXHAUSTED
    ├── FailedPrecondition            FAILED_PRECONDITION (not in a state that allows it)
    │   └── SchemaOutdated            FAILED_PRECONDITION
    ├── CaptionerUnavailable          UNAVAILABLE        (the model could not be loaded)
    └── ConfigError                   INVALID_ARGUMENT   (a bad setting; raised at start-up)
"""

from __future__ import annotations

__all__ = [
    "CaptionerUnavailable",
    "ConfigError",
    "DecodeTimeout",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SchemaOutdated",
    "VideoError",
    "VidseekError",
]


class VidseekError(Exception):
    """Base of every vidseek domain error."""

    grpc_code: str = "INTERNAL"
    retriable: bool = False

    def __init__(self, message: str = "", *, field: str = "", retry_after: float = 0.0) -> None:
        """``field``: the request field at fault (sent as a ``BadRequest`` field violation);
        ``retry_after``: seconds after which a retry may succeed (sent as ``RetryInfo``)."""
        super().__init__(message)
        self.field = field
        self.retry_after = retry_after


class InvalidArgument(VidseekError):
    """The request or its input is malformed."""

    grpc_code = "INVALID_ARGUMENT"


class VideoError(InvalidArgument):
    """A file cannot be probed or decoded as a video."""


class DecodeTimeout(VideoError):
    """The decoder did not answer within its deadline (damaged file or decoder hang)."""

    grpc_code = "DEADLINE_EXCEEDED"


class NotFound(VidseekError):
    """A named video, job or file does not exist."""

    grpc_code = "NOT_FOUND"


class PermissionDenied(VidseekError):
    """A path lies outside the configured allowed roots."""

    grpc_code = "PERMISSION_DENIED"


class ResourceExhausted(VidseekError):
    """A queue or limit is full; try again later."""

    grpc_code = "RESOURCE_EXHAUSTED"
    retriable = True


class FailedPrecondition(VidseekError):
    """The target is not in a state that allows the operation (e.g. a finished job)."""

    grpc_code = "FAILED_PRECONDITION"


class SchemaOutdated(FailedPrecondition):
    """The database schema is older than this code; run `vidseek db upgrade`."""


class CaptionerUnavailable(VidseekError):
    """The captioning model could not be loaded or its engine failed."""

    grpc_code = "UNAVAILABLE"
    retriable = True


class ConfigError(InvalidArgument):
    """A setting is unknown or has an invalid value."""
