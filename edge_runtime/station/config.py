"""Station configuration: `station.toml` and one TOML profile per product line.

Every value a station reads from a file is checked here, once; the rest of
the station receives validated dataclasses. Scoring settings of a profile are
``InspectionSettings.from_profile``'s; the ``[stream]`` section (pairing timeout,
queue size and policy) is the station's and is defined here.

station.toml::

    [station]
    state_dir = "state"          # default: $STATE_DIRECTORY (systemd) or ./state
    snapshot_every = 32          # persist a line's window every N parts (and at shutdown)
    synchronous = "normal"       # SQLite: "normal" survives a process crash, "full" a power loss
    log_level = "INFO"
    rcvhwm = 32                  # frames buffered at the PULL socket before senders block
    max_frame_bytes = 268435456  # larger frames are refused (error "size"); see ARCHITECTURE.md, Faults
    max_frame_pixels = 67108864  # larger images (H x W) are refused before decoding (error "shape")
    max_pending = 1024           # parts waiting for their second frame, all lines together
    max_pending_bytes = 2147483648  # decoded frames waiting or queued, all lines; over it: error "overload"
    min_free_bytes = 268435456   # below this free space in state_dir new frames get error "storage"

    [endpoints]
    frames = "tcp://127.0.0.1:5555"
    verdicts = "tcp://127.0.0.1:5556"
    control = "tcp://127.0.0.1:5557"
    reject = ""                  # "" = no reject-gate output; e.g. "tcp://127.0.0.1:5558"

    [endpoints.lines]            # optional: a line's own frame socket (its senders use it instead)
    bracket = "tcp://127.0.0.1:5560"

    [lines]
    profiles_dir = "lines"       # relative to this file
    enabled = ["bracket", "tile"]  # each loads <profiles_dir>/<name>.toml

    [http]                       # health, Prometheus metrics, the dashboard
    enabled = true
    host = "127.0.0.1"
    port = 8080                  # 0 = any free port (the log and status say which)
    operator_tokens = ""         # file of "name token" lines, relative to this file;
                                 # "" = the dashboard is read-only for everyone

    [security]                   # optional: CURVE on every socket (see deploy/OPERATOR.md)
    keys_dir = "keys"            # relative to this file; made by `musc-edge keys init`
    reject_gate = ["gate"]       # the only keys admitted on the reject socket (default: any observer)

Profiles are named, never given as paths: a name is a file ``<name>.toml``
directly in ``profiles_dir`` ("default" may also be the embedded profile).

A profile's ``[stream]`` section::

    [stream]
    pair_timeout_ms = 1000       # wait this long for the other sensor's frame
    queue = 16                   # parts waiting for scoring on this line
    queue_policy = "block"       # "block": parts wait in order; "drop_oldest": oldest part gets an overload error

A line never holds up another: see ``edge_runtime.station.intake`` for what
"block" does on a frame socket that several lines share.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.inspection.settings import InspectionSettings
from edge_runtime.stream.protocol import NAME, SENSORS

DEFAULT_ENDPOINTS = {
    "frames": "tcp://127.0.0.1:5555",
    "verdicts": "tcp://127.0.0.1:5556",
    "control": "tcp://127.0.0.1:5557",
    "reject": "",
}
DEFAULT_LINE = "default"
# The embedded default profile: 2D+3D on EfficientNet-Lite0 + FPFH and normals (InspectionSettings' defaults).
EMBEDDED_PROFILE: dict = {"line": {"name": DEFAULT_LINE}}
EMBEDDED_SOURCE = "<embedded>"
MODALITY_SENSOR = {modality: sensor for sensor, modality in SENSORS.items()}
QUEUE_POLICIES = ("block", "drop_oldest")


@dataclass(frozen=True)
class HttpSettings:
    """The station's HTTP server. operator_tokens: (name, token) pairs whose bearer
    token unlocks the dashboard's operator actions (kept out of the repr)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    operator_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"[http] enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"[http] host must be an address like 127.0.0.1, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"[http] port must be an integer in [0, 65535] (0 = any free port), got {self.port!r}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def load_operator_tokens(path: Path) -> tuple[tuple[str, str], ...]:
    """``name token`` per line (``#`` comments, blank lines allowed); tokens of at
    least 16 characters, names and tokens unique."""
    if not path.is_file():
        raise FileNotFoundError(f"[http] operator_tokens file {path} does not exist")
    pairs: list[tuple[str, str]] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or not NAME.match(fields[0]) or len(fields[1]) < 16:
            raise ValueError(f"{path}:{n}: expected 'name token': a plain name, a token of at least 16 characters")
        pairs.append((fields[0], fields[1]))
    names, tokens = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(names)) != len(names) or len(set(tokens)) != len(tokens):
        raise ValueError(f"{path}: a name or a token appears twice")
    return tuple(pairs)


