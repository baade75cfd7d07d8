"""/api/v1/codec/{encode,decode}: Temporal's remote codec protocol, so the Web
UI and the `temporal` CLI show decrypted payloads to an authorised operator.

Decoding reveals env values that the API itself always masks, so it takes the
admin role. Browsers call it cross-origin from the Web UI: the preflight is
answered without a token, and only the configured origins get CORS headers.

The Web UI cannot send a Conveyor token, only cookies (its codec setting
"include credentials"). So an operator signs in once at /codec/login with an
admin token; the answer is a cookie holding a signed, expiring session that
names the token's id (never the token), scoped to /api/v1/codec, HttpOnly and
SameSite=Strict. Against cross-site requests riding on that cookie: a request
authenticated by it must be JSON and carry X-Namespace (so a browser must ask a
preflight first, which only the allowed origins pass), and a present Origin
must be one of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import time
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from google.protobuf import json_format
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from api.deps import Caller, SettingsDep, caller_of, check_role, get_caller, read_off_loop
from conveyor.clients.db import tokens
from conveyor.clients.payload_codec import EncryptionCodec, PayloadKeyError
from conveyor.settings import Settings

PREFIX = "/codec"
COOKIE = "conveyor_codec"
# Where the cookie is sent: the codec routes only (the API's, and the same
# path on any other port of this host, where nothing else serves it).
COOKIE_PATH = "/api/v1" + PREFIX
SESSION_VERSION = "s1"
MAX_FORM_BYTES = 4096
# A history event holds at most 2 MiB of payloads; the UI sends one event's at a time.
MAX_BODY_BYTES = 4 * 1024 * 1024

router = APIRouter(prefix=PREFIX, tags=["codec"])


def allowed_origins(settings: Settings) -> set[str]:
    ui = settings.temporal_ui_url
    scheme_host, port = ui.rsplit(":", 1)
    origins = {ui, f"http://localhost:{port}"} if scheme_host.endswith("127.0.0.1") else {ui}
    return origins | {o.strip().rstrip("/") for o in settings.codec_cors_origins.split(",") if o.strip()}


def install_cors(app: FastAPI, settings: Settings, path_prefix: str) -> None:
    """CORS for the codec routes only; the rest of the API is not for browsers."""
    app.add_middleware(CodecCorsMiddleware, origins=allowed_origins(settings), path_prefix=path_prefix)


class CodecCorsMiddleware:
    """Answers the Web UI's preflights and marks the codec's answers for its
    origin (a plain ASGI layer, so other requests pass through untouched)."""

    def __init__(self, app: ASGIApp, origins: set[str], path_prefix: str):
        self.app = app
        self.origins = origins
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin in self.origins
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            if not allowed:
                preflight = Response("origin not allowed", status_code=403, headers={"Vary": "Origin"})
            else:
                preflight = Response(
                    status_code=204,
                    headers={
                        "Access-Control-Allow-Origin": origin,
                        "Access-Control-Allow-Credentials": "true",
                        "Access-Control-Allow-Methods": "POST, OPTIONS",
                        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
                        "Access-Control-Max-Age": "600",
                        "Vary": "Origin",
                    },
                )
            await preflight(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer["Vary"] = "Origin"
                if allowed:
                    answer["Access-Control-Allow-Origin"] = origin
                    answer["Access-Control-Allow-Credentials"] = "true"
            await send(message)

        await self.app(scope, receive, marked)


def _session_key(request: Request) -> bytes:
    # Derived from the newest payload key: rotating it ends every session.
    codec: EncryptionCodec = request.app.state.codec
    return codec.keyring.derive("codec-session")


def _mac(key: bytes, message: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, message.encode(), hashlib.sha256).digest()).decode().rstrip("=")


def sign_session(key: bytes, token_id: str, expires: int) -> str:
    body = f"{SESSION_VERSION}.{token_id}.{expires}"
    return f"{body}.{_mac(key, body)}"


def session_token_id(key: bytes, value: str, now: float) -> str | None:
    """The token id a cookie names, if its signature holds and it has not expired."""
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != SESSION_VERSION or not (parts[2].isascii() and parts[2].isdigit()):
        return None
    # Bytes: compare_digest refuses str that is not ASCII (a crafted cookie).
    if not hmac.compare_digest(_mac(key, ".".join(parts[:3])).encode(), parts[3].encode()):
        return None
    if int(parts[2]) <= now:
        return None
    return parts[1]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _check_cookie_request(request: Request, settings: Settings) -> None:
    """What a cross-site page cannot send without a preflight that it would fail."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Content-Type: must be application/json")
    if "x-namespace" not in request.headers:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "X-Namespace: required with a codec session cookie")
    origin = request.headers.get("origin")
    if origin is not None and origin not in allowed_origins(settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Origin: not allowed to use the codec session")


def _lookup(session, how: Callable, value: str) -> Caller | None:
    """The caller of a live token found by `how` (by secret or by id), or None."""
    token = how(session, value)
    return caller_of(token) if token is not None else None


async def codec_caller(
    request: Request, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """An admin, by bearer token (CLI) or by the signed-in browser's cookie
    (Web UI); its token is read on the API's read threads, as every caller's."""
    if authorization is not None:
        return check_role(await get_caller(settings, authorization), "admin")
    cookie = request.cookies.get(COOKIE)
    if cookie is None:
        raise _unauthorized(f"missing Authorization: Bearer <token> header, or sign in at {COOKIE_PATH}/login")
    _check_cookie_request(request, settings)
    token_id = session_token_id(_session_key(request), cookie, time.time())
    if token_id is None:
        raise _unauthorized(f"codec session: invalid or expired; sign in again at {COOKIE_PATH}/login")
    caller = await read_off_loop(settings, _lookup, tokens.find_token_by_id, token_id)
    if caller is None:
        raise _unauthorized(f"codec session: its token was revoked; sign in again at {COOKIE_PATH}/login")
    return check_role(caller, "admin")


CodecAdmin = Annotated[Caller, Depends(codec_caller)]


async def _read_payloads(request: Request) -> Payloads:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"body: larger than {MAX_BODY_BYTES} bytes")
    try:
        return json_format.Parse(bytes(body), Payloads(), ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError, ValueError):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, 'body: expected {"payloads": [{"metadata": {...}, "data": "<base64>"}]}'
        ) from None


