"""Credentials inside URLs are masked wherever a URL is shown (pure).

The API keeps the URL as given (the worker needs it to fetch the source), and
every place that shows one to a person or writes it to a log, an answer, an
audit entry or a progress step passes it through `mask_url_credentials`.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ - the authority ends at the first / ? # or space, and its
# userinfo at its last @ (an unencoded @ in a password stays masked).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
# Schemes whose bare user name is an account name, not a token.
_ACCOUNT_SCHEMES = ("ssh://", "git+ssh://", "ssh+git://")


def _mask(match: re.Match[str]) -> str:
    scheme, userinfo = match["scheme"], match["userinfo"]
    user, has_password, _ = userinfo.partition(":")
    if has_password:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower() in _ACCOUNT_SCHEMES:
        return match.group(0)
    # https://<token>@host is how tokens are commonly put into git URLs.
    return f"{scheme}{MASK}@"


def _secrets_of(url: str) -> list[str]:
    """The parts of `url`'s userinfo that `_mask` hides."""
    match = _USERINFO.search(url)
    if match is None:
        return []
    masked = _mask(match)[len(match["scheme"]) : -1]
    user, has_password, password = match["userinfo"].partition(":")
    if has_password:
        return [password] if password else []
    return [user] if user and masked == MASK else []


def mask_url_credentials(text: str | None, url: str | None = None) -> str | None:
    """`https://user:secret@host/x` → `https://user:***@host/x`, also inside longer text.

    With `url`, its secret is also masked wherever it appears on its own: git
    repeats a git:// URL's credentials in its errors without the scheme."""
    if text is None:
        return None
    text = _USERINFO.sub(_mask, text)
    for secret in _secrets_of(url or ""):
        text = text.replace(secret, MASK)
    return text
