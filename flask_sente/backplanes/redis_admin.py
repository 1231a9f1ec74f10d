"""The admin dashboard over Redis: one question to every process, every answer back.

The asking process PUBLISHes ``[its node, ask id, ask]`` on ``{prefix}:admin``, which every
process's subscriber hears (its own included); each answers with its report on the asker's
channel ``{prefix}:admin:{node}``. PUBLISH returns how many subscribers heard the question,
so the asker knows how many answers to wait for, and how many did not come in time.

Nothing is stored and nothing runs while no dashboard is open: the two channels cost a
subscription each and carry no message.
"""
from __future__ import annotations

import logging

import gevent.event

from ..exceptions import BackplaneError
from . import redis_scripts as rs
from .base import AdminAsk, AdminReport
from .common import BackplaneBase, new_epoch
from .redis_link import RedisLink

logger = logging.getLogger("flask_sente")


class _Gathering:
    """The answers to one question, as they come."""

    def __init__(self) -> None:
        self.reports: list[AdminReport] = []
        self.expected: int | None = None
        self.done = gevent.event.Event()

    def add(self, report: AdminReport) -> None:
        self.reports.append(report)
        if self.expected is not None and len(self.reports) >= self.expected:
            self.done.set()


class AdminChannel:
    """See the module docstring. ``on_message`` is called by the backplane's subscriber
    for the :attr:`channels`."""

    def __init__(self, link: RedisLink, home: BackplaneBase) -> None:
        self.link = link
        self.home = home
        self.ask_channel = f"{link.prefix}:admin"
        self.reply_channel = f"{link.prefix}:admin:{link.node}"
        self.channels = (self.ask_channel, self.reply_channel)
        self._pending: dict[str, _Gathering] = {}

    def gather(self, ask: AdminAsk, timeout: float) -> tuple[list[AdminReport], int]:
        ask_id = new_epoch()
        gathering = self._pending[ask_id] = _Gathering()
        try:
            with self.link.calling():
                heard = int(self.link.client.publish(
                    self.ask_channel, rs.pack_event([self.link.node, ask_id, ask])))
            gathering.expected = heard
            if len(gathering.reports) < heard:
                gathering.done.wait(timeout)
            reports = list(gathering.reports)
            return reports, max(0, heard - len(reports))
        finally:
            del self._pending[ask_id]

    def on_message(self, channel: str, data: bytes) -> None:
        """A question (answered at once, from the subscriber: a report is a walk over this
        process's tables, and one PUBLISH) or an answer to one of this process's."""
        try:
            if channel == self.reply_channel:
                ask_id, report = rs.unpack_event(data)
                gathering = self._pending.get(ask_id)
                if gathering is not None:
                    gathering.add(report)
                return
            node, ask_id, ask = rs.unpack_event(data)
            listener = self.home.listener
            if listener is None:
                return
            report = listener.admin_report(ask)
            with self.link.calling():
                self.link.client.publish(f"{self.link.prefix}:admin:{node}",
                                         rs.pack_event([ask_id, report]))
        except BackplaneError:  # Redis went away: the asker counts this process missing
            pass
        except Exception:  # another process's garbage must not end the subscription
            logger.exception("Redis backplane: an admin dashboard message could not be read")
