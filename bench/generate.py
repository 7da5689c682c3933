#!/usr/bin/env python3
"""Generation: onnxrs serving a decoder (continuous batching, a gRPC response per token) against
ONNX Runtime GenAI running the same folder in-process; `bash ci/bench.sh --generate` (with
`--update-docs` it also writes BENCHMARKS.md's section between its markers and
docs/bench-generate.png). Writes build/bench/generate.{json,md,png}; `--quick` is a short check.

The decoder: BENCH_SPEC of tests/models/decoder_models.py (5.1 M parameters). Requests: a 32-token
prompt, exactly `new` tokens (onnxrs `ignore_eos`, ORT GenAI `min_length`). Scenarios: ORT GenAI
with onnxrs's thread count, one sequence per generator, then 4 and 16 prompts in one; onnxrs with
1, 4 and 16 client threads, a gRPC stream each, requests back to back (the server's metrics,
batch_stats and CPU time read around each point), and 1 stream alternating with ORT GenAI's one
sequence in short rounds for the first goal; the same model.onnx as a plain onnxrs model, one
request per token carrying the KV cache both ways (a client's loop, as with a backend that has no
generation loop of its own). Last, the choice of running each prefill apart is timed: a prefill
fused into a decode step against the two runs apart, in ONNX Runtime itself on the same decoder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "models"))
import bench  # noqa: E402
import decoder_models as dm  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from report import splice  # noqa: E402
from server import TritonServer  # noqa: E402

BUILD, WORK = ROOT / "build" / "bench", ROOT / "build" / "bench-generate"
RESULTS, REPORT, PLOT = BUILD / "generate.json", BUILD / "generate.md", BUILD / "generate.png"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- generate:begin -->", "<!-- generate:end -->"
MODEL, PLAIN = dm.BENCH_SPEC.name, dm.BENCH_SPEC.name + "_plain"
PROMPT_LEN, PROMPT_SEED = 32, 11
STREAMS, OG_BATCHES, ROUNDS = (1, 4, 16), (1, 4, 16), 4
# new tokens per request; seconds of warm-up and of measurement per point (ORT GenAI's batches
# of 4 and 16 get half the window)
PLANS = {"full": {"new": 128, "warmup_s": 3.0, "window_s": 20.0}, "quick": {"new": 32, "warmup_s": 1.0, "window_s": 3.0}}


def prompts(n: int) -> list[list[int]]:
    """n prompts of PROMPT_LEN ids from a fixed seed (no pad, bos or eos)."""
    return np.random.default_rng(PROMPT_SEED).integers(3, dm.BENCH_SPEC.vocab, (n, PROMPT_LEN)).tolist()


def latency(reqs: list[tuple[float, list[float]]]) -> dict:
    """p50 and p99 in ms of time to first token and of the gaps between tokens, over (sent, arrivals)."""
    ttft, gaps = [s[0] - t for t, s in reqs], [g for _, s in reqs for g in np.diff(s)]
    return {f"{k}_p{q}_ms": float(np.percentile(v, q)) * 1e3 if v else None for k, v in (("ttft", ttft), ("itl", gaps)) for q in (50, 99)}


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def make_repo() -> Path:
    """The served repository: the decoder (decoupled) and its model.onnx again as a plain model."""
    repo = WORK / "repo"
    d = dm.write_bench_decoder(repo)
    plain = repo / PLAIN / "1" / "model.onnx"
    if not plain.is_symlink():
        plain.parent.mkdir(parents=True, exist_ok=True)
        plain.symlink_to(d / "1" / "model.onnx")
    (repo / PLAIN / "config.pbtxt").write_text(f'name: "{PLAIN}"\nbackend: "onnxrs"\nmax_batch_size: 0\n')
    return repo


# ---- ORT GenAI in-process


def og_point(og, model, batch: list[list[int]], new: int, seconds: float) -> dict:
    """Generators over `batch` one after another for `seconds`; the first one's tokens kept."""
    total, reqs, tokens = PROMPT_LEN + new, [], None
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or not reqs:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=total, min_length=total, batch_size=len(batch))
        t0 = time.perf_counter()
        gen = og.Generator(model, params)
        gen.append_tokens(np.array(batch, np.int32))
        stamps = []
        while not gen.is_done():
            gen.generate_next_token()
            gen.get_next_tokens()
            stamps.append(time.perf_counter())
        assert len(stamps) == new, len(stamps)
        reqs.append((t0, stamps))
        tokens = tokens or [int(t) for t in gen.get_sequence(0)[PROMPT_LEN:]]
    spent = time.perf_counter() - start
    point = {"batch": len(batch), "tokens_per_s": len(reqs) * len(batch) * new / spent, "requests": len(reqs) * len(batch)}
    return {**point, **latency(reqs), "check_tokens": tokens}


