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
