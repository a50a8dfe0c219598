"""The one place domain errors become gRPC status codes; bearer-token auth."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from vidseek.storage.errors import VidseekError

__all__ = ["ErrorAndAuthInterceptor"]

log = logging.getLogger(__name__)

# Health checks and reflection stay open so probes and grpcurl work without a token.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ErrorAndAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Maps :class:`VidseekError` to its status code and checks the bearer token.

    Wraps every handler kind (unary and streaming requests and responses), so no
    RPC skips the token check. The scheme is matched case-insensitively
    (``Bearer``, ``bearer``), as HTTP does; the token in constant time.
    """

    def __init__(self, auth_token: str = "") -> None:
        self._token = auth_token

    def _authorized(self, metadata: dict[str, Any]) -> bool:
        scheme, _, token = str(metadata.get("authorization", "")).strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token.encode()
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = dict(details.invocation_metadata or ())

        def check(context: grpc.ServicerContext) -> None:
            if self._token and not self._authorized(metadata):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        def fail(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
            if isinstance(exc, VidseekError):
                code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
                context.abort(code, str(exc))
            request_id = uuid.uuid4().hex[:12]
            log.error("unexpected error in %s (request id %s)", method, request_id, exc_info=exc)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")

        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            def uu(request: Any, context: grpc.ServicerContext) -> Any:
                check(context)
                try:
                    return unary_unary(request, context)
                except Exception as exc:
                    fail(context, exc)

            return grpc.unary_unary_rpc_method_handler(uu, **codec)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            def us(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                check(context)
                try:
                    yield from unary_stream(request, context)
                except Exception as exc:
                    fail(context, exc)

            return grpc.unary_stream_rpc_method_handler(us, **codec)
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            def su(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                check(context)
                try:
                    return stream_unary(requests, context)
                except Exception as exc:
                    fail(context, exc)

            return grpc.stream_unary_rpc_method_handler(su, **codec)
        stream_stream = handler.stream_stream
        if stream_stream is None:
            return handler

        def ss(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            check(context)
            try:
                yield from stream_stream(requests, context)
            except Exception as exc:
                fail(context, exc)

        return grpc.stream_stream_rpc_method_handler(ss, **codec)
