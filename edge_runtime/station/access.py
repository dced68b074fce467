"""Who may do what at a secured station: the roles of its sockets and of its control commands.

- sensors send frames, nothing else;
- observers read: verdicts and alerts (the PUB socket), the reject-gate output
  (the gate is an observer: it only receives), and the read-only commands;
- operators may do everything.

The reject-gate socket is PUSH, which deals verdicts out among its peers: a
second peer would take verdicts away from the gate. ``[security] reject_gate``
names the keys allowed there (the station warns at start when it is not set).
A key revoked while its connection stays open is "revoked": it may run nothing.

Without ``[security]`` every caller is ``LOCAL``, an operator (the station then
listens on loopback and warns otherwise).
"""
from __future__ import annotations

from edge_runtime.stream.protocol import COMMANDS
from edge_runtime.stream.security import Caller

_ANY_READER = frozenset({"observer", "operator"})

SOCKET_ROLES: dict[str, frozenset[str]] = {
    "frames": frozenset({"sensor", "operator"}),
    "verdicts": _ANY_READER,
    "reject": _ANY_READER,
    "control": _ANY_READER,
}
READ_ONLY = frozenset({"status", "verdicts", "audit"})
COMMAND_ROLES: dict[str, frozenset[str]] = {
    cmd: _ANY_READER if cmd in READ_ONLY else frozenset({"operator"}) for cmd in COMMANDS
}


def may(caller: Caller, cmd: str) -> bool:
    """True when ``caller``'s role may run control command ``cmd``."""
    return caller.role in COMMAND_ROLES.get(cmd, ())
