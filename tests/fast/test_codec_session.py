"""The codec's browser sign-in (api/routes/codec.py): an admin token in a form
becomes a signed, expiring session cookie (HttpOnly, SameSite=Strict, scoped
to the codec) that decodes payloads as the Temporal Web UI asks; forged,
expired and revoked sessions, and what a cross-site page could send, are refused."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from api.routes import codec as codec_routes
from conveyor.clients.db import tokens
from conveyor.clients.db.session import read_scope
from conveyor.clients.payload_codec import ENCODING, load_keyring
from tests.support.in_process import BASE_URL, revoke

SECRET = {"spec": {"env": {"DATABASE_URL": f"postgres://app:pw-{uuid.uuid4().hex}@db.internal/app", "GREETING": "hello"}}}


def browser(local) -> TestClient:
    """A browser of its own: its cookie jar starts empty and it follows no redirect."""
    return TestClient(local.app, base_url=BASE_URL, follow_redirects=False)


def token_id_of(local, token: str) -> str:
    with read_scope(local.settings.effective_database_url) as session:
        return tokens.find_token(session, token).id


def sign_in(local, token: str, origin: str | None = BASE_URL) -> httpx.Response:
    headers = {"Origin": origin} if origin else {}
    return browser(local).post(f"{codec_routes.COOKIE_PATH}/login", data={"token": token}, headers=headers)


def ui_decode(local, body: str, cookie: str | None, **headers) -> httpx.Response:
    """A decode as the Web UI's browser sends it: JSON, X-Namespace, its Origin, the cookie."""
    sent = {
        "Origin": local.settings.temporal_ui_url,
        "Content-Type": "application/json",
        "X-Namespace": local.settings.temporal_namespace,
        **headers,
    }
    if cookie is not None:
        # Raw bytes: a forged cookie need not be ASCII, which httpx's cookie jar insists on.
        sent["Cookie"] = f"{codec_routes.COOKIE}={cookie}".encode()
    return browser(local).post(f"{codec_routes.COOKIE_PATH}/decode", content=body, headers=sent)


@pytest.fixture
def encrypted(project) -> str:
    """A payload as Temporal's history stores it: encrypted by the API's codec."""
    plain = {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}, "data": base64.b64encode(json.dumps(SECRET).encode()).decode()}]}
    sealed = project.admin.call("POST", "/codec/encode", 200, json=plain, headers={"X-Namespace": "default"}).json()
    assert base64.b64decode(sealed["payloads"][0]["metadata"]["encoding"]) == ENCODING
    assert SECRET["spec"]["env"]["DATABASE_URL"].encode() not in base64.b64decode(sealed["payloads"][0]["data"])
    return json.dumps(sealed)


def decoded_doc(response: httpx.Response) -> dict:
    return json.loads(base64.b64decode(response.json()["payloads"][0]["data"]))


def test_a_browser_signs_in_to_the_codec_with_a_cookie_and_decodes_as_the_web_ui(local, project, encrypted):
    admin_token, password = project.tokens["admin"], SECRET["spec"]["env"]["DATABASE_URL"]
    page = browser(local).get(f"{codec_routes.COOKIE_PATH}/login")
    assert page.status_code == 200 and 'name="token"' in page.text and 'type="password"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    signed_in = sign_in(local, admin_token)
    assert signed_in.status_code == 303, signed_in.text
    set_cookie = signed_in.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes and "samesite=strict" in set_cookie.lower()
    assert "secure" not in attributes, "plain http here; a https request gets a Secure cookie"
    assert f"Path={codec_routes.COOKIE_PATH}" in set_cookie
    assert f"Max-Age={local.settings.codec_session_ttl_seconds}" in set_cookie
    cookie = signed_in.cookies[codec_routes.COOKIE]
    assert admin_token not in set_cookie and admin_token.removeprefix("cvy_") not in cookie

    decoded = ui_decode(local, encrypted, cookie)
    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["Access-Control-Allow-Origin"] == local.settings.temporal_ui_url
    assert decoded.headers["Access-Control-Allow-Credentials"] == "true"
    assert decoded_doc(decoded) == SECRET

    # Without the cookie (or a token) the UI gets a 401 and shows ciphertext.
    refused = ui_decode(local, encrypted, None)
    assert refused.status_code == 401 and password not in refused.text
    # What a cross-site page could send without a preflight, or from another origin, is refused.
    as_form = ui_decode(local, encrypted, cookie, **{"Content-Type": "text/plain"})
    assert as_form.status_code == 415 and password not in as_form.text
    headerless = browser(local).post(
        f"{codec_routes.COOKIE_PATH}/decode",
        content=encrypted,
        headers={"Content-Type": "application/json", "Cookie": f"{codec_routes.COOKIE}={cookie}"},
    )
    assert headerless.status_code == 400 and "X-Namespace" in headerless.text
    assert ui_decode(local, encrypted, cookie, Origin="http://evil.example").status_code == 403
    assert ui_decode(local, encrypted, cookie, **{"X-Namespace": "another"}).status_code == 404

    status_page = browser(local).get(f"{codec_routes.COOKIE_PATH}/login", headers={"Cookie": f"{codec_routes.COOKIE}={cookie}"})
    assert "Signed in" in status_page.text and "Sign out" in status_page.text and project.names["admin"] in status_page.text

    signed_out = browser(local).post(
        f"{codec_routes.COOKIE_PATH}/logout", headers={"Origin": BASE_URL, "Cookie": f"{codec_routes.COOKIE}={cookie}"}
    )
    assert signed_out.status_code == 303
    cleared = signed_out.headers["set-cookie"]
    assert cleared.startswith(f"{codec_routes.COOKIE}=") and ("Max-Age=0" in cleared or "expires=" in cleared.lower())
    assert f"Path={codec_routes.COOKIE_PATH}" in cleared


