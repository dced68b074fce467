"""CURVE on the station's sockets: the key ring, the ZAP handler, server and client set-up.

A keys folder (made by ``musc-edge keys``)::

    station.key, station.key_secret     the station's key pair (ZeroMQ certificate files)
    sensors/NAME.key                    admitted client public keys, one folder per role
    observers/NAME.key
    operators/NAME.key

A client key's name is its file stem, its role is its folder. Every server
socket of a secured station is a CURVE server in its own ZAP domain, the
socket's name (frames, verdicts, control, reject; ``sockets.bind`` sets it
up). pyzmq's ZAP handler (``zmq.auth``) admits a client whose public key is in
the ring with a role that ``roles[domain]`` allows. The identity reaches the
station as each message's ``User-Id`` (the key, then "role:name"), read back by
``Guard.caller``. Which roles a socket admits is station policy and is handed
in; this module only enforces it.

Refusals are logged with the peer address, at most once a minute per
(socket, peer, key) so a client retrying every 100 ms cannot flood the log.
A client that does not speak CURVE, or does not know the station's key,
fails before the ZAP handler sees it; a socket monitor reports those.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

ROLE_DIRS = {"sensor": "sensors", "observer": "observers", "operator": "operators"}
STATION_KEY = "station.key"  # public; the secret is STATION_KEY + "_secret"
# Key names end up in file names and the audit log: plain, short, no "..".
KEY_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63}$")
LOCAL_NAME = "local"  # who acts when the station runs without [security]
# A connection that failed its handshake may close before the monitor reads its
# address; a client that retries is logged again, with its address, on a later try.
UNKNOWN_PEER = "an unknown address"
_REFUSAL_LOG_EVERY_S = 60.0
_Z85_KEY_CHARS = 40  # a CURVE public key in z85


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a key's name and role, or the local caller of an unsecured station."""

    name: str
    role: str
    address: str | None = None

    @property
    def local(self) -> bool:
        return self.name == LOCAL_NAME

    def __str__(self) -> str:
        return LOCAL_NAME if self.local else f"{self.name} ({self.role})"


LOCAL = Caller(LOCAL_NAME, "operator")


def check_key_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME.match(name) or name == LOCAL_NAME:
        raise ValueError(f"a key name is letters, digits and _.- (at most 64, no '..', not {LOCAL_NAME!r}), "
                         f"got {name!r}")
    return name


def check_private(path: Path, what: str) -> None:
    """Refuse a secret others can read, or a folder others can write (they could add a key)."""
    mode = path.stat().st_mode
    if path.is_dir() and mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{what} {path} is writable by group or others (chmod go-w {path})")
    if path.is_file() and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{what} {path} is readable by group or others (chmod 600 {path})")


class KeyRing:
    """The admitted client keys of a keys folder: z85 public key -> Caller.

    Re-read whenever a role folder changes, so a key added or removed applies to
    the next connection (connections already made keep their identity).
    """

    def __init__(self, keys_dir: str | Path):
        self.dir = Path(keys_dir)
        self._lock = threading.Lock()
        self._stamp = self._stamp_now()
        self._keys: dict[bytes, Caller] = self._read()  # a broken folder fails at start-up

    def _folders(self) -> dict[str, Path]:
        return {role: self.dir / sub for role, sub in ROLE_DIRS.items()}

    def _stamp_now(self) -> tuple:
        """Changes when a key file comes or goes, or a folder's permissions change."""
        stats = [p.stat() if p.is_dir() else None for p in self._folders().values()]
        return tuple(None if st is None else (st.st_mtime_ns, st.st_ctime_ns) for st in stats)

    def lookup(self, public_z85: bytes) -> Caller | None:
        with self._lock:
            try:
                stamp = self._stamp_now()
                if stamp != self._stamp:
                    self._keys, self._stamp = self._read(), stamp
            except OSError as exc:  # e.g. a role folder made writable by others: admit nobody
                log.error("key ring %s unusable (%s): every connection is refused until it is fixed", self.dir, exc)
                self._keys, self._stamp = {}, None
            return self._keys.get(public_z85)

    def _read(self) -> dict[bytes, Caller]:
        keys: dict[bytes, Caller] = {}
        for role, folder in self._folders().items():
            if not folder.is_dir():
                continue
            check_private(folder, "key folder")
            for path in sorted(folder.glob("*.key")):
                try:
                    public, _ = zmq.auth.load_certificate(path)
                    name = check_key_name(path.stem)
                except (OSError, ValueError) as exc:
                    log.warning("key ring: %s skipped (%s)", path, exc)
                    continue
                if public in keys:
                    log.warning("key ring: %s is the key of %s too; skipped", path, keys[public])
                    continue
                keys[public] = Caller(name, role)
        return keys

    def names(self) -> dict[str, str]:
        """name -> role of every admitted key."""
        self.lookup(b"")
        with self._lock:
            return {c.name: c.role for c in self._keys.values()}


