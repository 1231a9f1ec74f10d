"""The admin dashboard's picture of a deployment, without I/O: what it asks, what each
process answers, and how the answers become one reply.

The dashboard asks once a second for *one page* of users and of topics. The asking process
picks that page from what it already knows cluster-wide (the connected uids and the topic
members a shared backplane mirrors in every process), then asks every process — through the
backplane's :meth:`~flask_sente.backplanes.base.AdminRelay.gather` — for its own part: its
counters and the connections it holds of the users on the page. So a reply is as big as a
page, whatever the number of users, and each process's share of the work is as small: the
server sends aggregates, not the world.

Counters are cumulative (events in and out since the process started, publishes per topic);
the page turns consecutive snapshots into rates, so no process keeps a history for a
dashboard that may never open.

This module may import only the standard library.
"""
from __future__ import annotations

import dataclasses
import typing as t

#: Rows one page may ask for at most (and what it gets when it does not say).
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
#: Recent refusals and errors kept per process, and sent in one reply at most.
RECENT_SIZE = 50


class QueryError(ValueError):
    """A dashboard query that is not the shape docs/admin.md gives."""


@dataclasses.dataclass(frozen=True)
class PageQuery:
    """One list's page: rows whose display string contains ``search`` (any case)."""

    search: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, value: t.Any, name: str) -> PageQuery:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise QueryError(f"{name} must be an object with search, offset and limit")
        search = value.get("search", "")
        offset = value.get("offset", 0)
        limit = value.get("limit", DEFAULT_LIMIT)
        if not isinstance(search, str) or len(search) > 200:
            raise QueryError(f"{name}.search must be a string of at most 200 characters")
        for field, number in (("offset", offset), ("limit", limit)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise QueryError(f"{name}.{field} must be an integer >= 0")
        return cls(search, offset, min(limit, MAX_LIMIT))

    def select(self, items: t.Iterable[t.Any], label: t.Callable[[t.Any], str] = str
               ) -> tuple[int, list[t.Any]]:
        """The number of items that match, and this page of them, sorted by label."""
        needle = self.search.casefold()
        matching = sorted((label(item), item) for item in items
                          if needle in label(item).casefold())
        return len(matching), [item for _, item in matching[self.offset:self.offset + self.limit]]


@dataclasses.dataclass(frozen=True)
class Query:
    """What the dashboard asks for: a page of users and a page of topics."""

    users: PageQuery = PageQuery()
    topics: PageQuery = PageQuery()

    @classmethod
    def parse(cls, data: t.Any) -> Query:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise QueryError("the query must be an object: {users: {...}, topics: {...}}")
        return cls(PageQuery.parse(data.get("users"), "users"),
                   PageQuery.parse(data.get("topics"), "topics"))


def uid_key(uid: t.Any) -> str:
    """How the dashboard names a user in its actions: unique per uid (``42`` is not
    ``"42"``), a string whatever the uid is."""
    return repr(uid)


def label(uid: t.Any) -> str:
    """How the dashboard shows a user."""
    return uid if isinstance(uid, str) else str(uid)


def ask(users: t.Sequence[t.Any], topics: t.Sequence[str]) -> dict[str, t.Any]:
    """What every process is asked: its part of these users and topics. Each answers
    with its connections of the users by :func:`uid_key` (uids cross a shared backplane
    as themselves: a string or an integer)."""
    return {"users": list(users), "topics": list(topics)}


def merge(*, now: float, query: Query, uids: t.Collection[t.Any],
          topics: t.Mapping[str, int], reports: t.Sequence[dict[str, t.Any]],
          missing: int, users_page: tuple[int, list[t.Any]],
          topics_page: tuple[int, list[str]]) -> dict[str, t.Any]:
    """One reply from the processes' ``reports`` (see ``hub/inspect.py``) and what the
    asker knows cluster-wide: the connected ``uids`` and each topic's member count.

    ``users_page`` and ``topics_page`` are the pages the processes were asked about.
    """
    clients: dict[str, list[dict[str, t.Any]]] = {}
    publishes: dict[str, int] = {}
    recent: list[dict[str, t.Any]] = []
    processes = []
    for report in reports:
        processes.append(report["process"])
        for key, rows in report["users"].items():
            clients.setdefault(key, []).extend(rows)
        for topic, count in report["topics"].items():
            publishes[topic] = publishes.get(topic, 0) + count
        recent.extend(report["recent"])
    processes.sort(key=lambda p: (p["host"], p["pid"]))
    recent.sort(key=lambda r: r["t"], reverse=True)
    user_total, page_uids = users_page
    topic_total, page_topics = topics_page
    user_rows = []
    for uid in page_uids:
        key = uid_key(uid)
        held = sorted(clients.get(key, ()), key=lambda c: (c["since"], c["client_id"]))
        user_rows.append({"uid": label(uid), "key": key, "clients": held,
                          "topics": sorted({tp for c in held for tp in c["topics"]})})
    return {
        "now": now,
        "processes": processes,
        "missing": missing,
        "totals": {"users": len(uids),
                   "clients": sum(p["ws"] + p["ajax"] for p in processes),
                   "ws": sum(p["ws"] for p in processes),
                   "ajax": sum(p["ajax"] for p in processes),
                   "topics": len(topics)},
        "users": {"total": user_total, "offset": query.users.offset, "rows": user_rows},
        "topics": {"total": topic_total, "offset": query.topics.offset,
                   "rows": [{"topic": topic, "members": topics.get(topic, 0),
                             "publishes": publishes.get(topic, 0)} for topic in page_topics]},
        "recent": recent[:RECENT_SIZE],
    }
