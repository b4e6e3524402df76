"""JSON error responses: ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    431: "request_header_fields_too_large",
}
# msgspec decodes nested values recursively: a body nested deeper than Python's recursion limit
# (a 2 KB body of "[[[[...") raises RecursionError, which every JSON endpoint answers with 400.
TOO_DEEP: Final = "the body nests arrays or objects too deeply to be read"


def error_code(status: int) -> str:
    """The error code of an HTTP status raised by aiohttp rather than by our handlers."""
    return HTTP_CODES.get(status) or ("internal_error" if status >= 500 else "http_error")


# A 503's hint: Redis should answer again soon, and a retry (with the same keys) is safe
RETRY_AFTER: Final = {"Retry-After": "1"}


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    return web.json_response({"error": body}, status=status)


class ApiError(Exception):
    """Raised by handlers; the middleware turns it into a JSON error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})  # e.g. WWW-Authenticate on a 401
        self.extra = extra

    def response(self) -> web.Response:
        response = error_response(self.status, self.code, self.message, **self.extra)
        response.headers.update(self.headers)
        return response
