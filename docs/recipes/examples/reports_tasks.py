"""Celery tasks that push to the users of a flask_sente app, through its Redis backplane.

A Celery worker is not the web app: it has no ``Sente`` object and no connections. The
:class:`~flask_sente.emitter.Emitter` writes into the same Redis logs ``sente.send`` uses,
so the push reaches every tab of the user on whichever web worker it is connected to; its
``publish`` reaches every member of a topic (a room) the same way. It needs redis-py only
(no Flask, no gevent), and it raises ``BackplaneError`` when Redis cannot be reached, which
Celery's ``autoretry_for`` turns into a retry instead of a lost push.

Start a worker with ``celery -A reports_tasks worker``.
"""
from __future__ import annotations

import os

from celery import Celery, Task

from flask_sente.emitter import Emitter
from flask_sente.exceptions import BackplaneError

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

celery = Celery("reports", broker=REDIS_URL)
# The web app's backplane option: the same Redis URL, ``?prefix=`` included if it has one.
celery.conf.sente_backplane = REDIS_URL


class PushTask(Task):
    """A task that can push: one Emitter per worker process, made on first use (so after
    the worker has forked), reused by every task of that process."""

    _emitter: Emitter | None = None

    @property
    def emitter(self) -> Emitter:
        if self._emitter is None:
            self._emitter = Emitter(self.app.conf.sente_backplane)
        return self._emitter


@celery.task(
    base=PushTask,
    bind=True,
    autoretry_for=(BackplaneError,),   # Redis down or unreachable: try again later ...
    retry_backoff=2,                   # ... within 2, 4, 8, 16, 32 s (random jitter) ...
    retry_backoff_max=60,
    max_retries=5,                     # ... then fail the task (and log it)
)
def build_report(self: PushTask, uid: str, report_id: int) -> dict[str, object]:
    report = {"id": report_id, "rows": report_id * 10}   # the slow work goes here
    # Reaches every tab of ``uid`` (both transports, any web worker). Keep what the event
    # says idempotent (an id, not "one more"): a retry after a reply lost on the way back
    # from Redis may deliver it twice.
    self.emitter.send(uid, ("report/ready", report))
    return report


@celery.task(base=PushTask, bind=True, autoretry_for=(BackplaneError,), retry_backoff=2,
             retry_backoff_max=60, max_retries=5)
def post_to_room(self: PushTask, room: str, text: str, sender: str | None = None) -> None:
    text = text.strip()[:500]                            # moderation, translation ... here
    # Reaches every member of the room (any web worker, both transports), in the room's
    # one order, but the sender's own tab (``sender`` is its client id), which already
    # shows the message.
    self.emitter.publish(f"room/{room}", ("room/message", {"text": text}),
                         exclude_client_id=sender)