def station_keys(keys_dir: str | Path) -> tuple[bytes, bytes]:
    """The station's (public, secret) key from ``keys_dir``; errors name the file and the fix."""
    keys_dir = Path(keys_dir)
    secret_file = keys_dir / (STATION_KEY + "_secret")
    if not secret_file.is_file():
        raise FileNotFoundError(f"{secret_file} does not exist (make it with: musc-edge keys init --dir {keys_dir})")
    check_private(keys_dir, "keys folder")
    check_private(secret_file, "station secret key")
    public, secret = zmq.auth.load_certificate(secret_file)
    if not secret:
        raise ValueError(f"{secret_file} holds no secret-key")
    return public, secret


# A refusal: (socket, peer address, the key's identity or None when unknown, reason).
RefusalHandler = Callable[[str, str, "Caller | None", str], None]


class _Zap(ThreadAuthenticator):
    """pyzmq's ZAP thread; the decision per key and socket is the guard's."""

    def __init__(self, ctx: zmq.Context, guard: "Guard"):
        super().__init__(ctx, log=logging.getLogger(__name__ + ".zap"))
        self._guard = guard
        self._address = UNKNOWN_PEER
        self._caller: Caller | None = None

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The base handler does not pass the peer address to the key check; one
        # ZAP request is handled at a time, so it waits here for the callback.
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else UNKNOWN_PEER
        await super().handle_zap_message(msg)

    def callback(self, domain: str, public_z85: bytes) -> bool:
        self._caller = self._guard.admit(domain, public_z85, self._address)
        return self._caller is not None

    def curve_user_id(self, client_public_key: bytes) -> str:
        # z85 (40 characters, may hold ':') first, then role:name; read back by Guard.caller
        return z85.encode(client_public_key).decode() + f"{self._caller.role}:{self._caller.name}"


class Guard:
    """The station's side of CURVE: its key pair, the key ring, the ZAP thread and a
    socket monitor. ``roles``: socket name -> roles admitted on it; ``names``:
    socket name -> the only key names admitted on it (sockets not named: any key
    of an admitted role). ``on_refusal`` is called for every logged refusal (from
    the ZAP or monitor thread)."""

    def __init__(self, ctx: zmq.Context, keys_dir: str | Path, roles: dict[str, frozenset[str]],
                 on_refusal: RefusalHandler | None = None, names: dict[str, frozenset[str]] | None = None):
        self.public, self._secret = station_keys(keys_dir)
        self.ring = KeyRing(keys_dir)
        self._roles = roles
        self._names = dict(names or {})
        self._on_refusal = on_refusal
        self._last_logged: dict[tuple, tuple[float, int]] = {}
        self._log_lock = threading.Lock()
        self._zap = _Zap(ctx, self)
        self._zap.start()
        self._monitors: dict[zmq.Socket, tuple[str, _Handshakes]] = {}
        self._stopping = threading.Event()
        self._monitor_thread = threading.Thread(target=self._watch, name="curve-monitor", daemon=True)
        self._monitor_thread.start()

    def secure(self, sock: zmq.Socket, domain: str) -> None:
        """Make ``sock`` (not yet bound) a CURVE server in ZAP domain ``domain``."""
        if domain not in self._roles:
            raise ValueError(f"no roles are defined for the {domain!r} socket")
        sock.curve_server = True
        sock.curve_secretkey = self._secret
        sock.zap_domain = domain.encode()
        self._zap.configure_curve_callback(domain, self._zap)
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL \
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        self._monitors[sock.get_monitor_socket(events)] = (domain, _Handshakes())

    def admit(self, domain: str, public_z85: bytes, address: str) -> Caller | None:
        """The identity of a key allowed on ``domain``, or None (refused, logged)."""
        caller = self.ring.lookup(public_z85)
        if caller is None:
            self.refuse(domain, address, None, f"unknown key {public_z85[:8].decode(errors='replace')}...")
            return None
        if caller.role not in self._roles[domain]:
            self.refuse(domain, address, caller, f"{caller.role} keys may not use the {domain} socket")
            return None
        if domain in self._names and caller.name not in self._names[domain]:
            self.refuse(domain, address, caller, f"only {', '.join(sorted(self._names[domain]))} may use the "
                                                 f"{domain} socket")
            return None
        return caller

    def refuse(self, domain: str, address: str, caller: Caller | None, reason: str) -> None:
        """Log (and report) a refused connection, at most once a minute per socket, peer and key."""
        key = (domain, address, caller.name if caller else reason)
        now = time.monotonic()
        with self._log_lock:
            last, suppressed = self._last_logged.get(key, (-_REFUSAL_LOG_EVERY_S, 0))
            if now - last < _REFUSAL_LOG_EVERY_S:
                self._last_logged[key] = (last, suppressed + 1)
                return
            if len(self._last_logged) > 1000:  # many peers or keys: forget the quiet ones
                self._last_logged = {k: v for k, v in self._last_logged.items()
                                     if now - v[0] < _REFUSAL_LOG_EVERY_S}
            self._last_logged[key] = (now, 0)
        more = f" ({suppressed} more refusals in the last minute)" if suppressed else ""
        log.warning("refused a connection to the %s socket from %s: %s%s%s", domain, address,
                    f"{caller}: " if caller else "", reason, more)
        if self._on_refusal is not None:
            try:
                self._on_refusal(domain, address, caller, reason)
            except Exception:  # reporting must never break authentication
                log.exception("refusal handler failed")

    def caller(self, frame: zmq.Frame) -> Caller:
        """The identity the ZAP handler gave the connection ``frame`` came on; role
        "revoked" when its key has left the ring since (the connection outlived it)."""
        user_id = frame.get("User-Id")
        key, (role, _, name) = user_id[:_Z85_KEY_CHARS].encode(), user_id[_Z85_KEY_CHARS:].partition(":")
        if self.ring.lookup(key) != Caller(name, role):
            role = "revoked"
        return Caller(name, role, frame.get("Peer-Address"))

    def _watch(self) -> None:
        """Report handshakes that failed before ZAP (no CURVE, wrong station key)."""
        poller, watched = zmq.Poller(), 0
        while not self._stopping.is_set():
            monitors = list(self._monitors)  # sockets secured after this thread started join here
            for mon in monitors[watched:]:
                poller.register(mon, zmq.POLLIN)
            watched = len(monitors)
            for mon, _ in poller.poll(100):
                try:
                    event = recv_monitor_message(mon, zmq.NOBLOCK)
                except zmq.Again:
                    continue
                domain, handshakes = self._monitors[mon]
                refused = handshakes.on_event(event["event"], event["value"])
                if refused:
                    address, reason = refused
                    self.refuse(domain, address, None, reason)

    def stop(self) -> None:
        """After the secured sockets are closed: end the monitor and ZAP threads."""
        self._stopping.set()
        self._monitor_thread.join()
        for mon in self._monitors:
            mon.close(linger=0)
        self._zap.stop()