def ort_genai(repo: Path, threads: int, plan: dict):
    """ORT GenAI on the decoder's folder in this process, with onnxrs's thread count: a function
    that measures it over the first b prompts (og_point's dict)."""
    import onnxruntime_genai as og

    config = og.Config(str(repo / MODEL / "1"))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model, ps = og.Model(config), prompts(max(OG_BATCHES))
    og_point(og, model, ps[:1], plan["new"], 0)  # warm-up

    def measure(b: int, seconds: float | None = None) -> dict:
        p = og_point(og, model, ps[:b], plan["new"], seconds or plan["window_s"] / (1 if b == 1 else 2))
        print(f"ORT GenAI batch {b:>2}: {p['tokens_per_s']:8.1f} tokens/s, TTFT p50 {p['ttft_p50_ms']:.2f} ms, "
              f"ITL p50 {p['itl_p50_ms']:.2f} ms", flush=True)
        return p

    return measure


# ---- onnxrs: gRPC streams, and the plain model


class Stream:
    """One client's gRPC stream; `generate` sends a request and returns once its last token came."""

    def __init__(self, url: str):
        self.client = grpcclient.InferenceServerClient(url)
        self.arrivals: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.arrivals.put((time.perf_counter(), result, error)))

    def generate(self, prompt: list[int], new: int) -> tuple[float, list[float], list[int]]:
        inputs = [grpcclient.InferInput(n, [len(v)], t) for n, t, v in
                  (("input_ids", "INT64", prompt), ("max_tokens", "INT32", [new]), ("ignore_eos", "BOOL", [True]))]
        for i, v in zip(inputs, (np.array(prompt, np.int64), np.array([new], np.int32), np.array([True]))):
            i.set_data_from_numpy(v)
        sent, stamps, tokens = time.perf_counter(), [], []
        self.client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
        while True:
            at, result, error = self.arrivals.get(timeout=120)
            if error is not None:
                raise RuntimeError(f"stream error: {error}")
            out = result.as_numpy("output_ids")
            if out is not None:
                stamps += [at] * out.size
                tokens += out.tolist()
            if result.get_response().parameters["triton_final_response"].bool_param:
                return sent, stamps, tokens

    def close(self):
        self.client.stop_stream()
        self.client.close()


