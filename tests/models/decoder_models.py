#!/usr/bin/env python3
"""Generative test models: small decoder-only transformers with a KV cache, in the folder layout
ONNX Runtime GenAI's model builder writes, and a greedy reference generator.

    decoder_models.py OUTDIR      every decoder model, as OUTDIR/<name>/{config.pbtxt,1/model.onnx,1/genai_config.json}

Each model follows ORT GenAI's decoder contract (standard ONNX ops only, opset 21):

  inputs   input_ids int64 [batch, seq], attention_mask int64 [batch, total_seq] (1 real, 0 padding),
           position_ids int64 [batch, seq], past_key_values.{i}.key/.value float32
           [batch, num_kv_heads, past_seq, head_size] (total_seq = past_seq + seq)
  outputs  logits float32 [batch, seq, vocab], present.{i}.key/.value float32
           [batch, num_kv_heads, total_seq, head_size] (past and this step's keys/values, axis 2)

  x = tok_emb[input_ids] + pos_emb[position_ids]     (learned absolute positions, read by position_ids)
  per layer: x += Wo(attention(RMSNorm(x)));  x += W2(silu(W1(RMSNorm(x))))
  logits = RMSNorm(x) @ W_lm + b_lm (pad's logit -100; decoder_eos: a fixed row after a chain token)

Attention is causal (query j of a step sees cache slots 0..past_seq+j) and masked by
attention_mask: a slot whose mask is 0 gets -1e9 before Softmax, finite so a query row with every
slot masked (a left pad) stays finite instead of NaN. With num_kv_heads < num_heads each K/V head
serves num_heads / num_kv_heads consecutive query heads (head h reads KV head h // group, as
Hugging Face's repeat_kv). Positions come only from position_ids, so a sequence padded on the
left or on the right (ORT GenAI pads batched prompts on the right: pads get mask 0, and the
tokens generated after them get mask 1 and position_ids counting real tokens only) computes the
same logits at its real positions as alone (tests/test_decoder_models.py checks both).

Models (vocab 64, hidden 32, head_size 8, 2 layers, context 64; pad 0, bos 1, eos 2; the LM head
sets pad's logit to -100, so pad is never generated):

  decoder_tiny   4 heads, 4 KV heads
  decoder_gqa    4 heads, 2 KV heads (grouped-query attention)
  decoder_eos    as decoder_tiny with other weights, and a fixed logits row after each token of
                 the chain 10 -> 11 -> 12 -> eos (2), whatever came before: a prompt ending in 10
                 generates [11, 12, 2] and stops after 3 tokens, one ending in 12 generates [2];
                 [5] reaches the chain by itself and generates 12 tokens, the last EOS;
                 [3..9] 9 tokens, the last EOS; [20..39] generates [27, 2] (EOS without the chain).
                 EOS_PROMPTS holds these prompts and what greedy generates from them.

Weights come from numpy.random.default_rng with a fixed seed per model. The LM head's scale
(logit_scale 4: logits of a few units to ~20) weighs two things that both grow with it: the gap
between the two largest logits, and float32 rounding, by which a padded batch or the KV cache
moves the logits (up to 4.8e-6 measured; the tests allow 1e-5). The seeds were picked so greedy
never meets a near tie in the runs the tests make (smallest top-2 gap 3.0e-3 over ~1,350 steps;
1.9e-3 over ~3,100 steps with 30 random prompts added):
`reference_generate` checks the gap exceeds 1e-3 at every step, and fails rather than choose
between near-equal tokens (a new prompt that meets one: pick another).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PAD, BOS, EOS = 0, 1, 2
# decoder_eos: each token of the chain is followed by the next, the last by EOS.
EOS_CHAIN = (10, 11, 12)
# (prompt, what greedy generates from it) for decoder_eos: through the chain (the first two from
# the prompt's last token, the next two after wandering into it) and once without it.
EOS_PROMPTS = (
    ([5, 9, 10], [11, 12, EOS]),
    ([3, 12], [EOS]),
    ([3, 4, 5, 6, 7, 8, 9], [47, 17, 17, 17, 58, 10, 11, 12, EOS]),
    ([5], [33, 27, 25, 17, 41, 46, 1, 21, 10, 11, 12, EOS]),
    ([20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39], [27, EOS]),
)
# The smallest difference between the two largest logits allowed at a greedy step.
MIN_GAP = 1e-3
MASKED = -1e9
PAD_LOGIT = -100.0


@dataclass(frozen=True)
class DecoderSpec:
    name: str
    num_layers: int = 2
    vocab: int = 64
    hidden: int = 32
    num_heads: int = 4
    num_kv_heads: int = 4
    head_size: int = 8
    context: int = 64
    ffn: int = 64
    seed: int = 0
    logit_scale: float = 4.0
    eos_chain: tuple[int, ...] = ()

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads


SPECS = (
    DecoderSpec("decoder_tiny", seed=107),
    DecoderSpec("decoder_gqa", num_kv_heads=2, seed=207),
    DecoderSpec("decoder_eos", seed=305, eos_chain=EOS_CHAIN),
)
# Served by the tests but not among the models tests/test_decoder_models.py checks one by one: a
# long context (65,536 positions: a stream of it runs for tens of seconds, while 2,000 tokens take
# half a second here), for a stream that runs long enough for a client to act on it
# (tests/test_generate.py cancels one mid-stream; tests/test_fleet.py holds a generator's only
# place with one while other requests wait).
SERVED_ONLY = (
    DecoderSpec("decoder_long", seed=409, context=65536),
    # decoder_tiny's weights with a tokenizer.json (`write_tokenizer`): text in and out.
    DecoderSpec("decoder_text", seed=107),
    # decoder_tiny's weights on a GPU instance (KIND_GPU, ONNX Runtime's CUDA provider): the GPU
    # check (tests/gpu/gpu_check.py, run by ci/gpu-run.sh on a GPU host) compares its greedy
    # tokens with decoder_tiny's; without a GPU its load fails.
    DecoderSpec("decoder_gpu", seed=107),
)
# The models whose folder has a tokenizer.
WITH_TOKENIZER = ("decoder_text",)

# The generation benchmark's decoder (bench/generate.py), apart from SPECS so the test models stay
# small: 5.1 M parameters (parameter_count), weights scaled as the test models' are. The benchmark
# compares onnxrs's greedy tokens with ORT GenAI's, not with reference_generate (its tie check did
# pass on the benchmark's 16 prompts x 128 tokens, but a vocabulary of 4096 makes near ties likelier).
BENCH_SPEC = DecoderSpec(
    "decoder_bench", num_layers=4, vocab=4096, hidden=256, num_heads=8, num_kv_heads=4, head_size=32,
    context=512, ffn=1024, seed=1009,
)


def weights(spec: DecoderSpec) -> dict[str, np.ndarray]:
    """The model's initializers by name, from the spec's seed."""
    rng = np.random.default_rng(spec.seed)
    e, h, kv, d, f, v = spec.hidden, spec.num_heads, spec.num_kv_heads, spec.head_size, spec.ffn, spec.vocab

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = {
        "tok_emb": normal((v, e), 1.0),
        "pos_emb": normal((spec.context, e), 0.5),
    }
    for i in range(spec.num_layers):
        w[f"l{i}.attn_norm"] = (1.0 + normal((e,), 0.1)).astype(np.float32)
        w[f"l{i}.wq"] = normal((e, h * d), 1.0 / math.sqrt(e))
        w[f"l{i}.wk"] = normal((e, kv * d), 1.0 / math.sqrt(e))
        w[f"l{i}.wv"] = normal((e, kv * d), 1.0 / math.sqrt(e))
        w[f"l{i}.wo"] = normal((h * d, e), 1.0 / math.sqrt(h * d))
        w[f"l{i}.mlp_norm"] = (1.0 + normal((e,), 0.1)).astype(np.float32)
        w[f"l{i}.w1"] = normal((e, f), 1.0 / math.sqrt(e))
        w[f"l{i}.w2"] = normal((f, e), 1.0 / math.sqrt(f))
    w["final_norm"] = (1.0 + normal((e,), 0.1)).astype(np.float32)
    w["lm_head"] = normal((e, v), spec.logit_scale / math.sqrt(e))
    w["lm_bias"] = normal((v,), 1.0)
    # The pad token's logit is a constant far below the rest, so it is never generated (ORT
    # GenAI finds a batch's padding by the token: a generated pad would look like one).
    w["pad_column"] = np.arange(v) == PAD
    w["pad_logit"] = np.full((v,), PAD_LOGIT, np.float32)
    if spec.eos_chain:
        # After a token of the chain the logits are a fixed row: the next token of the chain
        # (or EOS after the last) at 10, the others at 0 (pad at PAD_LOGIT).
        is_chain = np.zeros((v, 1), bool)
        rows = np.zeros((v, v), np.float32)
        rows[:, PAD] = PAD_LOGIT
        for a, b in zip(spec.eos_chain, spec.eos_chain[1:] + (EOS,)):
            is_chain[a] = True
            rows[a, b] = 10.0
        w["chain_token"] = is_chain
        w["chain_logits"] = rows
    return w


def build_decoder(spec: DecoderSpec) -> onnx.ModelProto:
    from make_models import graph_model, vi

    w = weights(spec)
    e, h, kv, d = spec.hidden, spec.num_heads, spec.num_kv_heads, spec.head_size
    inits = [numpy_helper.from_array(a, k) for k, a in w.items()]

    def const(name, value, dtype):
        inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))

    const("axis_last", [-1], np.int64)
    const("eps", 1e-6, np.float32)
    const("zero_f", 0.0, np.float32)
    const("masked", MASKED, np.float32)
    const("zero_i", 0, np.int64)
    const("one_i", 1, np.int64)
    const("scale", 1.0 / math.sqrt(d), np.float32)
    const("q_shape", [0, 0, h, d], np.int64)
    const("kv_shape", [0, 0, kv, d], np.int64)
    const("merge_shape", [0, 0, h * d], np.int64)
    const("ax1", [1], np.int64)
    const("ax0", [0], np.int64)
    const("ax12", [1, 2], np.int64)
    if spec.group > 1:
        const("heads_shape", [0, h, -1, d], np.int64)
        const("group_expand", [1, 1, spec.group, 1, 1], np.int64)
        const("ax2", [2], np.int64)

    n = []

    def node(op, ins, outs, **attrs):
        n.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0]

    def rms(x, weight, tag):
        sq = node("Mul", [x, x], [f"{tag}.sq"])
        ms = node("ReduceMean", [sq, "axis_last"], [f"{tag}.ms"], keepdims=1)
        r = node("Sqrt", [node("Add", [ms, "eps"], [f"{tag}.mse"])], [f"{tag}.r"])
        return node("Mul", [node("Div", [x, r], [f"{tag}.n"]), weight], [f"{tag}.out"])

    # Embeddings.
    tok = node("Gather", ["tok_emb", "input_ids"], ["emb.tok"], axis=0)
    pos = node("Gather", ["pos_emb", "position_ids"], ["emb.pos"], axis=0)
    x = node("Add", [tok, pos], ["emb.out"])

    # The additive mask [batch, 1, seq, total_seq]: 0 where query j (cache slot past + j) may see
    # slot k (k <= past + j and attention_mask[k] == 1), MASKED elsewhere.
    seq = node("Shape", ["input_ids"], ["mask.seq"], start=1, end=2)
    total = node("Shape", ["attention_mask"], ["mask.total"], start=1, end=2)
    past = node("Sub", [total, seq], ["mask.past"])
    past_s = node("Squeeze", [past], ["mask.past_s"])
    total_s = node("Squeeze", [total], ["mask.total_s"])
    q_slot = node("Range", [past_s, total_s, "one_i"], ["mask.q_slot"])
    k_slot = node("Range", ["zero_i", total_s, "one_i"], ["mask.k_slot"])
    q_col = node("Unsqueeze", [q_slot, "ax1"], ["mask.q_col"])
    k_row = node("Unsqueeze", [k_slot, "ax0"], ["mask.k_row"])
    causal = node("LessOrEqual", [k_row, q_col], ["mask.causal"])
    real = node("Cast", ["attention_mask"], ["mask.real"], to=TensorProto.BOOL)
    real4 = node("Unsqueeze", [real, "ax12"], ["mask.real4"])
    allowed = node("And", [causal, real4], ["mask.allowed"])
    mask = node("Where", [allowed, "zero_f", "masked"], ["mask.add"])

    inputs = [
        vi("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        vi("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        vi("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [vi("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", spec.vocab])]
    for i in range(spec.num_layers):
        p = f"l{i}"
        for kind in ("key", "value"):
            inputs.append(
                vi(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["batch_size", kv, "past_sequence_length", d])
            )
            outputs.append(
                vi(f"present.{i}.{kind}", TensorProto.FLOAT, ["batch_size", kv, "total_sequence_length", d])
            )
        hn = rms(x, f"{p}.attn_norm", f"{p}.attn_norm")

        def heads(weight, shape, tag):
            y = node("MatMul", [hn, weight], [f"{tag}.proj"])
            y = node("Reshape", [y, shape], [f"{tag}.split"])
            return node("Transpose", [y], [f"{tag}.heads"], perm=[0, 2, 1, 3])

        q = heads(f"{p}.wq", "q_shape", f"{p}.q")
        k = heads(f"{p}.wk", "kv_shape", f"{p}.k")
        v = heads(f"{p}.wv", "kv_shape", f"{p}.v")
        k_all = node("Concat", [f"past_key_values.{i}.key", k], [f"present.{i}.key"], axis=2)
        v_all = node("Concat", [f"past_key_values.{i}.value", v], [f"present.{i}.value"], axis=2)
        if spec.group > 1:

            def repeat(t, tag):
                t = node("Unsqueeze", [t, "ax2"], [f"{tag}.u"])
                t = node("Expand", [t, "group_expand"], [f"{tag}.x"])
                return node("Reshape", [t, "heads_shape"], [f"{tag}.rep"])

            k_all = repeat(k_all, f"{p}.k")
            v_all = repeat(v_all, f"{p}.v")
        kt = node("Transpose", [k_all], [f"{p}.kt"], perm=[0, 1, 3, 2])
        s = node("MatMul", [q, kt], [f"{p}.scores"])
        s = node("Mul", [s, "scale"], [f"{p}.scaled"])
        s = node("Add", [s, mask], [f"{p}.masked"])
        a = node("Softmax", [s], [f"{p}.probs"], axis=-1)
        a = node("MatMul", [a, v_all], [f"{p}.ctx"])
        a = node("Transpose", [a], [f"{p}.ctx_t"], perm=[0, 2, 1, 3])
        a = node("Reshape", [a, "merge_shape"], [f"{p}.ctx_m"])
        a = node("MatMul", [a, f"{p}.wo"], [f"{p}.attn_out"])
        x = node("Add", [x, a], [f"{p}.res1"])
        hm = rms(x, f"{p}.mlp_norm", f"{p}.mlp_norm")
        u = node("MatMul", [hm, f"{p}.w1"], [f"{p}.up"])
        u = node("Mul", [u, node("Sigmoid", [u], [f"{p}.gate"])], [f"{p}.silu"])
        u = node("MatMul", [u, f"{p}.w2"], [f"{p}.down"])
        x = node("Add", [x, u], [f"{p}.res2"])

    hf = rms(x, "final_norm", "final_norm")
    lg = node("MatMul", [hf, "lm_head"], ["lm.proj"])
    lg = node("Add", [lg, "lm_bias"], ["lm.biased"])
    if spec.eos_chain:
        lg = node("Where", ["pad_column", "pad_logit", lg], ["lm.nopad"])
        chain = node("Gather", ["chain_token", "input_ids"], ["lm.chain"], axis=0)
        fixed = node("Gather", ["chain_logits", "input_ids"], ["lm.fixed"], axis=0)
        node("Where", [chain, fixed, lg], ["logits"])
    else:
        node("Where", ["pad_column", "pad_logit", lg], ["logits"])
    return graph_model(n, inputs, outputs, inits, name=spec.name)


def genai_config(spec: DecoderSpec) -> dict:
    """genai_config.json as ORT GenAI's model builder writes it for a CPU model."""
    return {
        "model": {
            "bos_token_id": BOS,
            "context_length": spec.context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": spec.head_size,
                "hidden_size": spec.hidden,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": spec.num_heads,
                "num_hidden_layers": spec.num_layers,
                "num_key_value_heads": spec.num_kv_heads,
            },
            "eos_token_id": EOS,
            "pad_token_id": PAD,
            # "decoder" is ORT GenAI's generic decoder-only LLM type (model_type.h).
            "type": "decoder",
            "vocab_size": spec.vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": spec.context,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            # The cache grows by concatenation (present = past + this step), so it is not one
            # max_length buffer shared by past and present.
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


# The inputs a generator takes besides the prompt: all optional, one element each.
SETTINGS = (("max_tokens", "INT32"), ("temperature", "FP32"), ("top_k", "INT32"), ("top_p", "FP32"),
            ("seed", "UINT64"), ("ignore_eos", "BOOL"), ("stream", "BOOL"))


def triton_config(spec: DecoderSpec) -> str:
    """decoder_gqa's, decoder_text's, decoder_gpu's and decoder_bench's configs name no inputs or
    outputs (onnxrs completes them from genai_config.json); the others name every one."""
    if spec.name in ("decoder_gqa", "decoder_text", BENCH_SPEC.name):
        return f'name: "{spec.name}"\nbackend: "onnxrs"\nmodel_transaction_policy {{ decoupled: true }}\n'
    if spec.name == "decoder_gpu":
        return (f'name: "{spec.name}"\nbackend: "onnxrs"\nmodel_transaction_policy {{ decoupled: true }}\n'
                "instance_group [ { kind: KIND_GPU count: 1 gpus: [ 0 ] } ]\n")
    from make_models import config, io

    return config(
        spec.name,
        [io("input_ids", "INT64", [-1])] + [io(n, t, [1], " optional: true") for n, t in SETTINGS],
        [io("output_ids", "INT64", [-1])],
        0,
        "model_transaction_policy { decoupled: true }\n",
    )


# ---------------------------------------------------------------------------------------------
# Running the models: one step, and greedy generation with the KV cache.


def load_config(model_dir) -> tuple[Path, dict]:
    """(the folder holding model.onnx, genai_config.json) for OUT/<name> or OUT/<name>/1."""
    d = Path(model_dir)
    if not (d / "genai_config.json").is_file():
        d = d / "1"
    return d, json.loads((d / "genai_config.json").read_text())


_SESSIONS: dict[Path, object] = {}


def session(model_dir):
    """An onnxruntime session on the model (one thread; kept per folder)."""
    import onnxruntime as ort

    d, cfg = load_config(model_dir)
    path = (d / cfg["model"]["decoder"]["filename"]).resolve()
    if path not in _SESSIONS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        _SESSIONS[path] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _SESSIONS[path]


def empty_past(cfg: dict, batch: int) -> list[np.ndarray]:
    """The cache before the first step: [past.0.key, past.0.value, past.1.key, ...], past_seq 0."""
    dec = cfg["model"]["decoder"]
    shape = (batch, dec["num_key_value_heads"], 0, dec["head_size"])
    return [np.zeros(shape, np.float32) for _ in range(2 * dec["num_hidden_layers"])]


def run_step(sess, cfg: dict, input_ids, attention_mask, position_ids, past):
    """One run: (logits [batch, seq, vocab], present cache as a list like `past`)."""
    dec = cfg["model"]["decoder"]
    feeds = {
        "input_ids": np.asarray(input_ids, np.int64),
        "attention_mask": np.asarray(attention_mask, np.int64),
        "position_ids": np.asarray(position_ids, np.int64),
    }
    names = []
    for i in range(dec["num_hidden_layers"]):
        feeds[f"past_key_values.{i}.key"] = past[2 * i]
        feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
        names += [f"present.{i}.key", f"present.{i}.value"]
    out = sess.run(["logits"] + names, feeds)
    return out[0], out[1:]


def greedy_token(logits_row: np.ndarray, min_gap: float = MIN_GAP) -> int:
    """argmax of one position's logits; fails if the two largest are closer than min_gap."""
    top2 = np.partition(logits_row, -2)[-2:]
    gap = float(top2[1] - top2[0])
    if gap <= min_gap:
        raise AssertionError(f"near tie in greedy decoding: top-2 logit gap {gap:.2e} <= {min_gap}")
    return int(np.argmax(logits_row))


def reference_generate(model_dir, prompt_ids, max_new_tokens: int, min_gap: float = MIN_GAP) -> list[int]:
    """The tokens greedy decoding generates after prompt_ids (not the prompt itself): the prompt
    in one run, then one token per run with the KV cache. Stops after max_new_tokens, after
    eos_token_id (which is included), or when prompt + generated reach context_length."""
    d, cfg = load_config(model_dir)
    sess = session(d)
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("empty prompt")
    context, eos = cfg["model"]["context_length"], cfg["model"]["eos_token_id"]
    if len(prompt) > context:
        raise ValueError(f"prompt of {len(prompt)} tokens is longer than the context ({context})")
    n = len(prompt)
    logits, past = run_step(sess, cfg, [prompt], np.ones((1, n)), [list(range(n))], empty_past(cfg, 1))
    out: list[int] = []
    while len(out) < max_new_tokens and n + len(out) < context:
        tok = greedy_token(logits[0, -1], min_gap)
        out.append(tok)
        if tok == eos or len(out) == max_new_tokens or n + len(out) == context:
            break
        total = n + len(out)
        logits, past = run_step(sess, cfg, [[tok]], np.ones((1, total)), [[total - 1]], past)
    return out


# ---------------------------------------------------------------------------------------------


def write_if_changed(path: Path, data: bytes) -> None:
    from make_models import write_if_changed as write

    write(path, data)


# What the test tokenizer is trained on (ASCII, and characters of two and three UTF-8 bytes).
TOKENIZER_CORPUS = ["the cat sat on the mat", "café crème brûlée", "a bee sees the sea", "tea at ten", "€ 10"]


def tokenizer_json() -> str:
    """A byte-level BPE tokenizer of exactly the models' 64 ids (<pad> 0, <s> 1, </s> 2), trained
    offline on TOKENIZER_CORPUS with the `tokenizers` library; it adds <s> before a text.
    Byte-level: a multi-byte character may be one token or several."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=64, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(TOKENIZER_CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    assert tok.get_vocab_size() == 64
    assert [tok.token_to_id(t) for t in ("<pad>", "<s>", "</s>")] == [PAD, BOS, EOS]
    return tok.to_str(pretty=True)


def write_decoder(name: str, version_dir, tokenizer: bool = False) -> None:
    """The model.onnx and genai_config.json of the decoder `name` into `version_dir` (and with
    `tokenizer`, its tokenizer.json)."""
    spec = next(s for s in SPECS + SERVED_ONLY if s.name == name)
    d = Path(version_dir)
    write_if_changed(d / "model.onnx", build_decoder(spec).SerializeToString())
    write_if_changed(d / "genai_config.json", (json.dumps(genai_config(spec), indent=4) + "\n").encode())
    if tokenizer:
        write_if_changed(d / "tokenizer.json", (tokenizer_json() + "\n").encode())


def parameter_count(spec: DecoderSpec) -> int:
    """The model's parameters: elements of its float weights (not the pad and chain tables)."""
    return sum(a.size for k, a in weights(spec).items() if not k.startswith(("pad_", "chain_")))


def write_bench_decoder(out_dir) -> Path:
    """decoder_bench (BENCH_SPEC) as OUT/decoder_bench/{config.pbtxt,1/model.onnx,1/genai_config.json},
    each file written only when it changed; returns OUT/decoder_bench."""
    d = Path(out_dir) / BENCH_SPEC.name
    write_if_changed(d / "1" / "model.onnx", build_decoder(BENCH_SPEC).SerializeToString())
    write_if_changed(d / "1" / "genai_config.json", (json.dumps(genai_config(BENCH_SPEC), indent=4) + "\n").encode())
    write_if_changed(d / "config.pbtxt", triton_config(BENCH_SPEC).encode())
    return d


def make_decoder_models(out_dir) -> list[str]:
    """Writes every decoder model under out_dir; returns their names. Each is checked once in the
    Python onnxruntime (decoder_eos: the pinned EOS_PROMPTS)."""
    out = Path(out_dir)
    names = []
    for spec in SPECS + SERVED_ONLY:
        d = out / spec.name / "1"
        write_if_changed(d / "model.onnx", build_decoder(spec).SerializeToString())
        write_if_changed(d / "genai_config.json", (json.dumps(genai_config(spec), indent=4) + "\n").encode())
        write_if_changed(out / spec.name / "config.pbtxt", triton_config(spec).encode())
        if spec.name in WITH_TOKENIZER:
            write_if_changed(d / "tokenizer.json", (tokenizer_json() + "\n").encode())
        _SESSIONS.pop((d / "model.onnx").resolve(), None)
        if spec.eos_chain:
            for prompt, want in EOS_PROMPTS:
                got = reference_generate(d, prompt, 20)
                assert got == want, (spec.name, prompt, got, want)
        else:
            reference_generate(d, [BOS, 3, 4], 4)
        names.append(spec.name)
    return names


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    names = make_decoder_models(Path(argv[0]))
    print(f"decoder models in {argv[0]}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