def _check_namespace(settings: Settings, namespace: str | None) -> None:
    if namespace is not None and namespace != settings.temporal_namespace:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "X-Namespace: this codec serves only Conveyor's namespace")


def _answer(payloads: list) -> Response:
    return Response(json_format.MessageToJson(Payloads(payloads=payloads), indent=None), media_type="application/json")


NamespaceHeader = Annotated[str | None, Header(alias="X-Namespace")]


@router.post("/encode", summary="Encrypt payloads (Temporal remote codec protocol)")
async def encode(request: Request, settings: SettingsDep, caller: CodecAdmin, namespace: NamespaceHeader = None) -> Response:
    _check_namespace(settings, namespace)
    codec: EncryptionCodec = request.app.state.codec
    return _answer(await codec.encode((await _read_payloads(request)).payloads))


@router.post("/decode", summary="Decrypt payloads (Temporal remote codec protocol)")
async def decode(request: Request, settings: SettingsDep, caller: CodecAdmin, namespace: NamespaceHeader = None) -> Response:
    _check_namespace(settings, namespace)
    codec: EncryptionCodec = request.app.state.codec
    try:
        return _answer(await codec.decode((await _read_payloads(request)).payloads))
    except PayloadKeyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"payloads: {exc}") from None


# -- browser sign-in for the Web UI ------------------------------------------

PAGE_HEADERS = {
    # No script, no framing (clickjacking of the forms), forms post only here.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    # Not no-referrer: under it a browser sends `Origin: null` with the form posts.
    "Referrer-Policy": "same-origin",
}


def _page(settings: Settings, body: str, status_code: int = 200) -> HTMLResponse:
    ui = html.escape(settings.temporal_ui_url)
    return HTMLResponse(
        "<!doctype html><html><head><meta charset=utf-8><title>Conveyor codec sign-in</title>"
        "<style>body{font-family:sans-serif;max-width:36em;margin:3em auto}input{width:100%;padding:.4em}</style>"
        f"</head><body><h1>Conveyor codec</h1>{body}"
        f'<p>Temporal Web UI: <a href="{ui}">{ui}</a></p></body></html>',
        status_code=status_code,
        headers=PAGE_HEADERS,
    )


def _login_form(settings: Settings, message: str = "", status_code: int = 200) -> HTMLResponse:
    note = f'<p role="alert"><strong>{html.escape(message)}</strong></p>' if message else ""
    return _page(
        settings,
        f"{note}<p>Sign in with an admin token so that this browser's Temporal Web UI shows decrypted payloads. "
        "The token is not kept: the browser gets a signed session cookie for "
        f"{settings.codec_session_ttl_seconds // 60} minutes.</p>"
        f'<form method="post" action="{COOKIE_PATH}/login"><label>Admin token '
        '<input type="password" name="token" autocomplete="off" required autofocus></label>'
        '<p><button type="submit">Sign in</button></p></form>',
        status_code,
    )


def _check_same_origin(request: Request) -> None:
    """Sign-in and sign-out take form posts from this page only."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Origin: sign-in and sign-out take posts from this page only")


@router.get("/login", summary="The codec sign-in page for the Web UI's browser", response_class=HTMLResponse)
async def login_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    cookie = request.cookies.get(COOKIE)
    token_id = session_token_id(_session_key(request), cookie, time.time()) if cookie else None
    caller = await read_off_loop(settings, _lookup, tokens.find_token_by_id, token_id) if token_id else None
    if caller is None or not tokens.role_allows(caller.role, "admin"):
        return _login_form(settings)
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(cookie.split(".")[2])))
    return _page(
        settings,
        f"<p>Signed in with the token <strong>{html.escape(caller.name)}</strong> until {expires}.</p>"
        f'<form method="post" action="{COOKIE_PATH}/logout"><button type="submit">Sign out</button></form>',
    )


@router.post("/login", summary="Sign this browser in to the codec with an admin token (form field `token`)")
async def login(request: Request, settings: SettingsDep) -> Response:
    _check_same_origin(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"body: larger than {MAX_FORM_BYTES} bytes")
    token = parse_qs(body.decode(errors="replace")).get("token", [""])[0].strip()
    if not token:
        return _login_form(settings, "token: required", status.HTTP_400_BAD_REQUEST)
    caller = await read_off_loop(settings, _lookup, tokens.find_token, token)
    if caller is None:
        return _login_form(settings, "token: invalid or revoked", status.HTTP_401_UNAUTHORIZED)
    if not tokens.role_allows(caller.role, "admin"):
        return _login_form(settings, f"token: decoding needs the admin role; this token has {caller.role}", 403)
    expires = int(time.time()) + settings.codec_session_ttl_seconds
    answer = RedirectResponse(f"{COOKIE_PATH}/login", status_code=status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    answer.set_cookie(
        COOKIE,
        sign_session(_session_key(request), caller.token_id, expires),
        max_age=settings.codec_session_ttl_seconds,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return answer


@router.post("/logout", summary="Sign this browser out of the codec")
async def logout(request: Request) -> Response:
    _check_same_origin(request)
    answer = RedirectResponse(f"{COOKIE_PATH}/login", status_code=status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    answer.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return answer
