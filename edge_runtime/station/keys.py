"""`musc-edge keys`: the station's CURVE key pair and its admitted clients.

    musc-edge keys init --dir keys                     the station's pair: keys/station.key(_secret)
    musc-edge keys add --dir keys --role ROLE NAME --out FILE
    musc-edge keys list --dir keys
    musc-edge keys remove --dir keys NAME

``add`` makes a client pair: its public key goes into the role's folder
(``sensors/``, ``observers/``, ``operators/``), its secret certificate to FILE
(ZeroMQ certificate format, what ``zmq.auth.load_certificate`` reads; its
metadata names the key, the role and the station's public key). Give FILE to
the client and keep no copy. ``remove`` deletes a client's public key: its next
connection is refused. Secrets are written mode 600, folders 700; the station
refuses to start on a secret others can read or a folder others can write.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import zmq.auth

from edge_runtime.stream.security import ROLE_DIRS, STATION_KEY, KeyRing, check_key_name, station_keys


@contextlib.contextmanager
def _private_files():
    """Files made inside are never readable by others, not even for a moment."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def init(keys_dir: Path, force: bool = False) -> Path:
    """The station's key pair in ``keys_dir`` (made with mode 700); returns the public file."""
    if (keys_dir / STATION_KEY).exists() and not force:
        raise FileExistsError(f"{keys_dir / STATION_KEY} exists (a new pair locks out every client; --force to "
                              "make one anyway)")
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for sub in ROLE_DIRS.values():
        (keys_dir / sub).mkdir(mode=0o700, exist_ok=True)
    with _private_files():
        public, _ = zmq.auth.create_certificates(keys_dir, STATION_KEY.removesuffix(".key"))
    os.chmod(public, 0o644)
    return Path(public)


def add(keys_dir: Path, role: str, name: str, out: Path) -> Path:
    """A client pair: public key into the role folder, secret certificate to ``out``."""
    if role not in ROLE_DIRS:
        raise ValueError(f"role must be one of {', '.join(ROLE_DIRS)}, got {role!r}")
    check_key_name(name)
    station_public, _ = station_keys(keys_dir)
    taken = KeyRing(keys_dir).names()
    if name in taken:
        raise FileExistsError(f"a key named {name!r} exists already ({taken[name]}); remove it first")
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out")
    folder = keys_dir / ROLE_DIRS[role]
    folder.mkdir(mode=0o700, exist_ok=True)
    meta = {"name": name, "role": role, "station": station_public.decode()}
    with _private_files(), tempfile.TemporaryDirectory(dir=keys_dir) as tmp:
        public, secret = zmq.auth.create_certificates(tmp, name, metadata=meta)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(Path(secret).read_text(encoding="utf-8"))
        target = folder / f"{name}.key"
        os.replace(public, target)
    os.chmod(target, 0o644)
    return target


def new_ring(root: Path, clients: dict[str, str]) -> tuple[Path, dict[str, Path]]:
    """A fresh ``root/keys`` with the station's pair and one client per name -> role;
    returns (keys folder, name -> secret certificate in ``root``)."""
    keys_dir = root / "keys"
    init(keys_dir)
    certs = {name: root / f"{name}.secret" for name in clients}
    for name, role in clients.items():
        add(keys_dir, role, name, certs[name])
    return keys_dir, certs


def add_client_options(p: argparse.ArgumentParser) -> None:
    """--secure / --keys-dir / --sensor-key / --subscriber-key of the demo and the bench."""
    g = p.add_argument_group("CURVE security")
    g.add_argument("--secure", action="store_true",
                   help="run with CURVE on every socket, on a throwaway key ring (station, sensor, subscriber)")
    g.add_argument("--keys-dir", type=Path, help="the station's keys folder (default: the config's [security])")
    g.add_argument("--sensor-key", type=Path, help="the simulated sensors' certificate (role sensor)")
    g.add_argument("--subscriber-key", type=Path, help="the subscriber's certificate (role observer)")


def client_keys_of(args: argparse.Namespace, scratch: Path, keys_dir: Path | None = None
                   ) -> tuple[Path | None, Path | None, Path | None]:
    """(keys folder, sensor certificate, subscriber certificate) from ``add_client_options``;
    all None without security. ``keys_dir``: the config's [security] folder."""
    if args.secure:
        keys_dir, certs = new_ring(scratch, {"sensors": "sensor", "subscriber": "observer"})
        return keys_dir, certs["sensors"], certs["subscriber"]
    keys_dir = args.keys_dir or keys_dir
    if keys_dir is None:
        return None, None, None
    if not (args.sensor_key and args.subscriber_key):
        raise ValueError(f"the station is secured (keys {keys_dir}): give --sensor-key and --subscriber-key, "
                         "or --secure for throwaway keys")
    return keys_dir, args.sensor_key, args.subscriber_key


def remove(keys_dir: Path, name: str) -> Path:
    check_key_name(name)
    for sub in ROLE_DIRS.values():
        path = keys_dir / sub / f"{name}.key"
        if path.is_file():
            path.unlink()
            return path
    raise FileNotFoundError(f"no admitted key named {name!r} in {keys_dir}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge keys", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("init", help="make the station's key pair")
    s.add_argument("--dir", required=True, type=Path)
    s.add_argument("--force", action="store_true", help="replace an existing pair (every client must be re-keyed)")
    s = sub.add_parser("add", help="admit a client: public key into the role folder, secret to --out")
    s.add_argument("--dir", required=True, type=Path)
    s.add_argument("--role", required=True, choices=list(ROLE_DIRS))
    s.add_argument("name")
    s.add_argument("--out", required=True, type=Path, help="the client's secret certificate (must not exist)")
    sub.add_parser("list", help="admitted keys and their roles").add_argument("--dir", required=True, type=Path)
    s = sub.add_parser("remove", help="revoke a client's key")
    s.add_argument("--dir", required=True, type=Path)
    s.add_argument("name")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "init":
            print(f"station key pair: {init(args.dir, args.force)} (+ _secret); clients need {STATION_KEY}")
        elif args.cmd == "add":
            target = add(args.dir, args.role, args.name, args.out)
            print(f"{args.role} {args.name}: public key {target}, secret certificate {args.out}")
        elif args.cmd == "list":
            for name, role in sorted(KeyRing(args.dir).names().items(), key=lambda kv: (kv[1], kv[0])):
                print(f"{role:<9} {name}")
        else:
            print(f"removed {remove(args.dir, args.name)} (connections already open stay until they close)")
    except (OSError, ValueError) as exc:
        print(f"musc-edge keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
