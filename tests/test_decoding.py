"""The decoding engine (inkbooth.ocr.recognition.decoding) reproduces transformers' generate, token for token."""

from __future__ import annotations

import numpy as np
import pytest

from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition import decoding
from inkbooth.ocr.recognition.decoding import _topk, load_ort_decoder
from inkbooth.ocr.recognition.exported import DECODER_STEP, choose_variant, has_engine
from inkbooth.ocr.recognition.graphs import (
    make_attention_decoder,
    make_decoder_init,
    make_decoder_step,
    unsupported_generation,
)
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer, resolve_model


@pytest.fixture(scope="module")
def eos_model(tiny_trocr):
    """The tiny TrOCR with an EOS row that makes hypotheses end at different steps (a random model never stops)."""
    import torch
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel.from_pretrained(tiny_trocr, attn_implementation="eager").eval()
    processor = TrOCRProcessor.from_pretrained(tiny_trocr)
    pv = processor(images=[im for im, _ in synthetic.line_images(24, seed=9)], return_tensors="pt").pixel_values
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        seqs = model.generate(pixel_values=pv, num_beams=1, max_new_tokens=20)
        out = model(pixel_values=pv, decoder_input_ids=seqs[:, :-1], output_hidden_states=True)
        h = out.decoder_hidden_states[-1].flatten(0, 1)
        direction = h.mean(0)
        # EOS's logit along the hidden states' mean direction, at about the usual top logit.
        scale = out.logits.flatten(0, 1).max(-1).values.median() / (h @ direction).quantile(0.97)
        model.decoder.output_projection.weight[eos] = scale * direction
    return model, pv


def _torch_step(model, states):
    """The exported step module run in torch, as a step function for the searches."""
    import torch

    init, step_module = make_decoder_init(model), make_decoder_step(model)
    layer = model.decoder.model.decoder.layers[0].self_attn
    with torch.no_grad():
        cross = init(states)
    past = [torch.zeros(states.shape[0], layer.num_heads, 0, layer.head_dim)] * len(cross)

    def step(tokens, rows):
        nonlocal past
        with torch.no_grad():
            out = step_module(torch.from_numpy(tokens).view(-1, 1), torch.from_numpy(rows), *past, *cross)
        past = list(out[2:])
        return out[0].numpy(), out[1].numpy()

    return step


@pytest.mark.parametrize("beams,min_new", [(1, 0), (1, 9), (2, 0), (4, 0), (4, 12)])
def test_search_gives_generate_tokens_and_teacher_forced_confidences(eos_model, beams, min_new):
    import torch

    pass  # IMPORT-DROPPED

    model, pv = eos_model
    gen = model.generation_config
    kw = {"num_beams": beams, "max_new_tokens": 20, "early_stopping": beams > 1}
    if min_new:
        kw["min_new_tokens"] = min_new
    with torch.no_grad():
        ref = model.generate(pixel_values=pv, **kw).numpy()
        states = model.encoder(pixel_values=pv).last_hidden_state
    args = {"start_id": model.config.decoder_start_token_id, "eos_id": gen.eos_token_id, "pad_id": gen.pad_token_id,
            "max_new_tokens": 20, "min_new_tokens": min_new}
    step = _torch_step(model, states)
    got = (decoding.beam_search(step, len(pv), beams, **args) if beams > 1
           else decoding.greedy_search(step, len(pv), **args))
    assert got.sequences.shape == ref.shape
    assert (got.sequences == ref).all(), "the engine's search must choose generate's tokens"
    ends = [int(np.flatnonzero(r[1:] == gen.eos_token_id)[0]) if (r[1:] == gen.eos_token_id).any() else None
            for r in ref]
    if beams == 4 and not min_new:
        assert len({e for e in ends}) > 1, "the test model should end hypotheses at different steps"
    # Log-probabilities and cross-attention along each hypothesis equal a teacher-forced pass over it.
    with torch.no_grad():
        logits, cross = make_attention_decoder(model)(torch.from_numpy(got.sequences[:, :-1]), states)
    logprobs = torch.log_softmax(logits.double(), -1).numpy()
    for b, end in enumerate(ends):
        n = (end + 1) if end is not None else ref.shape[1] - 1
        tf = logprobs[b, np.arange(n), got.sequences[b, 1:n + 1]]
        np.testing.assert_allclose(got.token_logprobs[b, :n], tf, atol=1e-4)
        np.testing.assert_allclose(got.attention[b, :n], cross.numpy()[b, :n], atol=1e-5)


def test_topk_orders_ties_by_index():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]], dtype=np.float32)
    assert _topk(x, 3).tolist() == [[1, 2, 4]]
    assert _topk(x, 4).tolist() == [[1, 2, 4, 3]]


def test_generation_settings_the_engine_does_not_reproduce_are_named():
    from transformers import GenerationConfig

    assert unsupported_generation(GenerationConfig()) == []
    assert unsupported_generation(GenerationConfig(no_repeat_ngram_size=3, repetition_penalty=1.2)) == [
        "repetition_penalty", "no_repeat_ngram_size"]


