"""The demo's lists in Redis (``make demo-cluster``): two processes' registries on one
redis-server see the same named lists, each under a key of its own, and the shared list
keeps the key it had before there were named lists."""
from __future__ import annotations

import redis

from demo.store import MAIN, redis_lists


def test_named_lists_are_shared_through_redis_under_their_own_keys(redis_server):
    worker1, worker2 = redis_lists(redis_server.url), redis_lists(redis_server.url)
    worker1.named("work").add("ship it", "ada")
    worker1.get(MAIN).add("for everyone", "ada")
    assert [t.text for t in worker2.named("work").all()] == ["ship it"]
    assert [t.text for t in worker2.get(MAIN).all()] == ["for everyone"]
    assert worker2.named("home").all() == []
    toggled = worker2.named("work").toggle(1)
    assert toggled.done and worker1.named("work").all()[0].done
    with redis.Redis.from_url(redis_server.url) as admin:
        keys = admin.keys("demo:todos*")
    assert {k.decode() for k in keys} == {"demo:todos", "demo:todos:ids",
                                          "demo:todos:work", "demo:todos:work:ids"}
