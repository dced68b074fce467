"""Binding the station's server sockets: one place, so every socket gets the same treatment.

Each server socket is bound before any thread starts (a busy port fails at
start-up) and reports the endpoint it really got (``tcp://127.0.0.1:*`` binds
an ephemeral port). Under a ``Guard`` (a station with [security]) it is a CURVE
server in the ZAP domain of its name; without one, a socket reachable from
other hosts is bound with a warning.
"""
from __future__ import annotations

import zmq

from edge_runtime.stream.security import Guard, warn_if_exposed


def bind(ctx: zmq.Context, kind: int, endpoint: str, name: str, guard: Guard | None = None,
         **options: int) -> tuple[zmq.Socket, str]:
    """A ``kind`` socket bound at ``endpoint`` with ZeroMQ ``options`` (name -> value,
    e.g. ``RCVHWM=32``); returns (socket, the endpoint it is bound to).
    name: what the socket is for ("frames", "verdicts", "reject", "control"): its
    ZAP domain under ``guard``, which says which roles may connect."""
    sock = ctx.socket(kind)
    try:
        for option, value in options.items():
            sock.setsockopt(getattr(zmq, option), value)
        if guard is not None:
            guard.secure(sock, name)
        else:
            warn_if_exposed(endpoint, name)
        sock.bind(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
