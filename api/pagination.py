"""limit/cursor pagination. Bodies stay plain JSON arrays (as in the contract).

Without `limit` a list is the whole list. With `limit` it is one page, and the
next page's cursor comes in the `X-Next-Cursor` header (and a `Link` header)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Query, Request, Response
from sqlalchemy import Select

T = TypeVar("T")
K = TypeVar("K", int, str)

Limit = Annotated[int | None, Query(ge=1, le=200, description="Items per page (1-200); without it, the whole list")]
Cursor = Annotated[str | None, Query(max_length=1024, description="The X-Next-Cursor of the previous page")]
# Cursors are ids, names or positions this API gave out: bounded, typed.
_MAX_INT = 2**53
_MAX_TEXT = 255


def _bad_cursor() -> HTTPException:
    return HTTPException(422, [{"loc": ["query", "cursor"], "msg": "not a cursor this list gave out", "type": "value_error"}])


def decode(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise _bad_cursor() from exc


def encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@dataclass
class Page:
    """The page a list route was asked for: `take` rows after `after(...)`, then `finish`."""

    request: Request
    response: Response
    limit: int | None
    cursor: Any

    def after(self, kind: type[K]) -> K | None:
        """The cursor's key, checked to be of the kind this list gives out."""
        value = self.cursor
        if value is None:
            return None
        if kind is int and type(value) is int and 0 <= value < _MAX_INT:
            return value  # type: ignore[return-value]
        if kind is str and type(value) is str and 0 < len(value) <= _MAX_TEXT:
            return value  # type: ignore[return-value]
        raise _bad_cursor()

    def take(self, query: Select) -> Select:
        return query if self.limit is None else query.limit(self.limit + 1)

    def window(self, items: Sequence[T], start: int) -> Sequence[T]:
        return items[start:] if self.limit is None else items[start : start + self.limit + 1]

    def finish(self, items: Sequence[T], next_key: Callable[[T], Any]) -> list[T]:
        """Trim to the limit and announce the next page's cursor."""
        if self.limit is None:
            return list(items)
        page = list(items[: self.limit])
        if len(items) > self.limit and page:
            cursor = encode(next_key(page[-1]))
            self.response.headers["X-Next-Cursor"] = cursor
            self.response.headers["Link"] = f'<{self.request.url.include_query_params(cursor=cursor, limit=self.limit)}>; rel="next"'
        return page


async def get_page(request: Request, response: Response, limit: Limit = None, cursor: Cursor = None) -> Page:
    return Page(request, response, limit, decode(cursor))


PageDep = Annotated[Page, Depends(get_page)]
