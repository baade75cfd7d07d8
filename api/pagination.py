"""limit/cursor pagination. Bodies stay plain JSON arrays (as in the contract);
the next page's cursor comes in the `X-Next-Cursor` header and a `Link` header."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Sequence, TypeVar

from fastapi import HTTPException, Query, Request, Response

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page (1-200)")]
Cursor = Annotated[str | None, Query(description="The X-Next-Cursor of the previous page")]
DEFAULT_LIMIT = 50


def decode(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": "not a cursor this API gave out", "type": "value_error"}]) from exc


def encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def finish(items: Sequence[T], limit: int, request: Request, response: Response, next_key) -> list[T]:
    """`items` holds up to limit+1 rows; trim to limit and announce the next cursor."""
    page = list(items[:limit])
    if len(items) > limit and page:
        cursor = encode(next_key(page[-1]))
        response.headers["X-Next-Cursor"] = cursor
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor, limit=limit)}>; rel="next"'
    return page
