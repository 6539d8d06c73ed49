from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli.main import main
from edge.loader import ConfigError
from edge.service.config import (
    Config,
    example_yaml,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "edge" / "lungedge.example.yaml"


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="t.yaml")
    return info.value


def test_example_config_is_generated_from_the_field_docs() -> None:
    """The shipped example is exactly what the typed definitions generate, so a key, default,
    bound or doc line cannot change in one and not the other; and it loads as the defaults."""
    assert EXAMPLE.read_text() == example_yaml(), \
        "regenerate: python -m edge.service.config > edge/lungedge.example.yaml"
    cfg = load_config(EXAMPLE)
    assert cfg == Config()
    assert "  # No audio (or only silence) for this long raises no_audio, s. (> 0)\n" \
        "  no_audio_s: 10.0\n" in EXAMPLE.read_text()  # a key, its doc and bound, in its section


def test_empty_file_gives_defaults() -> None:
    assert parse_config("") == Config()


def test_unknown_key_names_path_line_and_suggestion() -> None:
    err = error_of("device_id: a\nsource:\n  type: file\n  file:\n    pth: x.wav\n")
    assert err.line == 5
    assert err.key_path == "source.file.pth"
    assert "did you mean 'path'" in str(err)
    assert str(err).startswith("t.yaml:5: source.file.pth:")


def test_wrong_type_and_bounds() -> None:
    err = error_of("source:\n  block_ms: fast\n")
    assert (err.key_path, err.line) == ("source.block_ms", 2)
    assert "expected an integer" in str(err)
    err = error_of("source:\n  block_ms: 1\n")
    assert "must be ≥ 5" in str(err)
    err = error_of("source:\n  type: microphone\n")
    assert "one of 'file', 'stdin', 'pyaudio'" in str(err)
    err = error_of("source:\n  pyaudio:\n    device: [1, 2]\n")
    assert "expected an integer or a string or null, got a list" in str(err)


def test_cross_field_rules() -> None:
    err = error_of("source:\n  type: file\n")
    assert err.key_path == "source.file.path"
    err = error_of("tracker:\n  crackle:\n    on_fraction: 0.2\n    off_fraction: 0.3\n")
    assert err.key_path == "tracker.crackle.off_fraction" and err.line == 4
    err = error_of("device_id: 'ward 3/bed 2'\n")
    assert "MQTT topic level" in str(err)


def test_yaml_syntax_error_has_line() -> None:
    err = error_of("source:\n  type: [file\n")
    assert err.line is not None and "not valid YAML" in str(err)


def test_duplicate_key_is_an_error() -> None:
    assert "key given twice" in str(error_of("device_id: a\ndevice_id: b\n"))


def test_device_may_be_index_or_name() -> None:
    assert parse_config("source:\n  pyaudio:\n    device: 2\n").source.pyaudio.device == 2
    cfg = parse_config("source:\n  pyaudio:\n    device: USB\n")
    assert cfg.source.pyaudio.device == "USB"


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the example's model is the shipped one, found from the checkout; a missing one is named
    assert main(["check-config", str(EXAMPLE)]) == 0
    elsewhere = tmp_path / "lungedge.yaml"
    elsewhere.write_text(EXAMPLE.read_text().replace("  path: null\n  # Interpreter",
                                                     f"  path: {tmp_path}/none\n  # Interpreter"))
    assert main(["check-config", str(elsewhere)]) == 2
    assert f"model.path: {tmp_path}/none/manifest.json: not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  no_audio_s: -1\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: tracker.no_audio_s: must be > 0" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_station_example_config_is_generated_from_the_field_docs() -> None:
    """The station's config reference is what its typed settings generate: a default or a
    description changed in station/config.py without regenerating fails here."""
    pytest.importorskip("sqlalchemy", reason="the station extra is not installed")
    from station.config import example

    shipped = Path(__file__).resolve().parents[1] / "station" / "station.example.yaml"
    assert shipped.read_text() == example(), \
        "regenerate: python -m station.config > station/station.example.yaml"


def test_station_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sqlalchemy", reason="the station extra is not installed")
    example = Path(__file__).resolve().parents[1] / "station" / "station.example.yaml"
    assert main(["station", "check-config", str(example)]) == 0
    assert "OK (broker localhost:1883" in capsys.readouterr().out
    assert main(["station", "check-config", "--config", str(example)]) == 0
    capsys.readouterr()
    bad = tmp_path / "station.yaml"
    bad.write_text("web:\n  port: 0\n")
    assert main(["station", "check-config", str(bad)]) == 2
    assert f"{bad}:2: web.port: must be ≥ 1" in capsys.readouterr().err
    assert main(["station", "check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "create it from station/station.example.yaml" in capsys.readouterr().err