def test_only_an_admin_token_posted_from_the_page_itself_signs_in(local, project):
    wrong = sign_in(local, "cvy_not-a-token")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers and "cvy_not-a-token" not in wrong.text
    for role in ("viewer", "deployer"):
        not_admin = sign_in(local, project.tokens[role])
        assert not_admin.status_code == 403 and "set-cookie" not in not_admin.headers, role
        assert project.tokens[role] not in not_admin.text
    cross_site = sign_in(local, project.tokens["admin"], origin="http://evil.example")
    assert cross_site.status_code == 403 and "set-cookie" not in cross_site.headers
    empty = sign_in(local, "")
    assert empty.status_code == 400 and "set-cookie" not in empty.headers
    # A browser that sends no Origin (an old one, or a same-origin GET-then-POST) may sign in.
    assert sign_in(local, project.tokens["admin"], origin=None).status_code == 303


def test_the_session_cookie_is_the_signature_the_api_makes(local, project):
    cookie = sign_in(local, project.tokens["admin"]).cookies[codec_routes.COOKIE]
    version, token_id, expires, mac = cookie.split(".")
    assert version == codec_routes.SESSION_VERSION and token_id.startswith("tok_")
    assert abs(int(expires) - (time.time() + local.settings.codec_session_ttl_seconds)) < 60
    key = load_keyring(local.settings).derive("codec-session")
    assert codec_routes.sign_session(key, token_id, int(expires)) == cookie
    assert codec_routes.session_token_id(key, cookie, time.time()) == token_id
    assert codec_routes.session_token_id(key, cookie, int(expires)) is None, "expired at its expiry"


def test_forged_expired_and_revoked_codec_sessions_are_refused(local, project, encrypted):
    token, password = project.tokens["admin"], SECRET["spec"]["env"]["DATABASE_URL"]
    cookie = sign_in(local, token).cookies[codec_routes.COOKIE]
    assert ui_decode(local, encrypted, cookie).status_code == 200
    version, token_id, expires, mac = cookie.split(".")

    key = load_keyring(local.settings).derive("codec-session")
    forged = [
        codec_routes.sign_session(key, token_id, int(time.time()) - 1),  # expired
        f"{version}.{token_id}.{int(expires) + 86400}.{mac}",  # a longer life under the old signature
        f"{version}.tok_000000000000.{expires}.{mac}",  # another token's id
        codec_routes.sign_session(key, "tok_000000000000", int(expires)),  # a token that does not exist
        codec_routes.sign_session(b"k" * 32, token_id, int(expires)),  # signed with a key the API lacks
        f"s0.{token_id}.{expires}.{mac}",  # another version
        "garbage",
        "",
        f"{version}.{token_id}.{expires}.\u00e9",  # not ASCII: refused, not a 500
        f"{version}.{token_id}.\u00b2.{mac}",  # a digit only to str.isdigit
        f"{cookie}.extra",
    ]
    for value in forged:
        refused = ui_decode(local, encrypted, value)
        assert refused.status_code == 401, (value, refused.text)
        assert password not in refused.text

    # A session naming a viewer's token, though signed with the API's key, decodes nothing.
    with_viewer = codec_routes.sign_session(key, token_id_of(local, project.tokens["viewer"]), int(expires))
    assert ui_decode(local, encrypted, with_viewer).status_code == 403

    # Revoking the admin token ends its sessions.
    revoke(local.settings, token)
    revoked = ui_decode(local, encrypted, cookie)
    assert revoked.status_code == 401 and "revoked" in revoked.text
