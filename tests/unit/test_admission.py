"""Writes take turns, reads never wait for them (api/admission.py), driven
through the ASGI layer on a real event loop."""

from __future__ import annotations

import asyncio

from api.admission import WriteTurns, WriteTurnsMiddleware


class App:
    """An ASGI app that holds every write until it is let go, and notes what it saw."""

    def __init__(self) -> None:
        self.inside: list[str] = []
        self.most_inside = 0
        self.bodies: dict[str, bytes] = {}
        self.go: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send) -> None:
        name = scope["path"]
        message = await receive()
        self.bodies[name] = message.get("body", b"")
        if name == "/broken":
            raise RuntimeError("the route failed")
        if scope["method"] != "GET":
            self.inside.append(name)
            self.most_inside = max(self.most_inside, len(self.inside))
            await self.go.setdefault(name, asyncio.Event()).wait()
            self.inside.remove(name)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def request(layer, method: str, path: str, chunks: list[bytes]):
    """Run one request through `layer`; returns its task and the status list it fills."""
    statuses: list[int] = []
    queue: asyncio.Queue = asyncio.Queue()
    for i, chunk in enumerate(chunks):
        queue.put_nowait({"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1})

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    return asyncio.ensure_future(layer(scope, queue.get, send)), statuses, queue


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_writes_take_turns_in_arrival_order_and_reads_pass_them():
    async def scenario() -> None:
        app = App()
        turns = WriteTurns(2)
        layer = WriteTurnsMiddleware(app, turns)
        writes = [request(layer, "POST", f"/w{i}", [b'{"n":', b"%d}" % i]) for i in range(6)]
        await settle()
        # Two past their turn, four parked before the app saw them.
        assert app.inside == ["/w0", "/w1"] and turns.running == 2 and turns.waiting == 4
        # A read goes through while the writes wait.
        read, read_status, _ = request(layer, "GET", "/list", [b""])
        await asyncio.wait_for(read, 1)
        assert read_status == [200]
        order = []
        for i in range(6):
            await settle()
            name = f"/w{i}"
            assert name in app.inside, (name, app.inside)
            order.append(name)
            app.go.setdefault(name, asyncio.Event()).set()
        await asyncio.wait_for(asyncio.gather(*(task for task, _, _ in writes)), 1)
        assert order == [f"/w{i}" for i in range(6)]
        assert app.most_inside == 2 and turns.running == 0 and turns.waiting == 0
        # Each write's body reached the app whole, in one message.
        assert all(app.bodies[f"/w{i}"] == b'{"n":%d}' % i for i in range(6))
        assert all(status == [200] for _, status, _ in writes)

    asyncio.run(scenario())


def test_a_write_whose_body_is_still_coming_holds_no_turn():
    async def scenario() -> None:
        app = App()
        turns = WriteTurns(1)
        layer = WriteTurnsMiddleware(app, turns)
        # The first client sends half its body and stalls; the second's write runs.
        slow, _, slow_queue = request(layer, "POST", "/slow", [])
        slow_queue.put_nowait({"type": "http.request", "body": b"{", "more_body": True})
        quick, quick_status, _ = request(layer, "POST", "/quick", [b"{}"])
        await settle()
        assert app.inside == ["/quick"] and turns.running == 1
        app.go.setdefault("/quick", asyncio.Event()).set()
        await asyncio.wait_for(quick, 1)
        assert quick_status == [200] and turns.running == 0
        # The stalled client goes away: it never took a turn.
        slow_queue.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(slow, 1)
        assert "/slow" not in app.bodies and turns.running == 0 and turns.waiting == 0

    asyncio.run(scenario())


def test_uploads_and_the_codec_take_no_turn():
    async def scenario() -> None:
        app = App()
        turns = WriteTurns(1)
        layer = WriteTurnsMiddleware(app, turns)
        held, _, _ = request(layer, "POST", "/api/v1/apps/app_1", [b"{}"])
        await settle()
        upload, _, _ = request(layer, "POST", "/api/v1/apps/app_1/build", [b"tar"])
        codec, _, _ = request(layer, "POST", "/api/v1/codec/decode", [b"{}"])
        await settle()
        # Both reached the app though the one turn is taken.
        assert set(app.inside) == {"/api/v1/apps/app_1", "/api/v1/apps/app_1/build", "/api/v1/codec/decode"}
        assert turns.running == 1 and turns.waiting == 0
        for name in list(app.inside):
            app.go.setdefault(name, asyncio.Event()).set()
        await asyncio.wait_for(asyncio.gather(held, upload, codec), 1)

    asyncio.run(scenario())


def test_a_turn_ends_after_its_time_whatever_the_write_waits_for():
    """A write that waits on something slow (Temporal away, a route waiting
    for a workflow) goes on without its turn; the next write goes in."""

    async def scenario() -> None:
        app = App()
        turns = WriteTurns(1, turn_seconds=0.05)
        layer = WriteTurnsMiddleware(app, turns)
        slow, slow_status, _ = request(layer, "POST", "/slow", [b"{}"])
        nxt, _, _ = request(layer, "POST", "/next", [b"{}"])
        await settle()
        assert app.inside == ["/slow"] and turns.waiting == 1
        await asyncio.sleep(0.1)
        assert app.inside == ["/slow", "/next"] and turns.waiting == 0
        for name in ("/slow", "/next"):
            app.go.setdefault(name, asyncio.Event()).set()
        await asyncio.wait_for(asyncio.gather(slow, nxt), 1)
        # The late answer did not give back a second turn.
        assert slow_status == [200] and turns.running == 0 and turns._free[asyncio.get_running_loop()]._value == 1

    asyncio.run(scenario())


def test_a_failed_write_and_a_caller_gone_while_waiting_give_their_turns_back():
    async def scenario() -> None:
        app = App()
        turns = WriteTurns(1)
        layer = WriteTurnsMiddleware(app, turns)
        held, _, _ = request(layer, "POST", "/held", [b"{}"])
        gone, _, _ = request(layer, "POST", "/gone", [b"{}"])
        broken, _, _ = request(layer, "POST", "/broken", [b"{}"])
        await settle()
        assert turns.running == 1 and turns.waiting == 2
        gone.cancel()  # the server drops a request whose connection closed
        await settle()
        assert turns.waiting == 1 and "/gone" not in app.bodies
        app.go.setdefault("/held", asyncio.Event()).set()
        await asyncio.wait_for(held, 1)
        try:
            await asyncio.wait_for(broken, 1)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the route's failure goes up")
        assert turns.running == 0 and turns.waiting == 0
        after, after_status, _ = request(layer, "POST", "/after", [b"{}"])
        await settle()
        assert app.inside == ["/after"]
        app.go.setdefault("/after", asyncio.Event()).set()
        await asyncio.wait_for(after, 1)
        assert after_status == [200]

    asyncio.run(scenario())