def counters(s: TritonServer) -> dict:
    """What the server counted so far: metrics, statistics, CPU seconds (server and this process)."""
    m, stats, labels = s.metrics(), s.stats(MODEL), {"model": MODEL, "version": "1"}
    ticks = Path(f"/proc/{s.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    me = resource.getrusage(resource.RUSAGE_SELF)
    out = {k: m.get(f"onnxrs_{k}", **labels) for k in
           ("time_to_first_token_seconds_sum", "time_to_first_token_seconds_count", "generation_tokens_total")}
    out.update(requests=int(stats["inference_stats"]["success"]["count"]), wall=time.perf_counter(),
               server_cpu=sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK"), client_cpu=me.ru_utime + me.ru_stime)
    for b in stats["batch_stats"]:
        out[f"runs_{b['batch_size']}"], out[f"ns_{b['batch_size']}"] = int(b["compute_infer"]["count"]), int(b["compute_infer"]["ns"])
    return out


def onnxrs_point(s: TritonServer, n: int, plan: dict) -> dict:
    """n client threads, one stream each, requests back to back; the window's tokens count."""
    ps, new, before = prompts(n), plan["new"], counters(s)
    t0 = time.perf_counter() + plan["warmup_s"]
    t1, done, errors = t0 + plan["window_s"], [[] for _ in range(n)], []

    def client(i: int) -> None:
        try:
            st = Stream(s.grpc_addr)
            while time.perf_counter() < t1:
                done[i].append(st.generate(ps[i], new))
            st.close()
        except BaseException as e:  # noqa: BLE001 - raised below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    after = counters(s)
    d = {k: v - before.get(k, 0) for k, v in after.items()}
    reqs = [r for rs in done for r in rs]
    assert all(len(r[2]) == new for r in reqs), "a request made another number of tokens"
    runs = sum(v for k, v in d.items() if k.startswith("runs_"))
    rows = sum(int(k[5:]) * v for k, v in d.items() if k.startswith("runs_"))
    point = {
        "streams": n,
        "tokens_per_s": sum(t0 <= at < t1 for _, stamps, _ in reqs for at in stamps) / plan["window_s"],
        "requests": sum(t0 <= r[0] < t1 for r in reqs),
        **latency([r[:2] for r in reqs if t0 <= r[0] < t1]),
        "server_ttft_mean_ms": 1e3 * d["time_to_first_token_seconds_sum"] / d["time_to_first_token_seconds_count"],
        "server_tokens": d["generation_tokens_total"],
        "client_tokens": len(reqs) * new,
        # Each request's prefill is a run of one sequence of its own: not a decode step.
        "mean_decode_batch": (rows - d["requests"]) / (runs - d["requests"]),
        "step_ms": d[f"ns_{n}"] / d[f"runs_{n}"] / 1e6 if d.get(f"runs_{n}") else None,
        "server_cores": d["server_cpu"] / d["wall"],
        "client_cores": d["client_cpu"] / d["wall"],
    }
    print(f"onnxrs {n:>2} streams: {point['tokens_per_s']:8.1f} tokens/s, TTFT p50 {point['ttft_p50_ms']:.2f} ms, "
          f"ITL p50 {point['itl_p50_ms']:.2f} ms, {point['mean_decode_batch']:.2f} sequences per decode step", flush=True)
    return point


def pa_point(s: TritonServer, n: int, plan: dict, stream: bool = True) -> dict:
    """n concurrent gRPC streams from perf_analyzer (a C++ client: the load genai-perf drives),
    requests back to back over the first n prompts, 3 measurement windows; from its profile
    export (each request's send time and its responses' times, as genai-perf reads it): the
    tokens arriving within the windows, TTFT and ITL of the requests sent in them. With `stream`
    false each request asks for one response holding all its tokens (TTFT is then the request's
    time, and there is no ITL)."""
    new, tag = plan["new"], f"{n}{'' if stream else '-once'}"
    data, export = WORK / f"pa-input-{tag}.json", WORK / f"pa-{tag}.json"
    data.write_text(json.dumps({"data": [{"input_ids": {"content": p, "shape": [PROMPT_LEN]}, "max_tokens": [new],
                                          "ignore_eos": [True], "stream": [stream]} for p in prompts(n)]}))
    export.unlink(missing_ok=True)
    cmd = [str(bench.PERF), "-m", MODEL, "-u", s.grpc_addr, "-i", "grpc", "--streaming", "--concurrency-range", str(n),
           "--input-data", str(data), "--measurement-interval", str(int(plan["window_s"] * 1000 / 3)),
           "--stability-percentage", "1000", "--max-trials", "3", "--profile-export-file", str(export)]
    before = counters(s)
    r = subprocess.run(cmd, capture_output=True, text=True, env=bench.perf_env(), timeout=600)
    after = counters(s)
    if r.returncode != 0 or not export.exists():
        raise RuntimeError(f"perf_analyzer failed (c={n}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    e = json.loads(export.read_text())["experiments"][0]
    t0, t1 = e["window_boundaries"][0] / 1e9, e["window_boundaries"][-1] / 1e9
    done = [(q["timestamp"] / 1e9, [t / 1e9 for t in q["response_timestamps"]]) for q in e["requests"]]
    per_response = 1 if stream else new
    assert all(len(stamps) * per_response == new for _, stamps in done), "a request made another number of tokens"
    d = {k: v - before.get(k, 0) for k, v in after.items()}
    point = {
        "streams": n,
        "stream": stream,
        "tokens_per_s": per_response * sum(t0 <= at < t1 for _, stamps in done for at in stamps) / (t1 - t0),
        "requests": sum(t0 <= sent < t1 for sent, _ in done),
        **latency([q for q in done if t0 <= q[0] < t1]),
        "server_cores": d["server_cpu"] / d["wall"],
    }
    print(f"perf_analyzer {n:>2} streams{'' if stream else ', stream false'}: {point['tokens_per_s']:8.1f} tokens/s, "
          f"TTFT p50 {point['ttft_p50_ms']:.2f} ms", flush=True)
    return point


def plain_point(s: TritonServer, plan: dict) -> dict:
    """One client; one request per token that carries the KV cache in and brings it back."""
    _, cfg = dm.load_config(WORK / "repo" / MODEL)
    kv = [f"{i}.{k}" for i in range(dm.BENCH_SPEC.num_layers) for k in ("key", "value")]
    outputs = [grpcclient.InferRequestedOutput(n) for n in ["logits", *(f"present.{x}" for x in kv)]]
    c = grpcclient.InferenceServerClient(s.grpc_addr)

    def run(ids: list[int], past: list[np.ndarray], total: int) -> tuple[int, list[np.ndarray]]:
        feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, total), np.int64),
                 "position_ids": np.arange(total - len(ids), total, dtype=np.int64)[None],
                 **{f"past_key_values.{x}": p for x, p in zip(kv, past)}}
        inputs = [grpcclient.InferInput(n, list(a.shape), "INT64" if a.dtype == np.int64 else "FP32") for n, a in feeds.items()]
        for i, a in zip(inputs, feeds.values()):
            i.set_data_from_numpy(a)
        r = c.infer(PLAIN, inputs, outputs=outputs)
        return int(np.argmax(r.as_numpy("logits")[0, -1])), [r.as_numpy(f"present.{x}") for x in kv]

    def generate(prompt: list[int]) -> tuple[float, list[float], list[int]]:
        sent, tokens, stamps, past = time.perf_counter(), [], [], dm.empty_past(cfg, 1)
        while len(tokens) < plan["new"]:
            tok, past = run(tokens[-1:] or prompt, past, PROMPT_LEN + len(tokens))
            stamps.append(time.perf_counter())
            tokens.append(tok)
        return sent, stamps, tokens

    prompt = prompts(1)[0]
    check = generate(prompt)[2]  # the warm-up; its tokens are compared with onnxrs's
    start, reqs = time.perf_counter(), []
    while time.perf_counter() - start < plan["window_s"] or not reqs:
        reqs.append(generate(prompt))
    point = {"tokens_per_s": len(reqs) * plan["new"] / (time.perf_counter() - start), "requests": len(reqs)}
    c.close()
    print(f"plain model, KV cache per request: {point['tokens_per_s']:8.1f} tokens/s", flush=True)
    return {**point, **latency([r[:2] for r in reqs]), "check_tokens": check}


