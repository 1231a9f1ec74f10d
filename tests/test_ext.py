"""The Flask extension contract: init_app, config keys, several apps, clear errors."""
import pytest
from flask import Flask

from flask_sente import ConfigError, NotInitializedError, Sente


def test_init_app_later_and_config_defaults_visible():
    app = Flask(__name__)
    sente = Sente()
    sente.init_app(app)
    assert app.extensions["sente"].sente is sente
    assert app.config["SENTE_URL"] == "/chsk"
    assert app.config["SENTE_LP_TIMEOUT"] == 20.0
    assert "sente.chsk" in {r.endpoint for r in app.url_map.iter_rules()}


def test_keyword_options_override_config_keys():
    app = Flask(__name__)
    app.config["SENTE_URL"] = "/from-config"
    app.config["SENTE_LP_TIMEOUT"] = 10
    Sente(app, lp_timeout=5)
    state = app.extensions["sente"]
    assert state.options.url == "/from-config" and state.options.lp_timeout == 5


def test_second_init_app_names_the_fix():
    app = Flask(__name__)
    sente = Sente(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        sente.init_app(app)


@pytest.mark.parametrize("options, message", [
    ({"lp_timeout": 60}, "lp_timeout must be"),
    ({"url": "chsk"}, "url must be a path"),
    ({"allowed_origins": "https://x"}, "allowed_origins"),
    ({"csrf": "yes"}, "csrf must be"),
    ({"max_message_size": 0}, "max_message_size"),
    ({"no_such_option": 1}, "unknown Sente option"),
])
def test_bad_options_fail_at_start_with_a_reason(options, message):
    with pytest.raises(ConfigError, match=message):
        Sente(Flask(__name__), **options)


def test_one_sente_for_two_apps_keeps_connections_apart():
    sente = Sente()
    a, b = Flask("a"), Flask("b")
    sente.init_app(a)
    sente.init_app(b)
    assert a.extensions["sente"].hub is not b.extensions["sente"].hub
    with pytest.raises(NotInitializedError, match="app context"):
        sente.connected_uids  # noqa: B018 - the property access is what raises
    with a.app_context():
        assert sente.connected_uids.any == frozenset()


def test_using_an_uninitialised_sente_says_what_to_do():
    sente = Sente()
    with Flask(__name__).app_context():
        with pytest.raises(NotInitializedError, match="init_app"):
            sente.send("u", ("a/b", 1))


def test_handler_ids_must_be_namespaced():
    sente = Sente()
    with pytest.raises(ValueError, match="namespaced"):
        sente.on("plain")
