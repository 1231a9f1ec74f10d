import pytest

from demo.store import MAX_TEXT, StoreError, TodoStore


def test_add_toggle_edit_delete():
    store = TodoStore()
    item = store.add("  buy   milk ", "ada")
    assert (item.id, item.text, item.done, item.author) == (1, "buy milk", False, "ada")
    assert store.toggle(1).done is True
    assert store.edit(1, "buy oat milk").text == "buy oat milk"
    assert [t.id for t in store.all()] == [1]
    assert store.delete(1).id == 1
    assert store.all() == []


def test_ids_keep_growing_after_deletes():
    store = TodoStore()
    store.add("a", "x")
    store.delete(1)
    assert store.add("b", "x").id == 2


@pytest.mark.parametrize("text", ["", "   ", None, 5, "x" * (MAX_TEXT + 1)])
def test_bad_text_is_refused(text):
    with pytest.raises(StoreError):
        TodoStore().add(text, "x")


@pytest.mark.parametrize("item_id", [99, "1", None, 1.0])
def test_unknown_ids_are_refused(item_id):
    store = TodoStore()
    store.add("a", "x")
    with pytest.raises(StoreError, match="no todo"):
        store.toggle(item_id)