def run(plan: dict) -> dict:
    import onnxruntime_genai as og
    from importlib.metadata import version

    params = dm.parameter_count(dm.BENCH_SPEC)
    print(f"{MODEL}: {params / 1e6:.2f} M parameters ({dm.BENCH_SPEC})", flush=True)
    assert 5e6 <= params <= 10e6, params
    repo = make_repo()
    r = {"plan": plan, "parameters": params, "loadavg": [loadavg()], "onnxrs": []}
    with TritonServer(repo, log_dir=WORK) as s:
        found = re.search(rf"model '{MODEL}' version 1: .*threads: shared pool of (\d+)", s.log_text())
        assert found, "no thread count in the server's log"
        r["threads"] = int(found.group(1))
        st = Stream(s.grpc_addr)
        r["check_tokens"] = st.generate(prompts(1)[0], plan["new"])[2]
        st.close()
        # ORT GenAI runs here while the server idles. For the first goal, 1 stream and 1 sequence
        # alternate in short rounds, so both meet the same other work on the machine.
        og_measure = ort_genai(repo, r["threads"], plan)
        short = {**plan, "warmup_s": 0.5, "window_s": plan["window_s"] / ROUNDS}
        r["rounds"] = [(onnxrs_point(s, 1, short)["tokens_per_s"], og_measure(1, short["window_s"])["tokens_per_s"])
                       for _ in range(ROUNDS)]
        r["pa_rounds"] = [(pa_point(s, 1, short)["tokens_per_s"], og_measure(1, short["window_s"])["tokens_per_s"])
                          for _ in range(ROUNDS)]
        r["loadavg"].append(loadavg())
        for n in STREAMS:
            r["onnxrs"].append(onnxrs_point(s, n, plan))
            r["loadavg"].append(loadavg())
        r["pa"] = [pa_point(s, n, plan) for n in STREAMS]
        r["pa_once"] = [pa_point(s, n, plan, stream=False) for n in (STREAMS[0], STREAMS[-1])]
        r["loadavg"].append(loadavg())
        r["plain"] = plain_point(s, plan)
        r["ort_genai"] = [og_measure(b) for b in OG_BATCHES]
        r["prefill"] = prefill_choice(repo, r["threads"], 20 if plan is PLANS["quick"] else 100)
        r["loadavg"].append(loadavg())
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    r["environment"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
        "nproc": os.cpu_count(), "kernel": platform.release(), "tritonserver": "2.51.0 (nvidia-pytriton 0.7.0)",
        "onnxruntime": os.environ.get("ONNXRS_ORT_VERSION", "?"), "onnxruntime_genai": og.__version__,
        "tritonclient": version("tritonclient"),
    }
    return r


