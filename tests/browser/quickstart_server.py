"""Serve the README's quickstart app, copied into a folder by the test, on a free port.

``python tests/browser/quickstart_server.py DIR`` imports ``DIR/app.py`` exactly as the
README writes it (its first line monkey-patches) and runs its ``app`` with the same
``flask_sente.run`` the README's ``__main__`` block calls, on port 0 instead of 5000 so
tests never collide. ``flask_sente.run`` prints ``serving on http://127.0.0.1:<port>``.
"""
import importlib
import sys


def main() -> None:
    folder = sys.argv[1]
    sys.path.insert(0, folder)
    quickstart = importlib.import_module("app")
    quickstart.flask_sente.run(quickstart.app, host="127.0.0.1", port=0)


if __name__ == "__main__":
    main()
