"""The one place domain errors become gRPC status codes; bearer-token auth."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from vidseek.storage.errors import VidseekError

__all__ = ["ErrorAndAuthInterceptor"]

log = logging.getLogger(__name__)

# Health checks and reflection stay open so probes and grpcurl work without a token.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ErrorAndAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Maps :class:`VidseekError` to its status code and checks the bearer token."""

    def __init__(self, auth_token: str = "") -> None:
        self._token = auth_token

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        method: str = details.method
        if handler is None or handler.unary_unary is None or method.startswith(_OPEN_PREFIXES):
            return handler
        behaviour = handler.unary_unary
        metadata = dict(details.invocation_metadata or ())

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            if self._token and not hmac.compare_digest(
                str(metadata.get("authorization", "")), f"Bearer {self._token}"
            ):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            try:
                return behaviour(request, context)
            except VidseekError as exc:
                code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
                failure: tuple[grpc.StatusCode, str] = (code, str(exc))
            except Exception:
                request_id = uuid.uuid4().hex[:12]
                log.exception("unexpected error in %s (request id %s)", method, request_id)
                failure = (grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            context.abort(*failure)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