def prefill_choice(repo: Path, threads: int, reps: int) -> dict:
    """Prefill fused into a decode step against run apart, timed in ONNX Runtime itself (Python,
    `threads` intra-op threads) on the decoder: 15 running sequences (lengths spread over
    PROMPT_LEN..PROMPT_LEN + 127) and a newcomer with a PROMPT_LEN-token prompt. Apart: the decode
    step (15 rows of 1 token) and the prefill (1 row of PROMPT_LEN tokens), two runs; fused: one
    run of 16 rows of PROMPT_LEN tokens, each running row's token followed by masked pads (every
    row of a run takes one number of new tokens in the decoder's layout). Medians over `reps`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(repo / MODEL / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    _, cfg = dm.load_config(repo / MODEL)
    dec, n, p = cfg["model"]["decoder"], 15, PROMPT_LEN
    lens = np.linspace(p, p + 127, n).astype(np.int64)
    width, heads, head = int(lens.max()), dec["num_key_value_heads"], dec["head_size"]
    rng = np.random.default_rng(0)
    past = [0.1 * rng.standard_normal((n, heads, width, head), dtype=np.float32) for _ in range(2 * dec["num_hidden_layers"])]
    mask = (np.arange(width)[None] < lens[:, None]).astype(np.int64)
    prompt, tokens = np.array(prompts(1), np.int64), np.full((n, 1), 7, np.int64)
    fused_ids = np.full((n + 1, p), dm.PAD, np.int64)
    fused_ids[:n, 0], fused_ids[n] = 7, prompt[0]
    fused_mask = np.zeros((n + 1, width + p), np.int64)
    fused_mask[:n, :width], fused_mask[:n, width], fused_mask[n, width:] = mask, 1, 1
    fused_pos = np.concatenate([lens[:, None] + np.arange(p)[None], np.arange(p)[None]])
    fused_past = [np.concatenate([x, np.zeros((1, heads, width, head), np.float32)]) for x in past]
    runs = {
        "decode": lambda: dm.run_step(sess, cfg, tokens, np.concatenate([mask, np.ones((n, 1), np.int64)], 1), lens[:, None], past),
        "prefill": lambda: dm.run_step(sess, cfg, prompt, np.ones((1, p), np.int64), np.arange(p)[None], dm.empty_past(cfg, 1)),
        "fused": lambda: dm.run_step(sess, cfg, fused_ids, fused_mask, fused_pos, fused_past),
    }
    times: dict = {k: [] for k in runs}
    for i in range(reps + 3):
        for k, run_once in runs.items():
            t = time.perf_counter()
            run_once()
            if i >= 3:  # warm-up
                times[k].append(time.perf_counter() - t)
    out = {f"{k}_ms": float(np.median(v)) * 1e3 for k, v in times.items()}
    out["apart_ms"] = out["decode_ms"] + out["prefill_ms"]
    print(f"prefill apart {out['decode_ms']:.2f} + {out['prefill_ms']:.2f} ms, fused {out['fused_ms']:.2f} ms", flush=True)
    return out


# ---- the report


def compare(want: list[int], got: list[int]) -> str:
    """How `got` matches onnxrs's `want` (ignore_eos: it may hold EOS, which min_length keeps ORT GenAI from picking)."""
    if want == got:
        return f"equal ({len(want)} tokens)"
    i = next(i for i, (a, b) in enumerate(zip(want, got)) if a != b)
    return f"DIFFERENT from token {i} on{' (EOS there for onnxrs)' if want[i] == dm.EOS else ''}"