def _check_keys(table: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")


@dataclass(frozen=True)
class StreamSettings:
    """How the station feeds one line: pairing timeout, queue bound and policy."""

    pair_timeout_ms: float = 1000.0
    queue: int = 16
    queue_policy: str = "block"

    def __post_init__(self) -> None:
        if not self.pair_timeout_ms > 0:
            raise ValueError(f"[stream] pair_timeout_ms must be > 0, got {self.pair_timeout_ms}")
        if isinstance(self.queue, bool) or not isinstance(self.queue, int) or self.queue < 1:
            raise ValueError(f"[stream] queue must be an integer >= 1, got {self.queue!r}")
        if self.queue_policy not in QUEUE_POLICIES:
            raise ValueError(f"[stream] queue_policy must be one of {QUEUE_POLICIES}, got {self.queue_policy!r}")

    @classmethod
    def from_table(cls, table: dict) -> "StreamSettings":
        _check_keys(table, {"pair_timeout_ms", "queue", "queue_policy"}, "[stream]")
        return cls(**table)


@dataclass(frozen=True)
class LineProfile:
    """One product line's profile: scoring settings plus stream settings.

    source: the file it came from, or "<embedded>" for the built-in default.
    """

    settings: InspectionSettings
    stream: StreamSettings
    source: str
    product: str

    @property
    def sensors(self) -> frozenset[str]:
        """The sensors whose frames a part of this line needs."""
        return frozenset(MODALITY_SENSOR[m] for m in self.settings.modalities)

    @property
    def name(self) -> str:
        """The name that switches a line to this profile."""
        return DEFAULT_LINE if self.source == EMBEDDED_SOURCE else Path(self.source).stem

    @property
    def window_key(self) -> str:
        """Which saved window fits this profile: the digest of its scoring settings."""
        return self.settings.digest()


def parse_profile(doc: dict, source: str) -> LineProfile:
    """A profile from its parsed TOML; errors name the file."""
    try:
        settings = InspectionSettings.from_profile(doc)
        stream = StreamSettings.from_table(dict(doc.get("stream", {})))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"line profile {source}: {exc}") from None
    if settings.references:  # golden references: a folder relative to the profile's own
        folder = Path(source).parent / settings.references if Path(source).is_file() else Path(settings.references)
        if not folder.is_dir():
            raise ValueError(f"line profile {source}: [guard] references folder {folder} does not exist")
        settings = dataclasses.replace(settings, references=str(folder.resolve()))
    product = str(doc.get("line", {}).get("name", Path(source).stem))
    return LineProfile(settings, stream, source, product)


