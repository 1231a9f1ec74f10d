"""The demo's secret key: made once into the instance folder, the same for every process
that starts from it, overridden by configuration."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

from demo.app import create_app, sente, stable_secret_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_key_is_made_once_and_kept_private(tmp_path):
    instance = tmp_path / "instance"
    key = stable_secret_key(str(instance))
    assert len(key) == 64
    assert stable_secret_key(str(instance)) == key
    mode = stat.S_IMODE(os.stat(instance / "secret_key").st_mode)
    assert mode == 0o600
    assert os.listdir(instance) == ["secret_key"], "no drafts left behind"


def test_create_app_uses_the_instance_key_unless_one_is_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    apps = [create_app(str(tmp_path / "instance")), create_app(str(tmp_path / "instance"))]
    try:
        assert apps[0].config["SECRET_KEY"] == apps[1].config["SECRET_KEY"]
        key_file = tmp_path / "instance" / "secret_key"
        assert apps[0].config["SECRET_KEY"] == key_file.read_text().strip()
        monkeypatch.setenv("FLASK_SECRET_KEY", "from-the-environment")
        apps.append(create_app(str(tmp_path / "other")))
        assert apps[-1].config["SECRET_KEY"] == "from-the-environment"
        assert not (tmp_path / "other").exists()
    finally:
        for app in apps:
            sente.close(app)


def test_processes_starting_together_agree_on_one_key(tmp_path):
    """Like `gunicorn -w 4` on a fresh checkout: every worker must sign with the same key."""
    code = ("import sys; from demo.app import stable_secret_key; "
            "print(stable_secret_key(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "instance")],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    keys = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        keys.add(out.strip())
    assert len(keys) == 1 and len(keys.pop()) == 64
