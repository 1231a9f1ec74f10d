"""``python -m demo [--host H] [--port P]``: run the demo on the embedded gevent server."""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

import flask_sente  # noqa: E402

from .app import create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="flask_sente demo: a realtime todo list")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--instance-path", default=None,
                        help="Flask instance folder, where the secret key is kept "
                             "(default: instance/ in the checkout)")
    args = parser.parse_args()
    flask_sente.run(create_app(args.instance_path), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