def _read_toml(path: Path, what: str) -> dict:
    """A TOML file; a missing file or bad TOML is an error naming ``what`` and the path."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    with path.open("rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{what} {path} is not valid TOML: {exc}") from None


def load_profile(path: str | Path) -> LineProfile:
    path = Path(path)
    return parse_profile(_read_toml(path, "line profile"), str(path))


def embedded_profile() -> LineProfile:
    return parse_profile(EMBEDDED_PROFILE, EMBEDDED_SOURCE)


@dataclass(frozen=True)
class StationConfig:
    """A validated station configuration (see the module docstring for the file)."""

    lines: dict[str, LineProfile]
    frames: str = DEFAULT_ENDPOINTS["frames"]
    verdicts: str = DEFAULT_ENDPOINTS["verdicts"]
    control: str = DEFAULT_ENDPOINTS["control"]
    reject: str | None = None
    line_frames: dict[str, str] = field(default_factory=dict)  # line -> its own frame socket
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    profiles_dir: Path | None = None
    snapshot_every: int = 32
    synchronous: str = "normal"
    log_level: str = "INFO"
    rcvhwm: int = 32
    max_frame_bytes: int = 256 * 1024 * 1024
    max_frame_pixels: int = 8192 * 8192
    max_pending: int = 1024
    max_pending_bytes: int = 2 * 1024 ** 3
    min_free_bytes: int = 256 * 1024 * 1024
    http: HttpSettings = HttpSettings()
    keys_dir: Path | None = None  # [security]: CURVE with the keys in this folder; None: no security
    reject_gate: frozenset[str] | None = None  # [security]: the key names admitted on the reject socket
    source: str = EMBEDDED_SOURCE

    def __post_init__(self) -> None:
        if not self.lines:
            raise ValueError("the station needs at least one line")
        for name in self.lines:
            check_line_name(name)
        for key in ("snapshot_every", "rcvhwm", "max_frame_bytes", "max_frame_pixels", "max_pending",
                    "max_pending_bytes", "min_free_bytes"):
            value = getattr(self, key)
            least = 0 if key == "min_free_bytes" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"[station] {key} must be an integer >= {least}, got {value!r}")
        if self.synchronous not in ("normal", "full"):
            raise ValueError(f"[station] synchronous must be 'normal' or 'full', got {self.synchronous!r}")
        endpoints = {key: getattr(self, key) for key in ("frames", "verdicts", "control")}
        if self.reject:
            endpoints["reject"] = self.reject
        endpoints.update({f"lines.{line}": value for line, value in self.line_frames.items()})
        for key, value in endpoints.items():
            if not isinstance(value, str) or "://" not in value:
                raise ValueError(f"[endpoints] {key} must be a ZeroMQ endpoint like tcp://127.0.0.1:5555, got {value!r}")
        for line in self.line_frames:
            check_line_name(line)

    def profile_names(self) -> list[str]:
        """The names ``resolve_profile`` accepts."""
        names = {DEFAULT_LINE}
        if self.profiles_dir is not None and self.profiles_dir.is_dir():
            names.update(p.stem for p in self.profiles_dir.glob("*.toml") if _profile_name_ok(p.stem))
        return sorted(names)

    def resolve_profile(self, name: str) -> LineProfile:
        """The profile named ``name``: ``<profiles_dir>/<name>.toml`` ("default" may be the
        embedded one). A path, or a name not in the folder, is refused: FileNotFoundError
        lists the names; a file that is not a valid profile raises ValueError."""
        if not _profile_name_ok(name):
            raise ValueError(f"a profile is given by its name in the profiles folder, not a path "
                             f"(letters, digits, _.:-; no '/', '\\', '..'), got {str(name)[:64]!r}")
        if self.profiles_dir is not None:
            path = self.profiles_dir / f"{name}.toml"
            if path.is_file():
                if path.resolve().parent != self.profiles_dir.resolve():
                    raise ValueError(f"profile {name!r} links outside the profiles folder {self.profiles_dir}")
                return load_profile(path)
        if name == DEFAULT_LINE:
            return embedded_profile()
        where = self.profiles_dir if self.profiles_dir is not None else "(no profiles_dir configured)"
        raise FileNotFoundError(f"no line profile named {name!r} in {where}; "
                                f"profiles: {', '.join(self.profile_names())}")


def _profile_name_ok(name) -> bool:
    return isinstance(name, str) and bool(NAME.match(name)) and ".." not in name and not name.endswith(".toml")


def check_line_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"line name must be letters, digits and _.:- (at most 128), got {name!r}")
    return name


def default_state_dir() -> Path:
    """$STATE_DIRECTORY (set by systemd's StateDirectory=) or ./state."""
    env = os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path("state")


def load_station_config(path: str | Path | None = None, state_dir: str | Path | None = None) -> StationConfig:
    """Read ``station.toml`` (None: the embedded defaults, one line named "default").

    ``state_dir`` overrides the file's value.
    """
    if path is None:
        return StationConfig(lines={DEFAULT_LINE: embedded_profile()},
                             **({"state_dir": Path(state_dir)} if state_dir else {}))
    path = Path(path)
    doc = _read_toml(path, "station config")
    _check_keys(doc, {"station", "endpoints", "lines", "http", "security"}, f"{path}")
    station = dict(doc.get("station", {}))
    _check_keys(station, {"state_dir", "snapshot_every", "synchronous", "log_level", "rcvhwm",
                          "max_frame_bytes", "max_frame_pixels", "max_pending", "max_pending_bytes",
                          "min_free_bytes"}, f"{path} [station]")
    endpoints = {**DEFAULT_ENDPOINTS, **doc.get("endpoints", {})}
    line_frames = endpoints.pop("lines", {})
    _check_keys(endpoints, set(DEFAULT_ENDPOINTS), f"{path} [endpoints]")
    if not isinstance(line_frames, dict):
        raise ValueError(f"{path} [endpoints.lines] must be a table of line = endpoint")
    security = dict(doc.get("security", {}))
    _check_keys(security, {"keys_dir", "reject_gate"}, f"{path} [security]")
    if "security" in doc and not isinstance(security.get("keys_dir"), str):
        raise ValueError(f"{path} [security] needs keys_dir, the folder `musc-edge keys init` made")
    gate = security.get("reject_gate")
    if gate is not None and (not isinstance(gate, list) or not gate or not all(isinstance(n, str) for n in gate)):
        raise ValueError(f"{path} [security] reject_gate must be a non-empty list of key names")
    lines_table = dict(doc.get("lines", {}))
    _check_keys(lines_table, {"profiles_dir", "enabled"}, f"{path} [lines]")
    profiles_dir = path.parent / lines_table.get("profiles_dir", "lines")
    enabled = lines_table.get("enabled", [DEFAULT_LINE])
    if not isinstance(enabled, list) or not enabled:
        raise ValueError(f"{path} [lines] enabled must be a non-empty list of line names")
    if len(set(enabled)) != len(enabled):
        raise ValueError(f"{path} [lines] enabled lists a line twice: {enabled}")
    draft = StationConfig(lines={DEFAULT_LINE: embedded_profile()}, profiles_dir=profiles_dir)
    lines = {check_line_name(name): draft.resolve_profile(name) for name in enabled}
    http = dict(doc.get("http", {}))
    _check_keys(http, {"enabled", "host", "port", "operator_tokens"}, f"{path} [http]")
    tokens = http.pop("operator_tokens", "")
    if tokens:
        http["operator_tokens"] = load_operator_tokens(path.parent / tokens)
    chosen_state = state_dir or station.pop("state_dir", None)
    station.pop("state_dir", None)
    return StationConfig(
        lines=lines,
        frames=endpoints["frames"], verdicts=endpoints["verdicts"], control=endpoints["control"],
        reject=endpoints["reject"] or None, line_frames=dict(line_frames),
        state_dir=Path(chosen_state) if chosen_state else default_state_dir(),
        profiles_dir=profiles_dir, http=HttpSettings(**http), source=str(path),
        keys_dir=path.parent / security["keys_dir"] if security else None,
        reject_gate=frozenset(gate) if gate else None, **station,
    )
