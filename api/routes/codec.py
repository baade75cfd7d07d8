"""/api/v1/codec/{encode,decode}: Temporal's remote codec protocol, so the Web
UI and the `temporal` CLI show decrypted payloads to an authorised operator.

Decoding reveals env values that the API itself always masks, so it takes the
admin role. Browsers call it cross-origin from the Web UI: the preflight is
answered without a token, and only the configured origins get CORS headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response, status
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import Admin, SettingsDep
from conveyor.codec import EncryptionCodec, PayloadKeyError
from conveyor.settings import Settings

PREFIX = "/codec"
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
    origins = allowed_origins(settings)

    @app.middleware("http")
    async def codec_cors(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        origin = request.headers.get("origin")
        if not request.url.path.startswith(path_prefix) or origin is None:
            return await call_next(request)
        allowed = origin in origins
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            if not allowed:
                return Response("origin not allowed", status_code=403, headers={"Vary": "Origin"})
            return Response(
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
        response = await call_next(request)
        response.headers["Vary"] = "Origin"
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        return response


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
async def encode(request: Request, settings: SettingsDep, caller: Admin, namespace: NamespaceHeader = None) -> Response:
    _check_namespace(settings, namespace)
    codec: EncryptionCodec = request.app.state.codec
    return _answer(await codec.encode((await _read_payloads(request)).payloads))


@router.post("/decode", summary="Decrypt payloads (Temporal remote codec protocol)")
async def decode(request: Request, settings: SettingsDep, caller: Admin, namespace: NamespaceHeader = None) -> Response:
    _check_namespace(settings, namespace)
    codec: EncryptionCodec = request.app.state.codec
    try:
        return _answer(await codec.decode((await _read_payloads(request)).payloads))
    except PayloadKeyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"payloads: {exc}") from None
