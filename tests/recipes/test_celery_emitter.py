"""Recipe docs/recipes/celery-emitter.md: a Celery task pushes through the Emitter to a
client of a real gunicorn server on the Redis backplane; with Redis unreachable, the task
retries on BackplaneError and then fails instead of losing the push silently.

Two tests run Celery eagerly (``task_always_eager``): the task body runs in this process, as
it would in a worker, and Celery's retry machinery (``autoretry_for``) is the real one. The
others run a real Celery worker process, with the same Redis as its broker: a push back to
the user, and a room's messages published to its members.
"""
from __future__ import annotations

import os
import sys
import typing as t

import pytest
import reports_tasks
import requests
from celery.signals import task_retry

from flask_sente.client import Client
from flask_sente.exceptions import BackplaneError
from tests.helpers import Proc

from .conftest import EXAMPLES, TIMEOUT, page_token, wait_until


@pytest.fixture
def eager_tasks():
    """The recipe's Celery app, run eagerly against ``url`` (set by the test)."""
    conf = reports_tasks.celery.conf
    saved = {key: conf[key] for key in ("task_always_eager", "sente_backplane")}
    conf.task_always_eager = True
    try:
        yield conf
    finally:
        task = reports_tasks.build_report
        if task._emitter is not None:
            task._emitter.close()
            task._emitter = None
        conf.update(saved)


@pytest.fixture
def web_server(redis_server, tmp_path):
    """``reports_web`` under gunicorn with flask_sente's worker, on the test's Redis."""
    env = dict(os.environ, REDIS_URL=redis_server.url, SECRET_KEY="recipe test")
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "flask_sente.worker.SenteWorker",
                 "-b", "127.0.0.1:0", "-w", "1", "--graceful-timeout", "3",
                 "--no-control-socket", "--chdir", str(EXAMPLES), "reports_web:create_app()"],
                tmp_path, env)
    try:
        port = int(proc.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)").group(1))
        proc.wait_for(r"Booting worker")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.kill()


def test_a_task_pushes_to_a_client_of_the_web_server(web_server, redis_server, eager_tasks):
    eager_tasks.sente_backplane = redis_server.url
    with requests.Session() as http:
        token = page_token(web_server, http)
        with Client(web_server + "/chsk", cookies=http.cookies, csrf_token=token) as client:
            assert client.wait_open(TIMEOUT)
            result = reports_tasks.build_report.delay(client.state.uid, 7)
            assert result.successful(), result.traceback
            assert client.receive(timeout=TIMEOUT) == ("report/ready", {"id": 7, "rows": 70})


def test_the_task_retries_while_redis_is_unreachable_then_fails(redis_server, eager_tasks):
    eager_tasks.sente_backplane = redis_server.url
    redis_server.stop()
    retries: list[int] = []

    def count(request, **_):
        retries.append(request.retries)

    task_retry.connect(count, weak=False)
    try:
        result = reports_tasks.build_report.delay("ada", 7)
    finally:
        task_retry.disconnect(count)
    assert retries == [0, 1, 2, 3, 4]          # max_retries=5, each on BackplaneError
    assert result.failed() and isinstance(result.result, BackplaneError)


@pytest.fixture
def celery_worker(redis_server, tmp_path):
    """A real Celery worker process on the test's Redis (broker and backplane)."""
    env = dict(os.environ, REDIS_URL=redis_server.url)
    celery_log = tmp_path / "celery"
    celery_log.mkdir()
    proc = Proc([sys.executable, "-m", "celery", "--workdir", str(EXAMPLES), "-A",
                 "reports_tasks", "worker", "--pool=solo", "--without-mingle",
                 "--without-gossip", "--without-heartbeat", "--loglevel=INFO"],
                celery_log, env)
    try:
        proc.wait_for(r"celery@\S+ ready")
        yield proc
    finally:
        proc.terminate()
        proc.kill()


def test_the_handler_queues_a_task_whose_push_comes_back(web_server, celery_worker):
    with requests.Session() as http:
        token = page_token(web_server, http)
        with Client(web_server + "/chsk", cookies=http.cookies, csrf_token=token) as client:
            queued = client.call(("reports/build", 3), timeout=TIMEOUT)["queued"]
            assert client.receive(timeout=TIMEOUT) == ("report/ready", {"id": 3, "rows": 30})
    celery_worker.wait_for(rf"Task reports_tasks.build_report\[{queued}\] succeeded")


def test_a_real_worker_s_task_publishes_to_a_room_but_the_sender(web_server, celery_worker):
    """Rooms: ann (WebSocket) and bob (Ajax) join ``room/lobby`` on the gunicorn server;
    each ``room/post`` queues ``post_to_room``, and the Celery worker process publishes the
    message to the room through the Emitter. Bob gets ann's five messages once each, in the
    order she posted them (one solo worker runs the tasks in the order they were queued);
    ann, the sender, gets none of them — only bob's last one, published after them in the
    room's one order, so that nothing of hers can still be on its way.

    Shown to fail by dropping ``exclude_client_id`` in the task: bob got his own message."""
    clients: list[Client] = []
    got: dict[str, list[t.Any]] = {"ann": [], "bob": []}
    sessions = [requests.Session(), requests.Session()]
    try:
        for name, transport, http in (("ann", "ws", sessions[0]), ("bob", "ajax", sessions[1])):
            token = page_token(web_server, http)
            client = Client(web_server + "/chsk", type=transport, cookies=http.cookies,
                            csrf_token=token)
            clients.append(client)
            client.on_topic("room/lobby",
                            lambda event_id, data, name=name: got[name].append((event_id, data)))
            client.connect()
            assert client.wait_open(TIMEOUT)
            client.join("room/lobby", timeout=TIMEOUT)
        ann, bob = clients
        for n in range(5):
            ann.call(("room/post", {"room": "lobby", "text": f"ann {n}"}), timeout=TIMEOUT)
        bob.call(("room/post", {"room": "lobby", "text": "bob's"}), timeout=TIMEOUT)
        last = ("room/message", {"text": "bob's"})
        wait_until(lambda: len(got["bob"]) >= 5 and last in got["ann"], "the room's messages")
        assert got["bob"] == [("room/message", {"text": f"ann {n}"}) for n in range(5)]
        assert got["ann"] == [last]
    finally:
        for client in clients:
            client.close()
        for http in sessions:
            http.close()
    celery_worker.wait_for(r"(?s)(Task reports_tasks.post_to_room\[\S+\] succeeded.*){6}")
