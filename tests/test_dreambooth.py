"""DreamBooth stages on the tiny Stable Diffusion: class images, training, resume, export, sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inkbooth import artifacts, checkpoints, storage
from inkbooth.config import ConfigError, from_dict
from inkbooth.dreambooth import export, prior, sample, train


def test_tiny_sd_loads_like_sd1(tiny_sd):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, PNDMScheduler)
    assert pipe.tokenizer.tokenize("a photo of sks dog") == ["a</w>", "photo</w>", "of</w>", "sks</w>", "dog</w>"]
    assert pipe.tokenizer.model_max_length == 77
    assert all(p.suffix != ".bin" for p in tiny_sd.rglob("*")), "safetensors only"


# ---- class images -----------------------------------------------------------------------------


def test_prior_rerun_makes_no_new_images(tiny_sd, tmp_path):
    cfg = prior.PriorConfig(class_prompt="a photo of cat", num_images=3, steps=3, batch_size=2)
    first = prior.generate_prior_images(str(tiny_sd), str(tmp_path), cfg)
    assert first["made"] == 3 and first["complete"]
    before = {f: storage.sha256_file(tmp_path / first["key"] / f) for f in storage.list_files(first["uri"])}
    again = prior.generate_prior_images(str(tiny_sd), str(tmp_path), cfg)
    assert again["made"] == 0 and again["reused"] == 3 and again["key"] == first["key"]
    assert {f: storage.sha256_file(tmp_path / first["key"] / f) for f in storage.list_files(first["uri"])} == before
    other = prior.generate_prior_images(str(tiny_sd), str(tmp_path), dataclass_replace(cfg, guidance_scale=5.0))
    assert other["key"] != first["key"] and other["made"] == 3, "another guidance scale is another set"


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_prior_shards_and_single_image_regeneration(tiny_sd, tmp_path):
    cfg = prior.PriorConfig(class_prompt="a photo of dog", num_images=4, steps=3, batch_size=4)
    a = prior.generate_prior_images(str(tiny_sd), str(tmp_path / "sharded"), cfg, shard="0/2")
    assert a["made"] == 2 and not a["complete"] and not artifacts.is_published(a["uri"])
    b = prior.generate_prior_images(str(tiny_sd), str(tmp_path / "sharded"), cfg, shard="1/2")
    assert b["made"] == 2 and b["complete"] and artifacts.is_published(b["uri"])
    whole = prior.generate_prior_images(str(tiny_sd), str(tmp_path / "whole"), dataclass_replace(cfg, batch_size=1))
    for i in range(4):  # image i depends on (seed, i) only: not on the shard or the batch it was made in
        x = np.asarray(_png(f"{a['uri']}/{prior.image_name(i)}"), dtype=np.int16)
        y = np.asarray(_png(f"{whole['uri']}/{prior.image_name(i)}"), dtype=np.int16)
        assert np.abs(x - y).max() <= 1


def _png(uri):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(storage.read_bytes(uri))).convert("RGB")


def test_prior_batch_halves_on_out_of_memory(tiny_sd, tmp_path, monkeypatch):
    real = prior.load_pipeline
    calls = []

    def pipeline_with_small_memory(*a, **kw):
        pipe = real(*a, **kw)
        original = pipe.__call__

        class Limited:
            def __getattr__(self, name):
                return getattr(pipe, name)

            def __setattr__(self, name, value):
                setattr(pipe, name, value)

            def __call__(self, prompts, **kwargs):
                calls.append(len(prompts))
                if len(prompts) > 1:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                return original(prompts, **kwargs)

        return Limited()

    monkeypatch.setattr(prior, "load_pipeline", pipeline_with_small_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    result = prior.generate_prior_images(str(tiny_sd), str(tmp_path), prior.PriorConfig(
        class_prompt="a photo of dog", num_images=3, steps=2, batch_size=4))
    assert result["batch_size"] == 1 and result["made"] == 3 and result["complete"]
    assert calls[:3] == [3, 2, 1]



def test_prior_key_follows_the_sampler_and_trailing_timesteps_start_at_the_noisiest_step(tiny_sd):
    from diffusers import PNDMScheduler

    base = PNDMScheduler.from_pretrained(tiny_sd, subfolder="scheduler").config
    default = prior.PriorConfig(class_prompt="a photo of dog")
    key = prior.prior_key(prior.prior_spec("m", default, 32, "float32"))
    for change in ({"timestep_spacing": "model"}, {"steps": default.steps + 1}, {"scheduler": "pndm"}):
        other = dataclass_replace(default, **change)
        assert prior.prior_key(prior.prior_spec("m", other, 32, "float32")) != key, change
    assert prior.prior_key(prior.prior_spec("m", dataclass_replace(default, batch_size=2), 32, "float32")) == key
    trailing = prior.make_scheduler("dpmsolver++", base, "trailing")
    trailing.set_timesteps(15)
    assert int(trailing.timesteps[0]) == base["num_train_timesteps"] - 1
    leading = prior.make_scheduler("dpmsolver++", base, "model")  # SD 1.x: leading, offset 1
    leading.set_timesteps(15)
    assert int(leading.timesteps[0]) < base["num_train_timesteps"] - 1


def test_prior_sampler_default_is_the_measured_choice_and_moves_the_class_image_key():
    """PriorConfig's sampler is what bench/sampler.py chose by its rule (bench/sampler-choice.json), so the
    default cannot drift from the measurement; and the class images' key moves with the default: a set
    made under an earlier default is never taken for the new default's."""
    from pathlib import Path

    choice = json.loads((Path(__file__).resolve().parents[1] / "bench" / "sampler-choice.json").read_text())
    default = prior.PriorConfig(class_prompt="a photo of dog")
    chosen = choice["chosen"]
    assert {"scheduler": default.scheduler, "timestep_spacing": default.timestep_spacing,
            "steps": default.steps} == chosen
    # The measurement behind it: two model shapes, >= 16 prompts and seeds; the rule holds for the
    # chosen setting on every shape where some setting meets it, with no passing setting cheaper, and
    # on a shape where none does, the chosen setting is the closest one measured there.
    assert len(choice["summary"]) >= 2 and choice["prompts"] >= 16 and choice["seeds"] >= 16
    name = f"{chosen['scheduler']}/{chosen['timestep_spacing']}/{chosen['steps']}"
    assert name in choice["passing"]
    for shape, rows in choice["summary"].items():
        if shape in choice["unmet_shapes"]:
            assert choice["best_where_unmet"][shape] == name, shape
            continue
        assert all(rows[name][m]["share_at_or_below"] >= 0.9 for m in ("pixel", "latent")), shape
        calls = rows[name]["unet_calls_per_image"]
        assert not [k for k in choice["passing"] if rows[k]["unet_calls_per_image"] < calls], shape
    key = prior.prior_key(prior.prior_spec("m", default, 32, "float32"))
    earlier = [{"scheduler": "dpmsolver++", "timestep_spacing": "model", "steps": 20},  # the first default
               {"scheduler": "dpmsolver++", "timestep_spacing": "trailing", "steps": 15}]  # the second
    for old in earlier:
        if old != chosen:
            assert prior.prior_key(prior.prior_spec("m", dataclass_replace(default, **old), 32, "float32")) != key, old


