"""Binding the station's server sockets: one place, so every socket gets the same treatment.

Each server socket is bound before any thread starts (a busy port fails at
start-up) and reports the endpoint it really got (``tcp://127.0.0.1:*`` binds
an ephemeral port).
"""
from __future__ import annotations

import zmq


def bind(ctx: zmq.Context, kind: int, endpoint: str, **options: int) -> tuple[zmq.Socket, str]:
    """A ``kind`` socket bound at ``endpoint`` with ZeroMQ ``options`` (name -> value,
    e.g. ``RCVHWM=32``); returns (socket, the endpoint it is bound to)."""
    sock = ctx.socket(kind)
    try:
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        sock.bind(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