def test_onnx_engine_reads_like_torch(tiny_trocr, tiny_onnx):
    """The exported graphs (fp32) choose the same tokens as PyTorch's generate, with beams and greedy."""
    import torch
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    from inkbooth import artifacts
    pass  # IMPORT-DROPPED

    out = artifacts.fetch(str(tiny_onnx[0]))  # the export's current version
    assert has_engine(out / "fp32") and not (out / "fp32" / "decoder_with_past_model.onnx").exists()
    engine = load_ort_decoder(out / "fp32", threads=1)
    assert isinstance(engine, decoding.OrtEngine)
    model = VisionEncoderDecoderModel.from_pretrained(tiny_trocr, attn_implementation="eager").eval()
    pv = TrOCRProcessor.from_pretrained(tiny_trocr)(
        images=[im for im, _ in synthetic.line_images(12, seed=3)], return_tensors="pt").pixel_values
    for beams in (1, 3):
        with torch.no_grad():
            ref = model.generate(pixel_values=pv, num_beams=beams, max_new_tokens=16, early_stopping=beams > 1)
        assert torch.equal(engine.generate(pixel_values=pv, num_beams=beams, max_new_tokens=16), ref)


def test_beam_below_reads_only_the_unsure_lines_again_with_beams(tiny_onnx):
    """Greedy first; the lines whose least likely token is below the threshold get the beam search's reading,
    the others keep greedy's; 1 is the beam search on every line, 0 greedy alone."""
    from transformers import TrOCRProcessor

    from inkbooth import artifacts

    out = artifacts.fetch(str(tiny_onnx[0]))
    engine = load_ort_decoder(out / "fp32", threads=1)
    pv = TrOCRProcessor.from_pretrained(out / "fp32")(
        images=[im for im, _ in synthetic.line_images(12, seed=5)], return_tensors="np").pixel_values
    kw = {"num_beams": 3, "max_new_tokens": 16}
    beams = engine.decode(pv, **kw)
    greedy = engine.decode(pv, num_beams=1, max_new_tokens=16)
    assert not (beams.sequences == greedy.sequences).all(), "the test needs lines that beams read otherwise"
    least = decoding.least_likely(greedy, engine.eos_id)
    threshold = float(np.exp(np.median(least)))
    unsure = np.exp(least) < threshold
    assert 0 < unsure.sum() < len(pv)
    mixed = engine.decode(pv, beam_below=threshold, **kw)
    for b in range(len(pv)):
        ref = beams if unsure[b] else greedy
        n = ref.sequences.shape[1]
        assert mixed.sequences[b, :n].tolist() == ref.sequences[b].tolist()
        np.testing.assert_allclose(mixed.token_logprobs[b, :n - 1], ref.token_logprobs[b], atol=1e-6)
        np.testing.assert_allclose(mixed.attention[b, :n - 1], ref.attention[b], atol=1e-6)
    assert (engine.decode(pv, beam_below=1.0, **kw).sequences == beams.sequences).all()
    assert (engine.decode(pv, beam_below=0.0, **kw).sequences == greedy.sequences).all()


def test_least_likely_stops_at_the_first_eos():
    decoded = decoding.Decoded(np.array([[0, 5, 2, 7], [0, 5, 6, 7]]), np.array([[-0.1, -0.2, -3.0], [-0.1, -0.2, -3.0]]),
                               np.zeros((2, 3, 1)))
    np.testing.assert_allclose(decoding.least_likely(decoded, eos_id=2), [-0.2, -3.0])


def test_auto_variant_is_int8_on_cpu_fp16_on_cuda_and_falls_back_to_fp32():
    everything = {"fp32", "int8", "fp16"}
    assert choose_variant("auto", everything, "cpu") == "int8"
    assert choose_variant("auto", everything, "cuda") == "fp16"
    assert choose_variant("auto", {"fp32"}, "cpu") == choose_variant("auto", {"fp32", "int8"}, "cuda") == "fp32"
    assert choose_variant("fp32", everything, "cpu") == "fp32"
    with pytest.raises(ValueError, match="'int8' is not in this export"):
        choose_variant("int8", {"fp32"}, "cpu")


def test_a_recognize_worker_fetches_only_the_variant_it_runs(tiny_onnx, bucket, monkeypatch, tmp_path):
    from inkbooth import artifacts, storage
    out, manifest = tiny_onnx
    remote = f"{bucket}/exports/tiny"
    storage.upload_dir(out, remote)
    monkeypatch.setenv("INKBOOTH_CACHE", str(tmp_path / "cache"))
    downloaded = []
    real = storage.download
    monkeypatch.setattr(storage, "download", lambda src, *a, **k: (downloaded.append(src), real(src, *a, **k))[1])
    config = RecognizeConfig(device="cpu")  # variant auto: the export's measured choice for CPU
    folder, content = resolve_model(remote, config)
    chosen = manifest.metrics["variants"]["choice"]
    other = "int8" if chosen == "fp32" else "fp32"
    assert config.variant == chosen and content == manifest.content_hash
    variant_files = artifacts.file_uri(remote, f"{chosen}/{DECODER_STEP}").rsplit("/", 1)[0] + "/"
    assert downloaded and all(u.startswith(variant_files) for u in downloaded)
    assert (folder / chosen / DECODER_STEP).is_file() and not (folder / other).exists()
    n = len(downloaded)
    resolve_model(remote, RecognizeConfig(device="cpu"))
    assert len(downloaded) == n, "a second worker on this node reuses the fetched variant"
    assert Recognizer(folder, config).read([]) == []
    # The whole artifact afterwards still fetches (and verifies) every file.
    whole = artifacts.fetch(remote)
    assert (whole / "fp32" / DECODER_STEP).is_file() and (whole / artifacts.MANIFEST).is_file()
    with pytest.raises(artifacts.NotPublishedError, match="no files under 'fp64/'"):
        artifacts.fetch(remote, only="fp64")
