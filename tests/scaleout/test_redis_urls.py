"""Reading backplane URLs: every topology's form, and a clear ConfigError for bad ones
(never a password echoed back). No Redis needed: nothing here connects."""
from __future__ import annotations

import pytest
from flask import Flask

from flask_sente import Sente
from flask_sente.backplanes.redis_connect import parse_url
from flask_sente.exceptions import ConfigError


def test_a_single_redis_keeps_its_url_without_the_prefix():
    target = parse_url("redis://:pw@10.0.0.1:6380/2?prefix=app&health_check_interval=5")
    assert (target.kind, target.prefix) == ("single", "app")
    assert target.url == "redis://:pw@10.0.0.1:6380/2?health_check_interval=5"
    assert parse_url("unix:///run/redis.sock?db=1").prefix == "sente"
    assert parse_url("rediss://h").kind == "single"


def test_sentinel_urls_name_the_sentinels_the_service_and_the_db():
    target = parse_url("redis+sentinel://s3cret@a:26380,b,[::1]:26381/mymaster/3?prefix=x")
    assert target.kind == "sentinel"
    assert target.hosts == (("a", 26380), ("b", 26379), ("::1", 26381))
    assert (target.service, target.db, target.prefix) == ("mymaster", 3, "x")
    assert (target.username, target.password) == (None, "s3cret")
    full = parse_url("redis+sentinel://u:p%40ss@a/m?sentinel_password=sp")
    assert (full.username, full.password, full.sentinel_password, full.db) == \
        ("u", "p@ss", "sp", 0)


def test_cluster_urls_make_the_prefix_one_hash_tag():
    target = parse_url("redis+cluster://a:7000,b:7001")
    assert target.kind == "cluster"
    assert target.hosts == (("a", 7000), ("b", 7001))
    assert target.prefix == "{sente}"
    assert parse_url("redis+cluster://a?prefix=shop").prefix == "{shop}"
    assert parse_url("redis+cluster://a?prefix={shop}").prefix == "{shop}"
    assert parse_url("redis+cluster://a", prefix="b").prefix == "{b}"


@pytest.mark.parametrize(("url", "why"), [
    ("localhost:6379", "not a URL"),
    ("http://localhost:6379", "unknown scheme"),
    ("redis://h?prefix=", "prefix= is empty"),
    ("redis+sentinel://a:26379", "/service_name"),
    ("redis+sentinel://a:26379/m/x", "not a number"),
    ("redis+sentinel://a:26379/m/0/extra", "/service_name"),
    ("redis+sentinel://a:port/m", "not a number"),
    ("redis+sentinel://a:99999/m", "out of range"),
    ("redis+sentinel://a,:1/m", "without a host"),
    ("redis+sentinel:///m", "no host"),
    ("redis+sentinel://a/m?ssl=true", "unknown parameter(s) ssl"),
    ("redis+cluster://a:7000/0", "no database number"),
    ("redis+cluster://a:7000?prefix=a{b", "hash tag"),
    ("redis+sentinel://[::1/m", "Invalid IPv6 URL"),
    ("redis+sentinel://a:1:2/m", "in brackets"),
    ("redis+cluster://@", "no host"),
])
def test_bad_urls_say_what_is_wrong(url, why):
    with pytest.raises(ConfigError, match=r"(?s)" + why.replace("(", r"\(").replace(")", r"\)")):
        parse_url(url)


def test_a_bad_url_never_echoes_its_password():
    for url in ("redis+sentinel://user:hunter2@a:26379", "redis+cluster://hunter2@a/0"):
        with pytest.raises(ConfigError) as caught:
            parse_url(url)
        assert "hunter2" not in str(caught.value)
        assert "://***@a" in str(caught.value)


def test_the_app_refuses_a_bad_backplane_url_at_init():
    with pytest.raises(ConfigError, match="service_name"):
        Sente(Flask(__name__), backplane="redis+sentinel://a:26379")
