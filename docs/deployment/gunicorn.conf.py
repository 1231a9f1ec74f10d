"""gunicorn settings for a flask_sente app: ``gunicorn -c docs/deployment/gunicorn.conf.py
'yourapp:create_app()'`` (command-line flags win over these).

Why each setting is here is in docs/deployment/nginx.md and docs/deployment/metrics.md.
The two hooks matter only with Prometheus's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set in gunicorn's environment, pointing at a directory of its own): every worker writes its
metrics to files there, and a scrape (any worker) adds them up.
"""
import glob
import os

# flask_sente's gevent worker: WebSockets and long-polls, graceful drain on SIGTERM.
worker_class = "flask_sente.worker.SenteWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
# Only the proxy talks to gunicorn.
bind = os.environ.get("BIND", "127.0.0.1:8000")
# Seconds a stopping worker gives handlers in flight (and its WebSockets' close frames).
graceful_timeout = 30


def on_starting(server):
    """Start from an empty metrics directory: files of a previous run would add up."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):
            os.remove(path)


def child_exit(server, worker):
    """A worker is gone: its live gauges (connections, queues) stop counting. Its counters
    stay in the sums, as Prometheus expects of counters."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
