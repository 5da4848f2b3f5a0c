"""`vantage-sweep dashboard`: optuna-dashboard on a Vantage storage, bound to 127.0.0.1 by default.

Trials show Vantage's fields as Optuna stores them: params, values (the plain exact match),
intermediate values (the periodic exact match, as reported to the pruner) and user attributes
(exact_match, valid_sql, eval_loss, peak_memory_bytes, tokens_per_sec, wall_time_s,
pruned_at_step, failure_reason, infeasible_reason, config, pruner_scores: the eval-loss
tie-broken scores the pruner decided on, ...). optuna-dashboard cuts JSON attributes (the metric
histories) to 1 KiB for display, so large histories never bloat the page; the full
histories are in the report (`vantage-sweep report`).

The storage password is never printed: only `redact(url)` reaches the terminal or log.
"""

from __future__ import annotations

import ipaddress
import logging
import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from vantage_core.errors import VantageError

from .storage import open_storage, redact

log = logging.getLogger("vantage.dashboard")


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser opens several connections at once
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)


def make_app(storage_url: str):
    """optuna-dashboard's WSGI app on `storage_url` (any URL `open_storage` accepts)."""
    import optuna_dashboard

    storage = open_storage(storage_url, heartbeat_interval=None)
    return optuna_dashboard.wsgi(storage)


def make_dashboard_server(storage_url: str, host: str = "127.0.0.1", port: int = 8080):
    """A ready-to-serve server (call `.serve_forever()`, `.shutdown()`); port 0 picks a free port."""
    app = make_app(storage_url)
    try:
        return make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as e:
        raise VantageError(f"dashboard: cannot listen on {host}:{port} ({e.strerror or e})") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> int:
    server = make_dashboard_server(storage_url, host, port)
    url = f"http://{host}:{server.server_port}/dashboard/"
    if not _is_loopback(host):
        log.warning("dashboard bound to %s: anyone who can reach this address can read and edit the "
                    "studies (optuna-dashboard has no login)", host)
    print(f"optuna-dashboard for {redact(storage_url)}", flush=True)
    print(f"dashboard: {url}  (Ctrl-C stops it)", flush=True)
    # Stop cleanly on Ctrl-C and on SIGTERM, also when started from a background job or a
    # non-interactive shell that set SIGINT to "ignore" for its children.
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
