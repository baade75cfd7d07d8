"""The API's short reads have threads of their own (api.deps.read_off_loop):
with every thread of the pool that runs writes and plain routes taken (a
burst of creates queued on the database), the caller's token is still read
and a list still answers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from anyio import to_thread


def test_a_list_answers_while_every_write_thread_is_taken(local, project):
    app = project.admin.create_app()
    # The requests of the app's own client run on the loop whose threads are taken.
    portal = local.http.portal
    viewer = {"Authorization": f"Bearer {project.tokens['viewer']}"}
    limiter = portal.call(to_thread.current_default_thread_limiter)
    release = threading.Event()
    holders = [portal.start_task_soon(to_thread.run_sync, release.wait) for _ in range(int(limiter.total_tokens))]
    asking = ThreadPoolExecutor(1)
    try:
        while portal.call(lambda: limiter.borrowed_tokens) < limiter.total_tokens:
            release.wait(0.01)
        answer = asking.submit(local.http.get, "/api/v1/apps?limit=50", headers=viewer)
        # Held behind the taken threads, it would answer only after release.
        listed = answer.result(timeout=30)
        assert not release.is_set()
    finally:
        release.set()
        asking.shutdown()
        for holder in holders:
            holder.result(timeout=30)
    assert listed.status_code == 200, listed.text
    assert [a["id"] for a in listed.json()] == [app["id"]]


def test_more_readers_at_once_than_read_threads_all_answer(local, project):
    """Readers beyond `api_read_threads` wait their turn, none is refused or
    lost; a crowd with a bad token among them gets its 401s meanwhile."""
    app = project.admin.create_app()
    good = {"Authorization": f"Bearer {project.tokens['viewer']}"}
    bad = {"Authorization": "Bearer not-a-token"}
    crowd = 4 * local.settings.api_read_threads
    with ThreadPoolExecutor(crowd) as pool:
        answers = list(pool.map(lambda i: local.http.get("/api/v1/apps?limit=50", headers=bad if i % 4 == 0 else good), range(crowd)))
    for i, answer in enumerate(answers):
        if i % 4 == 0:
            assert answer.status_code == 401 and "not-a-token" not in answer.text
        else:
            assert answer.status_code == 200 and [a["id"] for a in answer.json()] == [app["id"]]
