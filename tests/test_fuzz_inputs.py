"""What the device reads at start, fuzzed: the config YAML, a model's manifest, a recording's
WAV header. Every case ends in the one error type of its input, naming what and where; never a
traceback."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.loader import ConfigError
from edge.pipeline.model import Manifest, ModelError
from edge.service.config import Config, parse_config
from edge.sources.audio_file import AudioFileError, open_audio

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / "models" / "lungedge-cnnlstm" / "manifest.json").read_text())
KEYS = ["device_id", "source", "type", "file", "path", "segmenter", "on_db", "tracker",
        "wheeze", "on_fraction", "mqtt", "port", "tls", "enabled", "spool", "max_messages",
        "model", "num_threads", "queue_blocks", "x"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12)


YAML_BITS = ["device_id", "source", "file", "path", ":", " ", "\n", "  ", "- ", "? ", "{",
             "}", "[", "]", ",", "&a ", "*a", "!!binary ", "!!python/name:os.system ",
             "!!timestamp ", "2026-13-45", "'", '"', "#", "null", "1e999", "-1", "0x1F",
             "|\n", ">\n", "%YAML 1.1\n---\n", "...", "\t", "\x00"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), trees.map(lambda t: json.dumps(t)),
                 st.lists(st.sampled_from(YAML_BITS), max_size=30).map("".join)))
def test_config_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        assert isinstance(parse_config(text, source="fuzz.yaml"), Config)
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@pytest.mark.parametrize("text", [
    "device_id: !!python/object:os.system x",  # a tag SafeLoader refuses
    "device_id: !!binary AAA",  # bad base64
    "a: &x [*x]",  # an alias inside itself
    "device_id: 2026-13-45",  # a date that is not one
    "? [1]\n: 2",  # a key that is not a name
    "source: {file: {path: *undefined}}",
    "!!timestamp",  # PyYAML: AttributeError
])
def test_yaml_the_parser_chokes_on_is_a_config_error(text: str) -> None:
    """Found by fuzzing (hypothesis): each of these escaped as a yaml or Python exception."""
    with pytest.raises(ConfigError, match=r"^fuzz\.yaml"):
        parse_config(text, source="fuzz.yaml")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), trees, max_size=5))
def test_config_structure_errors_name_the_key_path(tree: dict[str, Any]) -> None:
    try:
        parse_config(json.dumps(tree), source="fuzz.yaml")
    except ConfigError as exc:
        assert exc.key_path and str(exc).startswith("fuzz.yaml:")


def _paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d[:3]):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(MANIFEST)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(scalars, st.just("DELETE"))),
                min_size=1, max_size=3))
def test_manifest_mutations_are_a_manifest_or_a_model_error(edits: list[Any]) -> None:
    m = copy.deepcopy(MANIFEST)
    for path, value in edits:
        node = m
        try:
            for key in path[:-1]:
                node = node[key]
            if value == "DELETE":
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        Manifest.from_dict(m, where="fuzz/manifest.json")
    except ModelError as exc:
        assert str(exc).startswith("fuzz/manifest.json")


def _wav() -> bytes:
    buf = io.BytesIO()
    scipy.io.wavfile.write(buf, 8000, (np.sin(np.arange(16000) / 5) * 9000).astype("<i2"))
    return buf.getvalue()


WAV = _wav()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=6),
       st.integers(0, len(WAV)))
def test_damaged_wav_headers_are_a_recording_or_an_audio_file_error(
        tmp_path: Path, flips: list[tuple[int, int]], length: int) -> None:
    data = bytearray(WAV[:length])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    path = tmp_path / "fuzz.wav"
    path.write_bytes(bytes(data))
    try:
        audio = open_audio(path)
        assert audio.frames > 0 and audio.sample_rate > 0
        for block in audio.iter_blocks(4000):
            assert block.dtype == np.float32
    except AudioFileError as exc:
        assert str(exc).startswith(str(path))


def test_a_truncated_wav_says_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    path.write_bytes(WAV[:100])
    with pytest.raises(AudioFileError, match=r"is truncated: its header declares 2\.0 s of "
                                             r"audio, the file holds 0\.004 s"):
        open_audio(path)
    longer = tmp_path / "cut-later.wav"
    longer.write_bytes(WAV[:len(WAV) * 3 // 4])
    assert open_audio(longer).duration_s == pytest.approx(1.5, abs=0.01)  # used, with a warning
