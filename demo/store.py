"""Todo storage: lists in memory (no I/O, no Flask, so it is unit-tested on its own) or in
Redis for the demo on several workers.

Every change returns the item as it now is, so the caller can both reply to the author and
push the same value to everyone else. :class:`TodoLists` holds the shared list everyone
sees, the named lists users join and each user's own list (:func:`own_list`).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import typing as t

MAX_TEXT = 200
#: The everyone's list: ``TodoLists.get(MAIN)``.
MAIN = ""
#: Names of the lists users join (``list/<name>`` topics): short, and safe in a URL and a key.
LIST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,23}")
#: A user's own list is named ``@<uid>``: no named list starts so (see :data:`LIST_NAME`).
OWN = "@"


def own_list(uid: t.Any) -> str:
    """The name of ``uid``'s own list (the todos shared with them land there)."""
    return OWN + str(uid)


class StoreError(ValueError):
    """A change that cannot be made (unknown id, empty or too long text)."""


@dataclasses.dataclass
class Todo:
    id: int
    text: str
    done: bool
    author: str

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


class TodoStore:
    """A shared todo list, ordered by creation."""

    def __init__(self) -> None:
        self._items: dict[int, Todo] = {}
        self._ids = itertools.count(1)

    def all(self) -> list[Todo]:
        return list(self._items.values())

    def add(self, text: t.Any, author: str) -> Todo:
        item = Todo(next(self._ids), _clean(text), False, author)
        self._items[item.id] = item
        return item

    def toggle(self, item_id: t.Any) -> Todo:
        item = self._get(item_id)
        item.done = not item.done
        return item

    def edit(self, item_id: t.Any, text: t.Any) -> Todo:
        item = self._get(item_id)
        item.text = _clean(text)
        return item

    def delete(self, item_id: t.Any) -> Todo:
        item = self._get(item_id)
        del self._items[item.id]
        return item

    def _get(self, item_id: t.Any) -> Todo:
        if not isinstance(item_id, int) or item_id not in self._items:
            raise StoreError(f"no todo with id {item_id!r}")
        return self._items[item_id]


def _clean(text: t.Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise StoreError("a todo needs some text")
    text = " ".join(text.split())
    if len(text) > MAX_TEXT:
        raise StoreError(f"a todo is at most {MAX_TEXT} characters")
    return text


class RedisTodoStore:
    """The same list in Redis, for the demo under ``gunicorn -w 3``: every worker sees one
    list. Each change is one Lua script, so two workers changing the same todo cannot lose
    an update."""

    _CHANGE = """
    local raw = redis.call('HGET', KEYS[1], ARGV[1])
    if not raw then return false end
    local item = cjson.decode(raw)
    if ARGV[2] == 'toggle' then item.done = not item.done
    elseif ARGV[2] == 'edit' then item.text = ARGV[3]
    elseif ARGV[2] == 'delete' then redis.call('HDEL', KEYS[1], ARGV[1]); return raw end
    raw = cjson.encode(item)
    redis.call('HSET', KEYS[1], ARGV[1], raw)
    return raw
    """

    def __init__(self, client: t.Any, key: str = "demo:todos") -> None:
        """``client``: a ``redis.Redis`` (shared by the lists)."""
        self._redis = client
        self._key = key
        self._change_script = self._redis.register_script(self._CHANGE)

    def all(self) -> list[Todo]:
        items = [_todo(raw) for raw in self._redis.hvals(self._key)]
        return sorted(items, key=lambda item: item.id)

    def add(self, text: t.Any, author: str) -> Todo:
        item = Todo(int(self._redis.incr(self._key + ":ids")), _clean(text), False, author)
        self._redis.hset(self._key, str(item.id), json.dumps(item.as_dict()))
        return item

    def toggle(self, item_id: t.Any) -> Todo:
        return self._change(item_id, "toggle")

    def edit(self, item_id: t.Any, text: t.Any) -> Todo:
        return self._change(item_id, "edit", _clean(text))

    def delete(self, item_id: t.Any) -> Todo:
        return self._change(item_id, "delete")

    def _change(self, item_id: t.Any, what: str, text: str = "") -> Todo:
        if not isinstance(item_id, int):
            raise StoreError(f"no todo with id {item_id!r}")
        raw = self._change_script(keys=[self._key], args=[item_id, what, text])
        if raw is None:
            raise StoreError(f"no todo with id {item_id!r}")
        return _todo(raw)


def _todo(raw: bytes | str) -> Todo:
    data = json.loads(raw)
    return Todo(int(data["id"]), data["text"], bool(data["done"]), data["author"])


class TodoLists:
    """The shared list (``MAIN``) and the named lists, each made on first use by ``make``
    (``make(name)``: a :class:`TodoStore` or a :class:`RedisTodoStore`)."""

    def __init__(self, make: t.Callable[[str], TodoStore | RedisTodoStore]) -> None:
        self._make = make
        self._lists: dict[str, TodoStore | RedisTodoStore] = {}

    def get(self, name: str) -> TodoStore | RedisTodoStore:
        """The shared list (``MAIN``), a user's own list (``@<uid>``, :func:`own_list`) or
        the named list ``name``."""
        if name == MAIN or (name.startswith(OWN) and len(name) > len(OWN)):
            return self._store(name)
        return self.named(name)

    def named(self, name: str) -> TodoStore | RedisTodoStore:
        """The named list ``name``; raises StoreError for a name :data:`LIST_NAME` refuses."""
        if not LIST_NAME.fullmatch(name):
            raise StoreError(BAD_LIST_NAME)
        return self._store(name)

    def _store(self, name: str) -> TodoStore | RedisTodoStore:
        store = self._lists.get(name)
        if store is None:
            store = self._lists[name] = self._make(name)
        return store


#: Why a list name was refused (also the join's refusal reason the page shows).
BAD_LIST_NAME = "a list name is 1 to 24 lowercase letters, digits or dashes"


def memory_lists() -> TodoLists:
    return TodoLists(lambda name: TodoStore())


def redis_lists(url: str) -> TodoLists:
    """Lists in Redis, one connection pool for all: the shared one under ``demo:todos`` (as
    before lists), the others under ``demo:todos:<name>`` (a user's own: ``demo:todos:@<uid>``)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return TodoLists(lambda name: RedisTodoStore(client, f"demo:todos:{name}" if name
                                                 else "demo:todos"))