class _Handshakes:
    """One socket's connections between accept and disconnect, from its monitor events.

    libzmq emits a failed handshake's HANDSHAKE_FAILED event just before the
    DISCONNECTED event of that connection, which names its fd; the peer address
    is read from the fd when it is accepted."""

    def __init__(self):
        self.peers: dict[int, str] = {}
        self.failed: str | None = None

    def on_event(self, kind: int, value: int) -> tuple[str, str] | None:
        """(peer address, reason) when a connection was refused before ZAP."""
        if kind == zmq.EVENT_ACCEPTED:
            self.peers[value] = _peer_of(value)
        elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self.failed = "handshake failed (no CURVE, or not this station's key)"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.failed = None  # the ZAP handler logged it, with the key
        elif kind == zmq.EVENT_DISCONNECTED:
            address, reason, self.failed = self.peers.pop(value, UNKNOWN_PEER), self.failed, None
            if reason:
                return address, reason
        return None


def _peer_of(fd: int) -> str:
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            host = s.getpeername()
        return str(host[0]) if isinstance(host, tuple) else str(host)
    except OSError:
        return UNKNOWN_PEER


def is_loopback(endpoint: str) -> bool:
    """True for endpoints only this host can reach: tcp on a loopback address, ipc, inproc."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name, a host name
        return False


def warn_if_exposed(endpoint: str, name: str) -> None:
    """Without [security]: a warning when the ``name`` socket binds an address other hosts reach."""
    if not is_loopback(endpoint):
        log.warning("the %s socket binds %s, reachable from other hosts, without [security]: anyone who "
                    "reaches it can %s", name, endpoint,
                    {"frames": "send frames", "control": "run every control command"}.get(name, "read verdicts"))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata`` section of a ZeroMQ certificate file."""
    out, section = {}, None
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():
            section = raw.strip()
        elif section == "metadata" and "=" in raw:
            key, _, value = raw.partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    return out


def client_keys(key_file: str | Path, station_key: str | Path | None = None) -> tuple[bytes, bytes, bytes]:
    """(public, secret, station public) for a client: its secret certificate from
    ``musc-edge keys add`` and the station's public key, from ``station_key``
    (``station.key``) or else the certificate's ``station`` metadata."""
    public, secret = zmq.auth.load_certificate(key_file)
    if not secret:
        raise ValueError(f"{key_file} holds no secret-key (a client needs the file `musc-edge keys add` wrote)")
    if station_key is not None:
        server = zmq.auth.load_certificate(station_key)[0]
    else:
        server = read_metadata(key_file).get("station", "").encode()
        if not server:
            raise ValueError(f"{key_file} does not name the station's key; give the station's station.key too")
    return public, secret, server


def secure_client(sock: zmq.Socket, key_file: str | Path | None, station_key: str | Path | None = None) -> None:
    """Make ``sock`` (before connect) a CURVE client with ``key_file``; None: leave it plain."""
    if key_file is None:
        return
    public, secret, server = client_keys(key_file, station_key)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
