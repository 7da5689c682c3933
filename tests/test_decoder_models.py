"""The generative test models of tests/models/decoder_models.py, checked in the Python
onnxruntime alone (no server): the KV cache computes what a full pass computes, a sequence padded
in a batch (on the left, or on the right as ORT GenAI pads) gets the logits it gets alone, greedy
generation is deterministic and ends at EOS or at the context length, and, where the
onnxruntime-genai package is installed, ORT GenAI loads the folders and generates the same
tokens."""

from __future__ import annotations

import numpy as np
import pytest

import decoder_models as dm
from decoder_models import EOS, PAD, empty_past, load_config, reference_generate, run_step, session

NAMES = [s.name for s in dm.SPECS]
# Prompts of lengths 1, 3, 7 and 12 (no pad token: ORT GenAI reads a pad as padding in a batch).
PROMPTS = [[5], [5, 9, 10], [3, 4, 5, 6, 7, 8, 9], list(range(3, 15))]
# What greedy generates first from PROMPTS[0] and PROMPTS[2] (pinned: the server tests and any
# other implementation of the contract must give these; decoder_eos: all of it, to EOS).
PINNED = {
    "decoder_tiny": ([14, 11, 5, 15, 63, 18, 12, 42, 5, 28], [7, 7, 7, 7, 49, 44, 33, 10, 5, 49]),
    "decoder_gqa": ([41, 30, 50, 30, 24, 30, 24, 30, 55, 30], [50, 50, 30, 24, 44, 50, 50, 50, 50, 50]),
    "decoder_eos": ([33, 27, 25, 17, 41, 46, 1, 21, 10, 11, 12, EOS], [47, 17, 17, 17, 58, 10, 11, 12, EOS]),
}
TOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("decoders")
    assert dm.make_decoder_models(out) == NAMES + [s.name for s in dm.SERVED_ONLY]
    return out


def full_pass(d, tokens):
    """Logits [len, vocab] of one run over the whole sequence, without a cache."""
    _, cfg = load_config(d)
    n = len(tokens)
    logits, present = run_step(session(d), cfg, [tokens], np.ones((1, n)), [list(range(n))], empty_past(cfg, 1))
    assert all(p.shape[2] == n for p in present)
    return logits[0]


def incremental(d, tokens, chunks):
    """Logits [len, vocab] computed chunk by chunk with the KV cache (chunks: the lengths)."""
    _, cfg = load_config(d)
    sess, past, done, rows = session(d), empty_past(cfg, 1), 0, []
    for c in chunks:
        step = tokens[done : done + c]
        logits, past = run_step(sess, cfg, [step], np.ones((1, done + c)), [list(range(done, done + c))], past)
        done += c
        assert all(p.shape[2] == done for p in past)
        rows.append(logits[0])
    assert done == len(tokens)
    return np.concatenate(rows)


@pytest.mark.parametrize("name", NAMES)
def test_genai_layout(models, name):
    d, cfg = load_config(models / name)
    assert (d / "model.onnx").is_file() and d.name == "1"
    m = cfg["model"]
    assert (m["type"], m["eos_token_id"], m["pad_token_id"], m["vocab_size"], m["context_length"]) == (
        "decoder",
        EOS,
        PAD,
        64,
        64,
    )
    dec = m["decoder"]
    assert dec["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert dec["outputs"]["present_value_names"] == "present.%d.value"
    assert cfg["search"]["do_sample"] is False and cfg["search"]["num_beams"] == 1
    sess = session(d)
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    assert set(ins) == {"input_ids", "attention_mask", "position_ids"} | {
        f"past_key_values.{i}.{k}" for i in range(dec["num_hidden_layers"]) for k in ("key", "value")
    }
    layers = range(dec["num_hidden_layers"])
    assert set(outs) == {"logits"} | {f"present.{i}.{k}" for i in layers for k in ("key", "value")}
    assert ins["past_key_values.0.key"].shape[1] == dec["num_key_value_heads"]
    config = (models / name / "config.pbtxt").read_text()
    assert 'backend: "onnxrs"' in config and "decoupled: true" in config, config
    # decoder_gqa's config is left for onnxrs to complete (tests/test_generate.py checks it).
    assert ("max_batch_size: 0" in config) == (name != "decoder_gqa"), config
    assert "model_transaction_policy { decoupled: true }" in config, config
    if name != "decoder_gqa":
        assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }' in config, config
        assert '{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true }' in config, config
        assert '{ name: "output_ids" data_type: TYPE_INT64 dims: [ -1 ] }' in config, config


@pytest.mark.parametrize("name", NAMES)
def test_kv_cache_equals_full_pass(models, name):
    d = models / name
    prompt = PROMPTS[3]
    tokens = prompt + reference_generate(d, prompt, 20)
    full = full_pass(d, tokens)
    n = len(tokens)
    uneven = [5, 4, 3, 1, 7]
    assert n > sum(uneven)
    for chunks in ([len(prompt)] + [1] * (n - len(prompt)), [1] * n, uneven + [n - sum(uneven)]):
        got = incremental(d, tokens, chunks)
        np.testing.assert_allclose(got, full, rtol=0, atol=TOL, err_msg=f"chunks {chunks}")
    # And greedy read off the full pass is what reference_generate produced.
    assert [int(t) for t in full[len(prompt) - 1 : -1].argmax(-1)] == tokens[len(prompt) :]


