"""limit/cursor pagination. Bodies stay plain JSON arrays (as in the contract);
the next page's cursor comes in the `X-Next-Cursor` header and a `Link` header."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Sequence, TypeVar

from fastapi import Depends, HTTPException, Query, Request, Response

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


@dataclass
class Page:
    """The page a list route was asked for: fetch `limit + 1` rows after `after`, then `finish`."""

    request: Request
    response: Response
    limit: int
    after: Any

    def finish(self, items: Sequence[T], next_key: Callable[[T], Any]) -> list[T]:
        """Trim to the limit and announce the next page's cursor."""
        page = list(items[: self.limit])
        if len(items) > self.limit and page:
            cursor = encode(next_key(page[-1]))
            self.response.headers["X-Next-Cursor"] = cursor
            self.response.headers["Link"] = f'<{self.request.url.include_query_params(cursor=cursor, limit=self.limit)}>; rel="next"'
        return page


def get_page(request: Request, response: Response, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page:
    return Page(request, response, limit, decode(cursor))


PageDep = Annotated[Page, Depends(get_page)]
