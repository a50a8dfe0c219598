"""SDK errors. ``grpc.RpcError`` is converted in exactly one place: :func:`from_rpc_error`.

::

    VidseekClientError
    ├── InvalidArgumentError     INVALID_ARGUMENT, OUT_OF_RANGE
    ├── NotFoundError            NOT_FOUND
    ├── PermissionDeniedError    PERMISSION_DENIED
    ├── UnauthenticatedError     UNAUTHENTICATED
    ├── FailedPreconditionError  FAILED_PRECONDITION
    ├── ResourceExhaustedError   RESOURCE_EXHAUSTED       (retriable)
    ├── UnavailableError         UNAVAILABLE              (retriable)
    ├── DeadlineExceededError    DEADLINE_EXCEEDED        (retriable)
    └── ServerError              INTERNAL and anything else
"""

from __future__ import annotations

import grpc

__all__ = [
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServerError",
    "UnauthenticatedError",
    "UnavailableError",
    "VidseekClientError",
    "from_rpc_error",
]


class VidseekClientError(Exception):
    """Base of all SDK errors. ``retriable`` says whether retrying may succeed."""

    retriable = False

    def __init__(self, message: str, code: str = "UNKNOWN", request_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id
        """The server's id for the failed call (its logs carry it); "" if none came back."""


class InvalidArgumentError(VidseekClientError):
    pass


class NotFoundError(VidseekClientError):
    pass


class PermissionDeniedError(VidseekClientError):
    pass


class UnauthenticatedError(VidseekClientError):
    pass


class FailedPreconditionError(VidseekClientError):
    pass


class ResourceExhaustedError(VidseekClientError):
    retriable = True


class UnavailableError(VidseekClientError):
    retriable = True


class DeadlineExceededError(VidseekClientError):
    retriable = True


class ServerError(VidseekClientError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[VidseekClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_rpc_error(exc: grpc.RpcError) -> VidseekClientError:
    """The SDK error for a failed call (use as ``raise from_rpc_error(e) from e``)."""
    # Sync errors are grpc.Call objects; asyncio ones (AioRpcError) only share the methods.
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or str(exc)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    cls = _BY_CODE.get(code, ServerError)
    return cls(details, code.name, _request_id(exc))


def _request_id(exc: grpc.RpcError) -> str:
    trailing = getattr(exc, "trailing_metadata", None)
    try:
        pairs = trailing() if callable(trailing) else None
    except Exception:  # a call that never reached a server has no metadata to give
        pairs = None
    for key, value in pairs or ():
        if key == "x-request-id":
            return str(value)
    return ""
