"""The command line: light to start, strict with its input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from inkbooth import artifacts, cli
from inkbooth.ocr.documents import synthetic


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inkbooth.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_and_import_do_not_load_torch():
    code = ("import sys, inkbooth, inkbooth.cli, inkbooth.runs, inkbooth.pipelines.ocr; "
            "inkbooth.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    assert run_cli("--help").returncode == 0


def test_wrong_flag_value_names_the_field():
    res = run_cli("ocr", "docs", "model", "out", "--num-beams", "four")
    assert res.returncode == 2
    assert "num_beams: expected an integer, got str 'four'" in res.stderr


def test_unknown_config_key_names_the_file_and_key(tmp_path):
    cfg = tmp_path / "export.yaml"
    cfg.write_text("parity_imgs: 10\n")
    res = run_cli("export-trocr", "model", "out", "--config", str(cfg))
    assert res.returncode == 2
    assert str(cfg) in res.stderr and "unknown key(s) 'parity_imgs'" in res.stderr


def test_pages_command_prints_line_boxes(tmp_path, capsys):
    page = synthetic.render_page(seed=3, max_lines=3, width=800, height=500)
    page.image.save(tmp_path / "p.png")
    assert cli.main(["pages", str(tmp_path / "p.png"), "--crops", str(tmp_path / "crops")]) == 0
    boxes = json.loads(capsys.readouterr().out)
    assert len(boxes) == 3 and len(list((tmp_path / "crops").iterdir())) == 3


def test_ocr_command_end_to_end(tiny_onnx, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    synthetic.render_page(seed=3, max_lines=2, width=800, height=500).image.save(tmp_path / "docs" / "p.png")
    model, _ = tiny_onnx
    code = cli.main(["ocr", str(tmp_path / "docs"), str(model), str(tmp_path / "out"), "--num-beams", "1",
                     "--max-new-tokens", "8"])
    assert code == 0
    assert artifacts.read_text(str(tmp_path / "out" / "results"), "results.jsonl").count("\n") == 2


def test_dreambooth_commands_chain(tiny_sd, subject_dir, tmp_path, capsys):
    assert cli.main(["prior", str(tiny_sd), str(tmp_path / "prior"), "--class-prompt", "a photo of dog",
                     "--num-images", "2", "--steps", "2"]) == 0
    prior_uri = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["uri"]
    assert cli.main(["train", str(tiny_sd), str(subject_dir), str(tmp_path / "trained"), "--class-images", prior_uri,
                     "--max-train-steps", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["export-model", str(tmp_path / "trained"), str(tmp_path / "registry"), "--name", "dog"]) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    assert cli.main(["sample", version, str(tmp_path / "samples"), "--steps", "2", "--images-per-prompt", "1"]) == 0
    grid = json.loads(capsys.readouterr().out)["grid"]
    assert grid == artifacts.file_uri(str(tmp_path / "samples"), "grid.png") and Path(grid).is_file()


def test_training_refuses_a_prompt_without_the_identifier(tmp_path):
    res = run_cli("train", "m", "i", str(tmp_path / "o"), "--instance-prompt", "a photo of dog")
    assert res.returncode == 2 and "does not contain the identifier 'sks'" in res.stderr
