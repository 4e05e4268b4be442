"""OpenAI-style error bodies for every refusal: {"error": {"message", "type", "param", "code"}}.

Every bad request ends here with a 4xx: validation errors, malformed JSON and HTTP errors get
handlers, and anything unexpected becomes a 500 with the same body shape and no traceback.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """A refusal with its HTTP status, as OpenAI's API words it."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, type_: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _request_id_header(request: Request) -> dict[str, str]:
    rid = getattr(request.state, "request_id", None)
    return {"X-Request-ID": rid} if rid else {}


def _unparsed_body(error: dict) -> bool:
    """A body sent without a JSON content type reaches validation as raw bytes: malformed JSON too."""
    raw = error.get("input")
    if tuple(error.get("loc", ())) != ("body",) or not isinstance(raw, (bytes, str)):
        return False
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = _request_id_header(request)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid" or _unparsed_body(first):
            reason = first.get("ctx", {}).get("error", "") or "not a JSON object"
            return error_response(
                400,
                f"malformed JSON in the request body: {reason}",
                "invalid_request_error",
                None,
                "invalid_json",
                _request_id_header(request),
            )
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in errors[:5]
        )
        return error_response(
            400,
            f"invalid request: {message}",
            "invalid_request_error",
            ".".join(loc) or None,
            "invalid_value",
            _request_id_header(request),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code,
            str(exc.detail),
            TYPES.get(exc.status_code, "invalid_request_error"),
            None,
            None,
            {**_request_id_header(request), **(exc.headers or {})},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"request_id": getattr(request.state, "request_id", None)})
        return error_response(
            500,
            f"internal error ({type(exc).__name__}); the request id is in X-Request-ID",
            "server_error",
            None,
            "internal_error",
            _request_id_header(request),
        )
