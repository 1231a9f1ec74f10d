"""What users read stays true: the README's option table, the protocol's close codes, the
signals the API page and the README list."""
import pathlib
import re

import blinker

from flask_sente import config, signals
from flask_sente.config import Options
from flask_sente.protocol import wire

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


def test_readme_option_table_lists_every_option_with_its_default():
    readme = (ROOT / "README.md").read_text()
    server = _section(readme, "## Server API")
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", server, re.MULTILINE))
    assert set(rows) == set(Options.names())
    for name in Options.names():
        default = getattr(Options, name)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            shown = rows[name].strip("` ").split()[0].strip("`")
            assert float(shown) == float(default), (name, rows[name], default)
    assert f"`{config.ANONYMOUS_UID}`" in readme or f'"{config.ANONYMOUS_UID}"' in readme


def test_protocol_doc_lists_every_close_code():
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    codes = {v for k, v in vars(wire).items() if k.startswith("CLOSE_")}
    for code in codes:
        assert re.search(rf"^\| {code} \|", protocol, re.MULTILINE), code


def test_api_page_and_readme_list_every_signal():
    """Every blinker signal of ``flask_sente.signals`` has its entry on the API page
    (docs/api/server.md, an ``autodata`` the site renders from the docstring) and its name
    in the README. Broken once by removing ``topic_joined``'s entry: it fails naming it (the
    page lacked ``topic_joined`` and ``topic_left`` before issue 26)."""
    names = sorted(name for name, value in vars(signals).items()
                   if isinstance(value, blinker.Signal))
    assert len(names) >= 8, names
    api = (ROOT / "docs" / "api" / "server.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in names:
        assert f".. autodata:: flask_sente.signals.{name}\n" in api, name
        assert f"`{name}`" in readme or f"signals.{name}`" in readme, name
