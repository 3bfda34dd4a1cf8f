"""Typed configs: strict, with errors that name the key and the file."""

from __future__ import annotations

import pytest

from inkbooth.config import ConfigError, from_dict, load
from inkbooth.dreambooth.train import TrainConfig
from inkbooth.ocr.recognition.recognizer import RecognizeConfig


def test_yaml_exponent_floats_are_numbers(tmp_path):
    (tmp_path / "t.yaml").write_text("learning_rate: 5e-6\nprior_loss_weight: 1\n")
    cfg = load(TrainConfig, tmp_path / "t.yaml")
    assert cfg.learning_rate == 5e-6 and cfg.prior_loss_weight == 1.0
    with pytest.raises(ConfigError, match="learning_rate: expected a number, got str 'fast'"):
        from_dict(TrainConfig, {"learning_rate": "fast"})


def test_wrong_types_unknown_keys_and_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="num_beams: expected an integer, got float 2.5"):
        from_dict(RecognizeConfig, {"num_beams": 2.5})
    assert from_dict(RecognizeConfig, {"num_beams": 4.0}).num_beams == 4, "JSON/Struct floats that are whole"
    with pytest.raises(ConfigError, match="token_boxes: expected true or false"):
        from_dict(RecognizeConfig, {"token_boxes": "sometimes"})
    assert from_dict(RecognizeConfig, {"token_boxes": "no"}).token_boxes is False, "YAML 1.1 words for booleans"
    with pytest.raises(ConfigError, match=r"pages: pdf_dpi: expected an integer"):
        from_dict(RecognizeConfig, {"pages": {"pdf_dpi": "high"}})
    (tmp_path / "bad.yaml").write_text("num_beams: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load(RecognizeConfig, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load(RecognizeConfig, tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(RecognizeConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize(("name", "text"), [
    ("list.yaml", "pages: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("map.yaml", "pages: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n"),
    ("deep.json", '{"pages": ' + "[" * 100_000 + "]" * 100_000 + "}"),
])
def test_deeply_nested_config_is_a_config_error_naming_the_file(tmp_path, capsys, name, text):
    """Issue 18 item 9a: a config nested 100,000 deep (under 1 MB) ended in "maximum recursion depth
    exceeded", exit 1, no file named. Now: a ConfigError naming the file and the limit, at once, exit 2."""
    import time

    from inkbooth import cli
    from inkbooth.config import MAX_DEPTH

    path = tmp_path / name
    path.write_text(text)
    assert path.stat().st_size < 1 << 20
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"{name}: nested deeper than {MAX_DEPTH} levels"):
        load(RecognizeConfig, path)
    assert time.monotonic() - start < 2
    assert cli.main(["ocr", str(tmp_path / "docs"), str(tmp_path / "model"), str(tmp_path / "out"),
                     "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and name in err and f"nested deeper than {MAX_DEPTH} levels" in err


def test_nesting_up_to_the_limit_is_still_read():
    from inkbooth.config import MAX_DEPTH, json_load, yaml_load

    assert yaml_load("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None
    assert json_load('{"a": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}") is not None
    with pytest.raises(ConfigError, match="nested deeper"):
        yaml_load("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)
