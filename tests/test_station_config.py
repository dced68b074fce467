"""station.toml and line profiles: defaults, the deploy/ examples, errors that name the problem."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.station.config import (DEFAULT_ENDPOINTS, StationConfig, StreamSettings, embedded_profile, load_profile,
                                         load_station_config)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_no_config_means_one_default_line_on_the_default_endpoints(monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = load_station_config(None)
    assert list(cfg.lines) == ["default"]
    settings = cfg.lines["default"].settings
    assert settings.modalities == ("2d", "3d") and (settings.encoder_2d, settings.encoder_3d) == ("default", "fpfh+normals")
    assert (cfg.frames, cfg.verdicts, cfg.control) == tuple(DEFAULT_ENDPOINTS[k] for k in ("frames", "verdicts", "control"))
    assert cfg.reject is None and cfg.state_dir == Path("state")
    assert cfg.lines["default"].sensors == {"rgb", "xyz"}
    assert cfg.http.enabled and cfg.http.url == "http://127.0.0.1:8080" and cfg.http.operator_tokens == ()


def test_systemd_state_directory_is_the_default(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/musc-edge")
    assert load_station_config(None).state_dir == Path("/var/lib/musc-edge")
    assert load_station_config(None, state_dir="/tmp/x").state_dir == Path("/tmp/x")


def test_the_deploy_example_loads():
    cfg = load_station_config(DEPLOY / "station.toml")
    assert sorted(cfg.lines) == ["tile", "washer"]
    assert cfg.reject == "tcp://127.0.0.1:5558" and cfg.http.url == "http://127.0.0.1:8080"
    assert cfg.lines["washer"].stream.queue_policy == "drop_oldest"
    assert cfg.lines["tile"].settings.window == 16 and cfg.lines["tile"].settings.min_window == 8
    assert cfg.resolve_profile("tile").source.endswith("tile.toml")
    assert cfg.resolve_profile("default").source == "<embedded>"


@pytest.mark.parametrize("text, match", [
    ("[station]\nsnapshot_evry = 3\n", "snapshot_evry"),
    ("[station]\nsynchronous = 'sometimes'\n", "synchronous"),
    ("[endpoints]\nframes = 'localhost'\n", "endpoint"),
    ("[lines]\nenabled = ['nope']\n", "no line profile named 'nope'"),
    ("[lines]\nenabled = []\n", "non-empty"),
    ("[pumps]\n", "pumps"),
    ("[station\n", "not valid TOML"),
    ("[http]\nport = 'eighty'\n", r"\[http\] port"),
    ("[http]\nenabled = 'yes'\n", r"\[http\] enabled"),
    ("[http]\nlisten = 8080\n", "listen"),
    ("[http]\noperator_tokens = 'missing.txt'\n", "operator_tokens file .*missing.txt does not exist"),
])
def test_bad_station_files_name_the_problem(tmp_path, text, match):
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_station_config(path)


@pytest.mark.parametrize("text, match", [
    ("[stream]\nqueue_policy = 'drop_newest'\n", "queue_policy"),
    ("[stream]\nqueue = 0\n", "queue"),
    ("[stream]\npair_timeout_ms = -1\n", "pair_timeout_ms"),
    ("[stream]\ntimeout = 5\n", "timeout"),
    ("[line]\nmin_window = 3\n", "min_window"),
    ("[scoring]\nwindw = 3\n", "windw"),
])
def test_bad_profiles_name_the_file_and_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        load_profile(path)
    assert "bad.toml" in str(err.value)


@pytest.mark.parametrize("text, match", [
    ("alice short\n", "at least 16 characters"),
    ("alice\n", "expected 'name token'"),
    ("al ice tok-0123456789abcdef\n", "expected 'name token'"),
    ("alice tok-0123456789abcdef\nbob tok-0123456789abcdef\n", "appears twice"),
])
def test_operator_token_files_are_checked(tmp_path, text, match):
    (tmp_path / "operators").write_text(text)
    (tmp_path / "station.toml").write_text("[http]\noperator_tokens = 'operators'\n")
    with pytest.raises(ValueError, match=match):
        load_station_config(tmp_path / "station.toml")


def test_operator_tokens_load_and_stay_out_of_the_repr(tmp_path):
    (tmp_path / "operators").write_text("# who, token\nalice tok-0123456789abcdef  # day shift\n\nbob tok-fedcba9876543210\n")
    (tmp_path / "station.toml").write_text("[http]\nport = 0\noperator_tokens = 'operators'\n")
    cfg = load_station_config(tmp_path / "station.toml")
    assert cfg.http.operator_tokens == (("alice", "tok-0123456789abcdef"), ("bob", "tok-fedcba9876543210"))
    assert "tok-" not in repr(cfg) and cfg.http.port == 0


def test_stream_defaults_block_senders():
    assert StreamSettings().queue_policy == "block"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_profile("/nonexistent/line.toml")


def test_profiles_are_names_in_the_profiles_folder_only(tmp_path):
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines" / "tile.toml").write_text('[line]\nname = "tile"\n')
    (tmp_path / "outside.toml").write_text('[line]\nname = "outside"\n')
    (tmp_path / "lines" / "sneaky.toml").symlink_to(tmp_path / "outside.toml")
    cfg = StationConfig(lines={"default": embedded_profile()}, profiles_dir=tmp_path / "lines")
    assert cfg.resolve_profile("tile").name == "tile" and cfg.resolve_profile("default").name == "default"
    assert cfg.profile_names() == ["default", "sneaky", "tile"]
    for ref in (str(tmp_path / "outside.toml"), "../outside", "lines/tile", "tile.toml", "..", "a\\b", ""):
        with pytest.raises(ValueError, match="not a path"):
            cfg.resolve_profile(ref)
    with pytest.raises(ValueError, match="links outside the profiles folder"):
        cfg.resolve_profile("sneaky")
    with pytest.raises(FileNotFoundError, match="profiles: default, sneaky, tile"):
        cfg.resolve_profile("outside")
    (tmp_path / "lines" / "rigged.toml").write_text('[threshold]\npolicy = "fixed"\nvalue = 1e9\n')
    with pytest.raises(ValueError, match=r"\[threshold\] value must be a finite number in \[0, 100\]"):
        cfg.resolve_profile("rigged")
