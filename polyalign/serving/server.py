"""Start the server of ``polyalign serve``: load, check, then run uvicorn (one process or several workers)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import sys

from polyalign.core.errors import PolyalignError

from .app import SETTINGS_ENV, TOKEN_ENV, ServeSettings, build_app


def resolve_token(flag: bool) -> tuple[str | None, bool]:
    """The bearer token (from the environment, or a new one with ``--token``) and whether it was made here."""
    given = os.environ.get(TOKEN_ENV, "")
    if given:
        return given, False
    return (secrets.token_urlsafe(24), True) if flag else (None, False)


def default_threads(workers: int) -> int:
    """torch threads per worker: the cores shared out, one left to each worker's event loop (which
    parses requests while the model runs; more threads than that made small batches slower)."""
    return max(1, (os.cpu_count() or 1) // workers - 1)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Refuse a host and port this process cannot listen on, before the model is loaded."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise PolyalignError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                             f"(or --host)") from None


GRACE_SECONDS = 5  # after SIGTERM or Ctrl-C: requests in flight get this long, then fail and the process exits


def serve(settings: ServeSettings, host: str, port: int, workers: int, say=print) -> None:
    """Check the model and candidates load, then serve them until interrupted."""
    import uvicorn

    check_port(host, port)
    app = build_app(settings)  # loads and checks everything before a port is opened
    if not is_loopback(host) and settings.token is None:
        say(f"warning: listening on {host} without a token: anyone who reaches this port can use the model; "
            f"add --token (or set {TOKEN_ENV})", file=sys.stderr)
    say(f"serving {settings.model} on http://{host}:{port}/ (search page at /, API: /embed, /search, /info, "
        f"/metrics, /health){'' if workers == 1 else f' with {workers} workers'}; Ctrl-C stops it")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=GRACE_SECONDS)
    else:
        os.environ[SETTINGS_ENV] = settings.to_json()
        uvicorn.run("polyalign.serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_SECONDS)
