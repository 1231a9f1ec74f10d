"""In-memory todo storage: no I/O, no Flask, so it is unit-tested on its own.

Every change returns the item as it now is, so the caller can both reply to the author and
push the same value to everyone else.
"""
from __future__ import annotations

import dataclasses
import itertools
import typing as t

MAX_TEXT = 200


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