def f(x, spec=".2f") -> str:
    return "—" if x is None else format(x, spec)


def report(r: dict) -> str:
    e, og, new, one, many = r["environment"], r["ort_genai"], r["plan"]["new"], r["onnxrs"][0], r["onnxrs"][-1]
    near = float(np.median([o / g for o, g in r["rounds"]]))
    near_pa = float(np.median([o / g for o, g in r["pa_rounds"]]))
    scale = many["tokens_per_s"] / one["tokens_per_s"]
    scale_pa = r["pa"][-1]["tokens_per_s"] / r["pa"][0]["tokens_per_s"]
    og_scale = og[-1]["tokens_per_s"] / og[0]["tokens_per_s"]
    rows = [("ORT GenAI in-process, one generator", p["batch"], p) for p in og]
    rows += [("onnxrs, gRPC streams (Python clients)", p["streams"], p) for p in r["onnxrs"]]
    rows += [("onnxrs, gRPC streams (perf_analyzer)", p["streams"], p) for p in r["pa"]]
    rows += [("onnxrs, perf_analyzer, `stream` false: one response per request", p["streams"], p) for p in r["pa_once"]]
    rows.append(("plain onnxrs model, KV cache in every request", 1, r["plain"]))
    return "\n".join([
        "## Generation",
        "",
        f"Generated by `bash ci/bench.sh --generate --update-docs` (`bench/generate.py`) on {e['date']}: {e['cpu']}, "
        f"nproc {e['nproc']}, Linux {e['kernel']}; tritonserver {e['tritonserver']}, ONNX Runtime {e['onnxruntime']}, "
        f"ONNX Runtime GenAI {e['onnxruntime_genai']}, tritonclient {e['tritonclient']}. One run; the 1-minute load "
        f"average went {' → '.join(f'{x:.1f}' for x in r['loadavg'])} (other work may share the machine).",
        "",
        "| goal | measured | |",
        "|---|---|---|",
        f"| 1 stream within 10% of ORT GenAI in-process, Python client | {near:.2f}× ORT GenAI's tokens/s (median of "
        f"{len(r['rounds'])} alternating rounds; {one['tokens_per_s'] / og[0]['tokens_per_s']:.2f}× in the table) | "
        f"{'PASS' if near >= 0.9 else 'MISS'} |",
        f"| 1 stream within 10% of ORT GenAI in-process, perf_analyzer | {near_pa:.2f}× (median of {len(r['pa_rounds'])} "
        f"alternating rounds; {r['pa'][0]['tokens_per_s'] / og[0]['tokens_per_s']:.2f}× in the table) | "
        f"{'PASS' if near_pa >= 0.9 else 'MISS'} |",
        f"| {many['streams']} streams ≥ 4× the aggregate tokens/s of 1 stream, Python clients | {scale:.2f}× (ORT GenAI, "
        f"batch {og[-1]['batch']} against 1: {og_scale:.2f}×) | {'PASS' if scale >= 4 else 'MISS'} |",
        f"| {many['streams']} streams ≥ 4× the aggregate tokens/s of 1 stream, perf_analyzer | {scale_pa:.2f}× | "
        f"{'PASS' if scale_pa >= 4 else 'MISS'} |",
        "",
        "| scenario | streams / batch | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | requests |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {name} | {k} | {p['tokens_per_s']:.0f} | {f(p['ttft_p50_ms'])} | {f(p['ttft_p99_ms'])} | {f(p['itl_p50_ms'])} | "
          f"{f(p['itl_p99_ms'])} | {p['requests']} |" for name, k, p in rows),
        "",
        "| onnxrs streams | server TTFT mean ms | sequences per decode step | decode step ms | generated tokens: server / clients | CPU cores: server / clients |",
        "|---|---|---|---|---|---|",
        *(f"| {p['streams']} | {p['server_ttft_mean_ms']:.2f} | {p['mean_decode_batch']:.2f} | {f(p['step_ms'], '.3f')} | "
          f"{p['server_tokens']:.0f} / {p['client_tokens']} | {p['server_cores']:.2f} / {p['client_cores']:.2f} |" for p in r["onnxrs"]),
        "",
        f"- The decoder: `BENCH_SPEC` of tests/models/decoder_models.py, {r['parameters'] / 1e6:.2f} M parameters (4 "
        "layers, hidden 256, 8 heads, 4 KV heads, vocabulary 4096, random weights). Every request: a "
        f"{PROMPT_LEN}-token prompt, exactly {new} new tokens (onnxrs `ignore_eos`, ORT GenAI `min_length`), greedy.",
        f"- Greedy tokens for the first prompt: ORT GenAI's {compare(r['check_tokens'], og[0]['check_tokens'])} to "
        f"onnxrs's; the plain model's {compare(r['check_tokens'], r['plain']['check_tokens'])}.",
        f"- Threads: onnxrs's shared pool has {r['threads']} intra-op threads; ORT GenAI's session gets as many. "
        "The first goal: 1 stream and ORT GenAI's 1 sequence alternating, a quarter window each, tokens/s "
        + ", ".join(f"{o:.0f} / {g:.0f}" for o, g in r["rounds"]) + ".",
        "- perf_analyzer (2.51, C++; `--streaming`, the load genai-perf drives): the same requests at the same "
        "concurrency over gRPC streams, 3 windows making the same time in all, alternating with ORT GenAI's 1 sequence "
        "for the first goal (tokens/s " + ", ".join(f"{o:.0f} / {g:.0f}" for o, g in r["pa_rounds"]) + "); tokens "
        "arriving within its windows, TTFT and ITL from its profile export (each request's send time and its "
        "responses' times). Server cores busy: " + ", ".join(f"{p['server_cores']:.2f}" for p in r["pa"]) + " at "
        + ", ".join(str(p["streams"]) for p in r["pa"]) + " streams.",
        "- `stream` false: the same perf_analyzer load, each request answered once with its "
        f"{new} tokens (TTFT is then the whole request; no ITL): "
        + ", ".join(f"{p['tokens_per_s']:.0f} tokens/s at {p['streams']}" for p in r["pa_once"])
        + f" ({r['pa_once'][0]['tokens_per_s'] / og[0]['tokens_per_s']:.2f}× and "
        f"{r['pa_once'][-1]['tokens_per_s'] / og[-1]['tokens_per_s']:.2f}× ORT GenAI's batch of the same size; "
        f"{r['pa_once'][-1]['tokens_per_s'] / r['pa_once'][0]['tokens_per_s']:.2f}× from 1 to {r['pa_once'][-1]['streams']}). "
        "What separates this from the streams is the cost of a response per token: Triton's gRPC frontend "
        "serializes and writes each one (on the thread that sends it), and the client reads each one, on the "
        "same 2 cores as the decoder.",
        "- onnxrs: client threads (Python, on the server's cores), a gRPC stream each, requests back to back; the "
        f"tokens arriving in a {r['plan']['window_s']:.0f} s window after a {r['plan']['warmup_s']:.0f} s warm-up count. "
        "ORT GenAI: generators one after another, each over one prompt or a batch. TTFT: sent (generator created) "
        "to first token; ITL: gaps between one request's tokens; both measured by the client. Plain model: the same "
        "model.onnx as a non-decoupled onnxrs model, the client running the loop and sending the whole KV cache with "
        "every token and taking it back (what a backend without a generation loop, such as the official onnxruntime "
        "backend, leaves to its clients).",
        f"- Prefill, fused into a decode step or run apart (timed in ONNX Runtime on this decoder, {r['threads']} threads, "
        "medians): with 15 sequences running (lengths spread over 32 to 159) and one joining with a "
        f"{PROMPT_LEN}-token prompt, the decode step takes {r['prefill']['decode_ms']:.2f} ms and the prefill "
        f"{r['prefill']['prefill_ms']:.2f} ms apart ({r['prefill']['apart_ms']:.2f} ms), one fused run "
        f"{r['prefill']['fused_ms']:.2f} ms: in the decoder's layout every row of a run takes the same number of new "
        f"tokens, so fusing pads each running row to the prompt's length. onnxrs runs each prefill apart"
        f"{'' if r['prefill']['fused_ms'] > r['prefill']['apart_ms'] else ' (HERE FUSED WAS FASTER: revisit)'}.",
        "- Server side: `onnxrs_time_to_first_token_seconds` sum / count; sequences per decode step and a decode step's "
        "time (start to the end of its ONNX Runtime run, at the point's stream count; at 1 the prefills, one run in "
        f"{new}, are in it) from `batch_stats`, each request's prefill being a run of its own; "
        "`onnxrs_generation_tokens_total` against the clients' count (warm-up and tail included); CPU: cores busy.",
        "",
        "![generation: tokens/s, TTFT and ITL against concurrent streams](docs/bench-generate.png)",
    ]) + "\n"


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    og, ns = r["ort_genai"], [p["streams"] for p in r["onnxrs"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(ns, [p["tokens_per_s"] for p in r["onnxrs"]], "o-", color="C0", label="onnxrs, gRPC streams (Python clients)")
    a.plot(ns, [p["tokens_per_s"] for p in r["pa"]], "o:", color="C3", label="onnxrs, gRPC streams (perf_analyzer)")
    a.plot([p["batch"] for p in og], [p["tokens_per_s"] for p in og], "o--", color="C1", label="ORT GenAI in-process (batch)")
    a.plot([1], [r["plain"]["tokens_per_s"]], "^", color="C2", label="plain model, KV cache in every request")
    a.set(xscale="log", xlabel="concurrent streams / batch", ylabel="aggregate tokens/s", ylim=(0, None))
    for key, marker, what in (("ttft_p50_ms", "o", "TTFT p50"), ("itl_p50_ms", "s", "ITL p50")):
        b.plot(ns, [p[key] for p in r["onnxrs"]], marker + "-", color="C0", label=f"onnxrs {what}")
        b.plot(ns, [p[key] for p in r["pa"]], marker + ":", color="C3", label=f"onnxrs (perf_analyzer) {what}")
        b.plot([p["batch"] for p in og], [p[key] for p in og], marker + "--", color="C1", label=f"ORT GenAI {what}")
    b.set(xscale="log", yscale="log", xlabel="concurrent streams / batch", ylabel="ms")
    for ax in (a, b):
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.legend(fontsize=8)
    fig.suptitle(f"Generation: {r['parameters'] / 1e6:.1f} M-parameter decoder, {PROMPT_LEN}-token prompts, "
                 f"{r['plan']['new']} new tokens, {r['environment']['nproc']} CPUs")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer tokens and short windows: a check that it works")
    ap.add_argument("--update-docs", action="store_true", help="also BENCHMARKS.md's section and docs/bench-generate.png")
    ap.add_argument("--report-only", action="store_true", help="the report and plot from the last results")
    args = ap.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        started = time.monotonic()
        results = run(PLANS["quick" if args.quick else "full"])
        results["seconds"] = round(time.monotonic() - started)
        RESULTS.write_text(json.dumps(results, indent=1))
    results = json.loads(RESULTS.read_text())
    text = report(results)
    REPORT.write_text(text)
    plot(results)
    print(text)
    if args.update_docs:
        BENCHMARKS.write_text(splice(BENCHMARKS.read_text(), text, BEGIN, END))
        shutil.copy(PLOT, ROOT / "docs" / "bench-generate.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