def padded_batch_matches_alone(d, prompts, side, steps=8):
    """Runs the prompts as one batch padded on `side`, then `steps` decode steps each feeding
    every sequence its own greedy continuation; every sequence's logits at its real positions
    must be what a full pass over it alone gives."""
    _, cfg = load_config(d)
    sess = session(d)
    conts = [reference_generate(d, p, steps, min_gap=0) for p in prompts]
    steps = min(len(c) for c in conts)
    width = max(map(len, prompts))
    ids, mask, pos = [], [], []
    for p in prompts:
        pad = width - len(p)
        real = list(range(len(p)))
        if side == "left":  # pads first, with mask 0 (and position 0)
            ids.append([PAD] * pad + p), mask.append([0] * pad + [1] * len(p)), pos.append([0] * pad + real)
        else:  # ORT GenAI: pads last, mask 0, positions 0.. on the real tokens
            ids.append(p + [PAD] * pad), mask.append([1] * len(p) + [0] * pad), pos.append(real + [0] * pad)
    mask = np.array(mask)
    logits, past = run_step(sess, cfg, ids, mask, pos, empty_past(cfg, len(prompts)))
    worst = 0.0
    alone = [full_pass(d, p + c[:steps]) for p, c in zip(prompts, conts)]
    for b, p in enumerate(prompts):
        at = np.flatnonzero(mask[b])
        worst = max(worst, float(np.abs(logits[b, at] - alone[b][: len(p)]).max()))
    for k in range(steps):
        mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], axis=1)
        step_ids = [[c[k]] for c in conts]
        step_pos = [[len(p) + k] for p in prompts]
        logits, past = run_step(sess, cfg, step_ids, mask, step_pos, past)
        for b, p in enumerate(prompts):
            worst = max(worst, float(np.abs(logits[b, 0] - alone[b][len(p) + k]).max()))
    assert worst <= TOL, f"{side} padding: logits differ from alone by {worst:.2e}"
    return worst


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", NAMES)
def test_padded_batch_equals_alone(models, name, side):
    d = models / name
    padded_batch_matches_alone(d, [PROMPTS[1], PROMPTS[3]], side)
    padded_batch_matches_alone(d, [PROMPTS[3], PROMPTS[0], PROMPTS[2], [7, 8]], side)


@pytest.mark.parametrize("name", NAMES)
def test_reference_generate(models, name):
    d = models / name
    first = [reference_generate(d, p, 100) for p in PROMPTS]
    # Deterministic, in the same session and in a fresh one.
    assert first == [reference_generate(d, p, 100) for p in PROMPTS]
    dm._SESSIONS.clear()
    assert first == [reference_generate(d, p, 100) for p in PROMPTS]
    want0, want2 = PINNED[name]
    assert first[0][: len(want0)] == want0 and first[2][: len(want2)] == want2, first
    for p, got in zip(PROMPTS, first):
        # Ends at EOS (included, nowhere else) or at the context length (64).
        assert EOS not in got[:-1] and PAD not in got
        assert got[-1] == EOS or len(p) + len(got) == 64, (p, got)
    assert reference_generate(d, PROMPTS[3], 3) == first[3][:3]
    near_end = reference_generate(d, list(range(3, 63)), 100)
    assert len(near_end) == 4 or near_end[-1] == EOS, near_end


def test_eos_is_reachable(models):
    d = models / "decoder_eos"
    for prompt, want in dm.EOS_PROMPTS:
        assert reference_generate(d, prompt, 20) == want
    # The chain 10 -> 11 -> 12 -> EOS holds after any prefix.
    for prefix in ([3], [40, 41, 42, 43], list(range(20, 40))):
        assert reference_generate(d, prefix + [10], 10) == [11, 12, EOS]
    # Also reached without the chain in the prompt: [5] wanders into it.
    assert reference_generate(d, [5], 20)[-4:] == [10, 11, 12, EOS]


def og_generate(og, model, prompts, max_length):
    """ORT GenAI's greedy tokens after each prompt (a batch when there are several: GenAI pads
    them on the right with pad_token_id)."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, batch_size=len(prompts))
    gen = og.Generator(model, params)
    width = max(map(len, prompts))
    gen.append_tokens(np.array([p + [PAD] * (width - len(p)) for p in prompts], np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [[int(t) for t in gen.get_sequence(i)][width:] for i in range(len(prompts))]


def genai_view(tokens):
    """The reference's tokens as GenAI reports a sequence run alone: without the EOS that ends it."""
    return tokens[:-1] if tokens and tokens[-1] == EOS else tokens


@pytest.mark.parametrize("name", NAMES)
def test_ort_genai_generates_the_reference(models, name):
    # In ci/requirements.txt: a missing package is a broken set-up, not a reason to skip.
    import onnxruntime_genai as og
    d, cfg = load_config(models / name)
    model = og.Model(str(d))
    context = cfg["model"]["context_length"]
    refs = [reference_generate(d, p, context) for p in PROMPTS]
    for p, ref in zip(PROMPTS, refs):
        assert og_generate(og, model, [p], context) == [genai_view(ref)], p
    # The four prompts as one right-padded batch: each sequence generates what it does alone.
    width = max(map(len, PROMPTS))
    got = og_generate(og, model, PROMPTS, width + 16)
    # GenAI stops the batch when every sequence has ended: one that ended earlier reads EOS then
    # pads; the step that ends the last one is not appended (as alone, where EOS is not).
    heads = [ref[:16] for ref in refs]
    longest = max(map(len, heads))
    if all(h[-1] == EOS for h in heads if len(h) == longest):
        longest -= 1
    assert got == [(h + [PAD] * 16)[:longest] for h in heads], (got, refs)