# ---- training -----------------------------------------------------------------------------------


def test_prior_preservation_loss_is_the_sum_of_two_mses():
    torch.manual_seed(0)
    pred, target = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    loss, inst, prior_loss = train.dreambooth_loss(pred, target, with_prior=True, prior_weight=0.7)
    direct_inst = torch.nn.functional.mse_loss(pred[:2], target[:2])
    direct_prior = torch.nn.functional.mse_loss(pred[2:], target[2:])
    assert torch.allclose(inst, direct_inst) and torch.allclose(prior_loss, direct_prior)
    assert torch.allclose(loss, direct_inst + 0.7 * direct_prior)
    plain, _, zero = train.dreambooth_loss(pred, target, with_prior=False, prior_weight=0.7)
    assert torch.allclose(plain, torch.nn.functional.mse_loss(pred, target)) and zero == 0
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])
    weighted, _, _ = train.dreambooth_loss(pred, target, with_prior=True, prior_weight=1.0, weights=w)
    per = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(weighted, (per[:2] * w[:2]).mean() + (per[2:] * w[2:]).mean())


def test_min_snr_weights_match_the_formula():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([0, 10, 500, 999])
    a = sched.alphas_cumprod[t]
    snr = a / (1 - a)
    assert torch.allclose(train.min_snr_weights(sched, t, 5.0), torch.minimum(snr, torch.tensor(5.0)) / snr)


def run_train(tiny_sd, subject_dir, class_set, out, **overrides):
    cfg = train.TrainConfig(**{"max_train_steps": 2, "learning_rate": 1e-3, **overrides})
    return train.train_dreambooth(str(tiny_sd), str(subject_dir), str(out), cfg, class_images=class_set,
                                  checkpoints=str(out) + "-ckpt")


