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

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
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


@dataclass(frozen=True)
class FieldViolation:
    """A request field the server refused, and why (``google.rpc.BadRequest``)."""

    field: str
    description: str


class VidseekClientError(Exception):
    """Base of all SDK errors. ``retriable`` says whether retrying may succeed."""

    retriable = False

    def __init__(
        self,
        message: str,
        code: str = "UNKNOWN",
        request_id: str = "",
        field_violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id
        """The server's id for the failed call (its logs carry it); "" if none came back."""
        self.field_violations = field_violations
        """The request fields at fault, from the status details (empty if none were sent)."""
        self.retry_after = retry_after
        """Seconds after which the server says a retry may succeed (``RetryInfo``), or None."""


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
    trailing = _trailing(exc)
    violations, retry_after = _details(trailing.get("grpc-status-details-bin"))
    return cls(
        details,
        code.name,
        str(trailing.get("x-request-id", "")),
        field_violations=violations,
        retry_after=retry_after,
    )


def _trailing(exc: grpc.RpcError) -> dict[str, str | bytes]:
    trailing = getattr(exc, "trailing_metadata", None)
    try:
        pairs = trailing() if callable(trailing) else None
    except Exception:  # a call that never reached a server has no metadata to give
        pairs = None
    return {str(key): value for key, value in pairs or ()}


def _details(raw: str | bytes | None) -> tuple[tuple[FieldViolation, ...], float | None]:
    """Field violations and retry delay of a ``google.rpc.Status`` (none if unreadable)."""
    if not isinstance(raw, bytes):
        return (), None
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # a malformed status must not hide the error itself
        return (), None
    violations: list[FieldViolation] = []
    retry_after = None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.ToNanoseconds() / 1e9
    return tuple(violations), retry_after
