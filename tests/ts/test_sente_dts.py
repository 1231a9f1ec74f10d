"""sente.d.ts: served beside sente.js, complete, and right according to the TypeScript compiler.

``tsc --strict`` (installed into tests/ts/node_modules by ``make ts-deps``) compiles
usage.ts, which uses the whole API, and misuse.ts, whose every ``@ts-expect-error`` line
must be a type error — so declarations that are too loose fail as surely as wrong ones.
"""
from __future__ import annotations

import json
import pathlib
import re
import subprocess

import requests
from flask import Flask

from flask_sente import Sente
from flask_sente.testing import serve

HERE = pathlib.Path(__file__).resolve().parent
STATIC = HERE.parent.parent / "flask_sente" / "static"
DTS = STATIC / "sente.d.ts"
TSC = HERE / "node_modules" / ".bin" / "tsc"
TIMEOUT = 120


def _tsc(*args: str, cwd: pathlib.Path = HERE) -> subprocess.CompletedProcess[str]:
    assert TSC.exists(), "TypeScript is missing: run `make ts-deps` (make test does)"
    return subprocess.run([str(TSC), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def test_usage_compiles_and_every_misuse_is_a_type_error():
    result = _tsc("-p", "tsconfig.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_misuse_without_its_expect_error_fails_the_check(tmp_path):
    # The check has teeth: tsc really type-checks against sente.d.ts.
    (tmp_path / "bad.ts").write_text(
        f'/// <reference path="{DTS.as_posix()}" />\n'
        'Sente.connect({ keepAlive: 1000 });\n')
    result = _tsc("--noEmit", "--strict", "bad.ts", cwd=tmp_path)
    assert result.returncode != 0
    assert "keepAlive" in result.stdout


def _declared(block_start: str, indent: int) -> set[str]:
    """Names declared in the block of sente.d.ts that starts with ``block_start``."""
    text = DTS.read_text()
    start = text.index(block_start) + len(block_start)
    end = re.compile(rf"^ {{{indent - 2}}}}}", re.MULTILINE).search(text, start)
    assert end is not None
    body = text[start:end.start()]
    member = re.compile(rf"^ {{{indent}}}(?:readonly )?(\w+)\??[(<:]", re.MULTILINE)
    return set(member.findall(body))


def test_declarations_cover_every_public_name_of_sente_js():
    script = (
        "const S = require(process.argv[1]);"
        "const methods = Object.getOwnPropertyNames(S.ChannelSocket.prototype)"
        "  .filter((n) => !n.startsWith('_') && n !== 'constructor');"
        "console.log(JSON.stringify({top: Object.keys(S), protocol: Object.keys(S.protocol),"
        "  methods, close: Object.keys(S.CLOSE), defaults: Object.keys(S.DEFAULTS)}));")
    out = subprocess.run(["node", "-e", script, str(STATIC / "sente.js")], capture_output=True,
                         text=True, timeout=TIMEOUT, check=True).stdout
    js = json.loads(out)
    text = DTS.read_text()
    top = set(re.findall(r"^  (?:class|function|const) (\w+)", text, re.MULTILINE))
    assert set(js["top"]) <= top
    assert set(js["protocol"]) <= _declared("const protocol: {", 4)
    assert set(js["methods"]) <= _declared("class ChannelSocket {", 4)
    assert set(js["close"]) == _declared("const CLOSE: {", 4)
    assert set(js["defaults"]) == _declared("const DEFAULTS: {", 4)
    # The options sente.js accepts (it throws on any other name) are exactly the declared ones.
    source = (STATIC / "sente.js").read_text()
    match = re.search(r"const OPTION_NAMES = new Set\(\[(.*?)\]\)", source, re.DOTALL)
    assert match is not None
    assert set(re.findall(r'"(\w+)"', match.group(1))) == _declared("interface Options {", 4)


def test_served_beside_sente_js_with_the_same_caching():
    app = Flask(__name__)
    Sente(app)
    with serve(app) as base, requests.Session() as http:
        url = base + "/chsk/sente.d.ts"
        first = http.get(url, timeout=5)
        assert first.status_code == 200
        assert first.content == DTS.read_bytes()
        assert first.headers["Content-Type"].startswith("text/plain")
        script = http.get(base + "/chsk/sente.js", timeout=5)
        for response in (first, script):
            assert response.headers["ETag"]
            assert "max-age=0" in response.headers["Cache-Control"]
            assert "public" in response.headers["Cache-Control"]
        again = http.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=5)
        assert again.status_code == 304 and again.content == b""
        versioned = http.get(url, params={"v": "1"}, timeout=5)
        assert "max-age=31536000" in versioned.headers["Cache-Control"]
        assert "immutable" in versioned.headers["Cache-Control"]


def test_packaged_with_the_client():
    setup = (HERE.parent.parent / "setup.cfg").read_text()
    package_data = re.search(r"^flask_sente = (.*)$", setup, re.MULTILINE)
    assert package_data is not None and "static/*.d.ts" in package_data.group(1)