def test_the_configured_prior_weight_reaches_the_loss_and_changes_what_is_learned(tiny_sd, subject_dir, class_set,
                                                                                  tmp_path, monkeypatch):
    """Prior preservation is the point of DreamBooth: the loss function is tested on its own above; here
    the trainer must hand it the configured weight, and 0 vs 1 must train different weights."""
    from safetensors.torch import load_file

    from inkbooth import artifacts

    seen = []
    real = train.dreambooth_loss

    def spy(*args, **kwargs):
        seen.append((kwargs["with_prior"], kwargs["prior_weight"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "dreambooth_loss", spy)
    run_train(tiny_sd, subject_dir, class_set, tmp_path / "w037", max_train_steps=1, prior_loss_weight=0.37)
    assert seen and all(step == (True, 0.37) for step in seen)

    def unet(out):
        folder = artifacts.fetch(str(out))
        return load_file(str(folder / "model" / "unet" / "diffusion_pytorch_model.safetensors"))

    run_train(tiny_sd, subject_dir, class_set, tmp_path / "w0", max_train_steps=2, prior_loss_weight=0.0)
    run_train(tiny_sd, subject_dir, class_set, tmp_path / "w1", max_train_steps=2, prior_loss_weight=1.0)
    zero, one = unet(tmp_path / "w0"), unet(tmp_path / "w1")
    assert any(not torch.equal(zero[k], one[k]) for k in zero), "the prior term did not change the training"


def test_two_step_run_writes_every_expected_file(tiny_sd, subject_dir, class_set, tmp_path):
    m = run_train(tiny_sd, subject_dir, class_set, tmp_path / "run", checkpoint_every=1, validation_every=1,
                  validation_steps=2)
    files = {f.path for f in m.files}
    for expected in ("model/model_index.json", "model/unet/diffusion_pytorch_model.safetensors",
                     "model/unet/config.json", "model/text_encoder/model.safetensors",
                     "model/vae/diffusion_pytorch_model.safetensors", "model/tokenizer/vocab.json",
                     "model/scheduler/scheduler_config.json", "training.json",
                     "validation/step-00000001/00.png", "validation/step-00000002/00.png"):
        assert expected in files, expected
    assert any(f.startswith("logs/dreambooth/events.out.tfevents") for f in files), "TensorBoard scalars/images"
    assert m.metrics["steps"] == 2 and m.metrics["loss"] > 0
    assert m.lineage["class_images"] == class_set and m.lineage["instance_images_hash"]
    ckpts = checkpoints.list_checkpoints(str(tmp_path / "run-ckpt"))
    assert [c.step for c in ckpts] == [1], "a checkpoint per step but the last, at most 2 kept"
    names = {f.path for f in artifacts.read_manifest(ckpts[0].uri).files}
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= names
    unet = load_file(artifacts.fetch(str(tmp_path / "run")) / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    base = load_file(tiny_sd / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((unet[k] - base[k]).abs().max().item() for k in base) > 0, "the UNet was trained"


def test_checkpoint_limit_prunes_oldest(tiny_sd, subject_dir, class_set, tmp_path):
    run_train(tiny_sd, subject_dir, class_set, tmp_path / "run", max_train_steps=5, checkpoint_every=1,
              checkpoints_total_limit=2)
    assert [c.step for c in checkpoints.list_checkpoints(str(tmp_path / "run-ckpt"))] == [3, 4]
    (run,) = (tmp_path / "run-ckpt").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["run.json", "step-00000003", "step-00000004"]


class Killed(Exception):
    pass


def test_kill_and_resume_gives_the_uninterrupted_weights(tiny_sd, subject_dir, class_set, tmp_path):
    kw = dict(max_train_steps=6, checkpoint_every=2, train_text_encoder=True, gradient_accumulation_steps=2)
    run_train(tiny_sd, subject_dir, class_set, tmp_path / "straight", **kw)

    def die_at_5(step):
        if step == 5:
            raise Killed

    cfg = train.TrainConfig(learning_rate=1e-3, **kw)
    with pytest.raises(Killed):
        train.train_dreambooth(str(tiny_sd), str(subject_dir), str(tmp_path / "resumed"), cfg, class_images=class_set,
                               checkpoints=str(tmp_path / "resumed-ckpt"), _on_step=die_at_5)
    assert [c.step for c in checkpoints.list_checkpoints(str(tmp_path / "resumed-ckpt"))] == [2, 4]
    # What a kill right after a checkpoint could leave in an output folder: none of it may be sealed.
    stray = tmp_path / "resumed" / ".checkpoint-staging" / "step-00000004" / "scheduler.bin"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left over")
    m = run_train(tiny_sd, subject_dir, class_set, tmp_path / "resumed", resume="latest", **kw)
    assert m.metrics["resumed_from_step"] == 4 and m.metrics["steps_this_run"] == 2
    assert not [f.path for f in m.files if not f.path.startswith(("model/", "logs/", "training.json"))]
    straight, resumed = (artifacts.fetch(str(tmp_path / name)) / "model" for name in ("straight", "resumed"))
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a = load_file(straight / part)
        b = load_file(resumed / part)
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6, part
    te_base = load_file(tiny_sd / "text_encoder" / "model.safetensors")
    te = load_file(straight / "text_encoder" / "model.safetensors")
    assert max((te[k] - te_base[k]).abs().max().item() for k in te_base) > 0, \
        "the text encoder learns under gradient accumulation too"


def test_a_retrain_with_new_images_never_resumes_the_old_runs_checkpoint(tiny_sd, subject_dir, class_set, tmp_path,
                                                                         caplog):
    """Two trainings whose outputs share a parent share the default ``<output>/../checkpoints``."""
    import logging
    import shutil

    from inkbooth.demo import subject_images

    kw = dict(max_train_steps=2, checkpoint_every=1, learning_rate=1e-3, resume="latest")
    first = train.train_dreambooth(str(tiny_sd), str(subject_dir), str(tmp_path / "v1"), train.TrainConfig(**kw),
                                   class_images=class_set)
    more = tmp_path / "more-images"
    shutil.copytree(subject_dir, more)
    subject_images(tmp_path / "extra", 1, seed=42)
    shutil.copy(tmp_path / "extra" / "subject-00.png", more / "extra.png")
    with caplog.at_level(logging.INFO):
        second = train.train_dreambooth(str(tiny_sd), str(more), str(tmp_path / "v2"), train.TrainConfig(**kw),
                                        class_images=class_set)
    assert "resumed from" not in caplog.text
    assert "ignoring the checkpoints of other runs" in caplog.text and "instance_images" in caplog.text
    assert second.metrics["steps_this_run"] == 2 and second.metrics["resumed_from_step"] == 0
    assert second.lineage["run"] != first.lineage["run"] and second.lineage["resumed_from"] == ""
    runs = {c.run for c in checkpoints.list_checkpoints(str(tmp_path / "checkpoints"))}
    assert runs == {first.lineage["run"], second.lineage["run"]}, "each run keeps its own checkpoints"


@pytest.mark.parametrize("bad, message", [
    ({"instance_prompt": "a photo of dog"}, "does not contain the identifier 'sks'"),
    ({"mixed_precision": "fp8"}, "expected one of"),
    ({"lora_rank": 4, "train_text_encoder": True}, "not supported yet"),
    ({"resume": "yesterday"}, "resume must be"),
    ({"max_steps": 3}, "unknown key"),
])
def test_bad_training_configs_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(train.TrainConfig, bad)


def test_bad_training_inputs_are_refused(tiny_sd, class_set, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no subject images found"):
        train.train_dreambooth(str(tiny_sd), str(tmp_path / "empty"), str(tmp_path / "o"), train.TrainConfig(),
                               class_images=class_set)
    with pytest.raises(ValueError, match="needs class_images"):
        train.train_dreambooth(str(tiny_sd), str(tmp_path / "empty"), str(tmp_path / "o"), train.TrainConfig())
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train.train_dreambooth(str(tiny_sd), str(tmp_path / "empty"), str(tmp_path / "o"),
                               train.TrainConfig(mixed_precision="fp16"), class_images=class_set)


# ---- export and sampling -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_sd, subject_dir, class_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    run_train(tiny_sd, subject_dir, class_set, out, max_train_steps=2)
    return out


def test_single_file_export_matches_the_folder(trained, tmp_path):
    from diffusers import StableDiffusionPipeline

    uri, manifest = export.export_checkpoint(str(trained), str(tmp_path / "registry"),
                                             export.ExportCheckpointConfig(name="dog", dtype="fp32",
                                                                           single_file_dtype="fp32"))
    assert uri.endswith("dog/v1") and manifest.lineage["base_model_hash"]
    folder = artifacts.fetch(uri)
    from_folder = StableDiffusionPipeline.from_pretrained(folder / "diffusers", local_files_only=True)
    from_file = StableDiffusionPipeline.from_single_file(str(folder / "dog.safetensors"),
                                                         config=str(folder / "diffusers"), local_files_only=True)
    torch.manual_seed(0)
    x, t, states = torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        a = from_folder.unet(x, t, states).sample
        b = from_file.unet(x, t, states).sample
    assert torch.equal(a, b)
    keys = load_file(folder / "dog.safetensors").keys()
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.down.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)


def test_export_registers_versions_and_fp16(trained, tmp_path):
    reg = str(tmp_path / "registry")
    uri, _ = export.export_checkpoint(str(trained), reg, export.ExportCheckpointConfig(name="dog"))
    again, _ = export.export_checkpoint(str(trained), reg, export.ExportCheckpointConfig(name="dog"))
    assert uri == again, "same content, same version"
    cfg = json.loads((artifacts.fetch(uri) / "diffusers" / "unet" / "config.json").read_text())
    tensors = load_file(artifacts.fetch(uri) / "diffusers" / "unet" / "diffusion_pytorch_model.safetensors")
    assert next(iter(tensors.values())).dtype == torch.float16 and cfg["sample_size"] == 16


def test_lora_run_exports_lora_weights(tiny_sd, subject_dir, class_set, tmp_path):
    run_train(tiny_sd, subject_dir, class_set, tmp_path / "lora", lora_rank=4)
    assert (artifacts.fetch(str(tmp_path / "lora")) / "lora" / "pytorch_lora_weights.safetensors").is_file()
    uri, manifest = export.export_checkpoint(str(tmp_path / "lora"), str(tmp_path / "registry"),
                                             export.ExportCheckpointConfig(name="dog-lora"))
    assert "lora/pytorch_lora_weights.safetensors" in {f.path for f in manifest.files}
    unet = load_file(artifacts.fetch(uri) / "diffusers" / "unet" / "diffusion_pytorch_model.safetensors")
    assert not any("lora" in k for k in unet), "the full UNet carries the adapter merged in"


def test_sampling_makes_images_and_a_grid(trained, tmp_path):
    uri, _ = export.export_checkpoint(str(trained), str(tmp_path / "registry"), export.ExportCheckpointConfig(name="d"))
    m = sample.sample(uri, str(tmp_path / "samples"), sample.SampleConfig(steps=2, images_per_prompt=2))
    assert m.metrics["images"] == 4
    from PIL import Image

    assert Image.open(artifacts.fetch(str(tmp_path / "samples")) / "grid.png").size == (64, 64)


def test_launch_training_uses_one_process_per_device(tiny_sd, subject_dir, class_set, tmp_path):
    """What the pipeline's train step does on a multi-GPU node, here with 2 CPU processes."""
    m = train.launch_training(str(tiny_sd), str(subject_dir), str(tmp_path / "out"),
                              train.TrainConfig(max_train_steps=2), class_images=class_set, processes=2)
    assert m.metrics["processes"] == 2 and m.metrics["steps"] == 2
    assert not (tmp_path / "out" / ".train-config.json").exists()
    single = train.launch_training(str(tiny_sd), str(subject_dir), str(tmp_path / "one"),
                                   train.TrainConfig(max_train_steps=1), class_images=class_set, processes=1)
    assert single.metrics["processes"] == 1


def test_training_runs_as_two_processes(tiny_sd, subject_dir, class_set, tmp_path):
    """The multi-GPU path (accelerate/torchrun with several processes), on CPU with gloo."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "inkbooth.dreambooth.train", str(tiny_sd), str(subject_dir),
           str(tmp_path / "out"), "--class-images", class_set, "--max-train-steps", "3", "--checkpoint-every", "2",
           "--checkpoints", str(tmp_path / "ckpt")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(artifacts.read_text(str(tmp_path / "out"), "training.json"))["metrics"]
    assert metrics["processes"] == 2 and metrics["steps"] == 3
    (ckpt,) = checkpoints.list_checkpoints(str(tmp_path / "ckpt"))
    names = {f.path for f in artifacts.read_manifest(ckpt.uri).files}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= names, "every process's RNG state is kept"
    assert artifacts.read_manifest(ckpt.uri).lineage["run_identity"]["processes"] == 2
    assert [p.name for p in (tmp_path / "out").rglob("*") if "staging" in p.name] == [], "no staging in the output"

