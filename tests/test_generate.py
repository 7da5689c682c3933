"""Generative models served by onnxrs (src/generate/): a real tritonserver, real clients.

The decoders of tests/models/decoder_models.py, in ONNX Runtime GenAI's folder layout, are served
as decoupled models: gRPC streams and Triton's HTTP generate extension. Greedy tokens must equal
the reference generator's (itself checked against ORT GenAI in tests/test_decoder_models.py),
alone and while other streams join and leave; every count the server and onnxrs report
(statistics, metrics) must equal what the clients saw.
"""

from __future__ import annotations

import json
import queue
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from server import TritonServer, make_repo, models_dir

sys.path.insert(0, str(Path(__file__).parent / "models"))
from decoder_models import EOS_PROMPTS, reference_generate  # noqa: E402

# A deadline for one whole stream (the models are tiny: a stream takes milliseconds).
STREAM_DEADLINE_S = 60


def settings(**values) -> list:
    """Optional inputs of a generation request, from Python values."""
    types = {"max_tokens": ("INT32", np.int32), "temperature": ("FP32", np.float32), "top_k": ("INT32", np.int32),
             "top_p": ("FP32", np.float32), "seed": ("UINT64", np.uint64), "ignore_eos": ("BOOL", np.bool_),
             "stream": ("BOOL", np.bool_)}
    out = []
    for name, value in values.items():
        dt, np_type = types[name]
        t = grpcclient.InferInput(name, [1], dt)
        t.set_data_from_numpy(np.array([value], dtype=np_type))
        out.append(t)
    return out


class Streams:
    """One gRPC stream carrying many requests; collects each request's responses by id."""

    def __init__(self, server: TritonServer):
        self.client = grpcclient.InferenceServerClient(server.grpc_addr)
        self.responses: dict[str, list[list[int]]] = {}
        self.errors: dict[str, str] = {}
        self.finished: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.pending_error_id: str | None = None
        self.unattributed: list[str] = []
        self.client.start_stream(callback=self._on_response)

    def _on_response(self, result, error):
        if error is not None:
            # tritonclient hands a stream's error over without its request id: errors are asked
            # for one at a time (`ask(..., alone=True)`) and recorded under that id; any other
            # is kept in `unattributed`.
            with self.lock:
                rid = self.pending_error_id
                if rid is None:
                    self.unattributed.append(str(error))
                    return
                self.errors[rid] = str(error)
                self.finished.setdefault(rid, threading.Event()).set()
            return
        resp = result.get_response()
        final = resp.parameters["triton_final_response"].bool_param if "triton_final_response" in resp.parameters else True
        ids = result.as_numpy("output_ids")
        with self.lock:
            if ids is not None:
                self.responses.setdefault(resp.id, []).append(ids.tolist())
            if final:
                self.finished.setdefault(resp.id, threading.Event()).set()

    def ask(self, model: str, rid: str, prompt, *extra, alone: bool = False, dtype: str = "INT64"):
        ids = grpcclient.InferInput("input_ids", [len(prompt)], dtype)
        ids.set_data_from_numpy(np.array(prompt, dtype=np.int64 if dtype == "INT64" else np.int32))
        with self.lock:
            self.finished.setdefault(rid, threading.Event())
        if alone:
            self.pending_error_id = rid
        self.client.async_stream_infer(model, [ids, *extra], request_id=rid, enable_empty_final_response=True)

    def wait(self, rid: str) -> list[int]:
        """The tokens of `rid` once its final response came (every response's tokens, in order)."""
        assert self.finished[rid].wait(STREAM_DEADLINE_S), f"request {rid}: no final response"
        with self.lock:
            assert rid not in self.errors, f"request {rid} failed: {self.errors[rid]}"
            return [t for r in self.responses.get(rid, []) for t in r]

    def close(self):
        self.client.stop_stream()
        self.client.close()


def settled(s: TritonServer, model: str, requests: int):
    """Waits until the loop has counted `requests` finished requests of `model` in its statistics
    and metrics, and set its gauges after that step: it does so just after sending each last
    response, so a client can read its answer a moment before the counts include it; once they
    do, they are exact."""
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while time.monotonic() < deadline:
        stats = s.stats(model)["inference_stats"]
        counted = stats["success"]["count"] + stats["fail"]["count"]
        m = s.metrics()
        metric = m.sum("onnxrs_request_success_total", model=model) or 0
        running = m.sum("onnxrs_num_requests_running", model=model) or 0
        if counted >= requests and metric >= requests and running == 0:
            return
        time.sleep(0.01)
    pytest.fail(f"{model}: {requests} finished requests not counted within {STREAM_DEADLINE_S} s")


@pytest.fixture
def generator(tmp_path):
    """A server with the three test decoders; yields (server, streams, repo)."""
    repo = make_repo(tmp_path / "repo", ["decoder_tiny", "decoder_gqa", "decoder_eos"])
    with TritonServer(repo) as s:
        streams = Streams(s)
        try:
            yield s, streams, repo
        finally:
            streams.close()


PROMPTS = {1: [5], 3: [7, 3, 9], 7: [3, 4, 5, 6, 7, 8, 9], 12: [13, 4, 60, 22, 8, 8, 41, 3, 17, 29, 50, 11]}


@pytest.mark.parametrize("model", ["decoder_tiny", "decoder_gqa"])
def test_greedy_tokens_equal_the_reference_alone(generator, model):
    s, streams, repo = generator
    for n, prompt in PROMPTS.items():
        rid = f"{model}-{n}"
        streams.ask(model, rid, prompt, *settings(max_tokens=16))
        got = streams.wait(rid)
        assert got == reference_generate(repo / model, prompt, 16), f"prompt of {n}"
        # One response per token: streaming.
        assert [len(r) for r in streams.responses[rid]] == [1] * 16


def test_greedy_tokens_do_not_depend_on_what_runs_beside_them(generator):
    """8 streams joining and leaving at random steps (different prompts and lengths) while one
    long stream runs: every sequence gets exactly its tokens alone."""
    s, streams, repo = generator
    rng = random.Random(7)
    # Whether requests overlap depends on how fast the client sends them against how fast the
    # server generates (a step takes well under a millisecond): a round whose requests all ran
    # alone proves nothing about batching, so rounds are sent until one step ran more than one
    # sequence (every round's tokens are checked; a loaded machine rarely needs a second).
    sizes: set[int] = set()
    for r in range(5):
        want = {}
        streams.ask("decoder_tiny", f"{r}-long", PROMPTS[7], *settings(max_tokens=40))
        want[f"{r}-long"] = reference_generate(repo / "decoder_tiny", PROMPTS[7], 40)
        # A burst sent at once.
        for i in range(8):
            prompt = PROMPTS[12][: i + 1]
            want[f"{r}-burst-{i}"] = reference_generate(repo / "decoder_tiny", prompt, 30)
            streams.ask("decoder_tiny", f"{r}-burst-{i}", prompt, *settings(max_tokens=30))
        # Then streams that join and leave at random steps.
        for i in range(8):
            prompt = [rng.randrange(3, 64) for _ in range(rng.randrange(1, 14))]
            n = rng.randrange(1, 25)
            rid = f"{r}-join-{i}"
            want[rid] = reference_generate(repo / "decoder_tiny", prompt, n)
            streams.ask("decoder_tiny", rid, prompt, *settings(max_tokens=n))
            time.sleep(rng.uniform(0, 0.01))
        for rid, tokens in want.items():
            assert streams.wait(rid) == tokens, rid
        # More than one sequence ran in one step: some batch size above 1.
        sizes = {b["batch_size"] for b in s.stats("decoder_tiny")["batch_stats"]}
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, sizes


def test_eos_ends_a_stream_and_every_count_matches(generator):
    s, streams, repo = generator
    total_tokens = 0
    for i, (prompt, expected) in enumerate(EOS_PROMPTS):
        rid = f"eos-{i}"
        streams.ask("decoder_eos", rid, list(prompt), *settings(max_tokens=30))
        got = streams.wait(rid)
        assert got == list(expected), prompt
        assert got[-1] == 2, "the end-of-sequence token is the last one sent"
        total_tokens += len(got)
    requests = len(EOS_PROMPTS)
    settled(s, "decoder_eos", requests)
    stats = s.stats("decoder_eos")
    assert stats["inference_stats"]["success"]["count"] == requests
    assert stats["inference_stats"]["fail"]["count"] == 0
    responses = sum(v["success"]["count"] for v in stats["response_stats"].values())
    assert responses == total_tokens, stats["response_stats"]
    infer = stats["inference_stats"]
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert infer[stage]["count"] == requests
        assert infer[stage]["ns"] <= infer["success"]["ns"], stage
    m = s.metrics()
    labels = {"model": "decoder_eos", "version": "1"}
    assert m.get("onnxrs_time_to_first_token_seconds_count", **labels) == requests
    assert m.get("onnxrs_e2e_request_latency_seconds_count", **labels) == requests
    assert m.get("onnxrs_time_per_output_token_seconds_count", **labels) == total_tokens - requests
    assert m.get("onnxrs_generation_tokens_total", **labels) == total_tokens
    assert m.get("onnxrs_prompt_tokens_total", **labels) == sum(len(p) for p, _ in EOS_PROMPTS)
    assert m.get("onnxrs_request_success_total", finished_reason="stop", **labels) == requests
    assert m.get("onnxrs_request_success_total", finished_reason="length", **labels) == 0
    assert m.get("onnxrs_num_requests_running", instance="decoder_eos_0", **labels) == 0


def test_ignore_eos_and_the_context_length(generator):
    s, streams, repo = generator
    prompt, expected = EOS_PROMPTS[0]
    streams.ask("decoder_eos", "through", list(prompt), *settings(max_tokens=6, ignore_eos=True))
    got = streams.wait("through")
    assert len(got) == 6 and got[: len(expected)] == list(expected)
    # No max_tokens: the search section's max_length, then the context (64) ends it.
    streams.ask("decoder_tiny", "to-context", [5] * 60)
    assert len(streams.wait("to-context")) == 4


def test_one_response_with_every_token_when_not_streaming(generator):
    s, streams, repo = generator
    streams.ask("decoder_tiny", "whole", PROMPTS[3], *settings(max_tokens=9, stream=False))
    assert streams.wait("whole") == reference_generate(repo / "decoder_tiny", PROMPTS[3], 9)
    assert len(streams.responses["whole"]) == 1


def test_sampling_is_reproducible_with_a_seed(generator):
    s, streams, repo = generator
    runs = {}
    for rid, seed in [("s1", 11), ("s2", 11), ("s3", 12)]:
        streams.ask("decoder_tiny", rid, PROMPTS[3], *settings(max_tokens=20, temperature=1.5, top_p=0.95, seed=seed))
        runs[rid] = streams.wait(rid)
    assert runs["s1"] == runs["s2"]
    assert runs["s1"] != runs["s3"]
    greedy = reference_generate(repo / "decoder_tiny", PROMPTS[3], 20)
    streams.ask("decoder_tiny", "k1", PROMPTS[3], *settings(max_tokens=20, temperature=1.5, top_k=1, seed=3))
    assert streams.wait("k1") == greedy, "top_k 1 is greedy"


@pytest.mark.parametrize(
    "prompt, extra, fragment",
    [
        ([], {}, "prompt is empty"),
        ([3, 64], {}, "input_ids[1] = 64 is not a token"),
        ([5] * 64, {}, "context holds 64"),
        ([5], {"max_tokens": 0}, "max_tokens must be at least 1"),
        ([5], {"top_p": 0.0}, "top_p must be in (0, 1]"),
    ],
)
def test_bad_requests_fail_alone(generator, prompt, extra, fragment):
    s, streams, repo = generator
    streams.ask("decoder_tiny", "good", PROMPTS[7], *settings(max_tokens=30))
    streams.ask("decoder_tiny", "bad", prompt, *settings(**extra), alone=True)
    assert streams.finished["bad"].wait(STREAM_DEADLINE_S)
    assert fragment in streams.errors["bad"], streams.errors["bad"]
    assert streams.wait("good") == reference_generate(repo / "decoder_tiny", PROMPTS[7], 30)


def test_a_wrong_dtype_is_refused_by_name(generator):
    s, streams, repo = generator
    streams.ask("decoder_tiny", "int32", [5, 6], dtype="INT32", alone=True)
    assert streams.finished["int32"].wait(STREAM_DEADLINE_S)
    assert "input_ids" in streams.errors["int32"] and "INT64" in streams.errors["int32"], streams.errors["int32"]


def test_http_generate_stream_and_generate(generator):
    s, streams, repo = generator
    want = reference_generate(repo / "decoder_tiny", PROMPTS[3], 5)
    code, body = s.request("POST", "/v2/models/decoder_tiny/generate_stream",
                           {"input_ids": PROMPTS[3], "max_tokens": 5})
    assert code == 200, body
    events = [json.loads(line[len("data: "):]) for line in body.decode().splitlines() if line.startswith("data: ")]
    # One event per token; a one-element output comes back as a number.
    assert len(events) == 5
    assert [e["output_ids"] for e in events] == want
    code, body = s.request("POST", "/v2/models/decoder_tiny/generate",
                           {"input_ids": PROMPTS[3], "max_tokens": 5, "stream": False})
    assert code == 200, body
    assert json.loads(body)["output_ids"] == want, "one answer with every token"


def test_the_config_is_completed_from_genai_config(generator):
    s, streams, repo = generator
    config = s.config("decoder_gqa")
    names = [i["name"] for i in config["input"]]
    assert names == ["input_ids", "max_tokens", "temperature", "top_k", "top_p", "seed", "ignore_eos", "stream"]
    assert [o["name"] for o in config["output"]] == ["output_ids"]
    assert config["max_batch_size"] == 0


def test_a_generator_without_decoupled_fails_to_load_naming_it(tmp_path):
    repo = make_repo(tmp_path / "repo", ["decoder_tiny"])
    cfg = repo / "decoder_tiny" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("model_transaction_policy { decoupled: true }", ""))
    with TritonServer(repo, "--exit-on-error=false") as s:
        assert not s.model_ready("decoder_tiny")
        assert "model_transaction_policy { decoupled: true }" in s.log_text()


def test_requests_past_the_limits_wait_and_none_fails(tmp_path):
    """max_sequences 2 and a KV cache for two long sequences: 6 requests sent at once all finish
    right, never more than 2 in one step; one that could never fit fails alone."""
    repo = make_repo(tmp_path / "repo", ["decoder_tiny"])
    cfg = repo / "decoder_tiny" / "config.pbtxt"
    # 2 layers x 2 (keys, values) x 4 heads x 8 floats x 4 bytes = 256 bytes per position: a
    # sequence of at most 6 + 40 positions reserves at most 11,776 bytes; two fit, three do not.
    cfg.write_text(cfg.read_text() + 'parameters { key: "max_sequences" value: { string_value: "3" } }\n'
                   'parameters { key: "kv_cache_bytes" value: { string_value: "24576" } }\n')
    with TritonServer(repo) as s:
        streams = Streams(s)
        try:
            want = {}
            for i in range(6):
                prompt = PROMPTS[7][: i + 1]
                want[f"r{i}"] = reference_generate(repo / "decoder_tiny", prompt, 40)
                streams.ask("decoder_tiny", f"r{i}", prompt, *settings(max_tokens=40))
            for rid, tokens in want.items():
                assert streams.wait(rid) == tokens
            settled(s, "decoder_tiny", 6)
            stats = s.stats("decoder_tiny")
            sizes = {b["batch_size"] for b in stats["batch_stats"]}
            assert max(sizes) <= 2, sizes
            assert stats["inference_stats"]["success"]["count"] == 6
            # 60 + 2 positions x 256 bytes > 24576: it could never run.
            streams.ask("decoder_tiny", "huge", [5] * 60, *settings(max_tokens=40), alone=True)
            assert streams.finished["huge"].wait(STREAM_DEADLINE_S)
            assert "kv_cache_bytes 24576" in streams.errors["huge"], streams.errors["huge"]
        finally:
            streams.close()


def test_cancelling_a_stream_frees_its_place(tmp_path):
    """A cancelled stream ends at the next step and is counted as cancelled; the next request
    gets the one place."""
    repo = make_repo(tmp_path / "repo", ["decoder_long"])
    cfg = repo / "decoder_long" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "max_sequences" value: { string_value: "1" } }\n')
    with TritonServer(repo) as s:
        streams = Streams(s)
        # 2,000 tokens: far more steps than the cancel takes to arrive.
        streams.ask("decoder_long", "first", [5] * 3, *settings(max_tokens=2000, ignore_eos=True))
        deadline = time.monotonic() + STREAM_DEADLINE_S
        while not streams.responses.get("first") and time.monotonic() < deadline:
            time.sleep(0.001)
        streams.client.stop_stream(cancel_requests=True)
        streams.client.close()
        m_deadline = time.monotonic() + STREAM_DEADLINE_S
        while time.monotonic() < m_deadline:
            m = s.metrics()
            done = m.values("onnxrs_request_success_total", model="decoder_long", finished_reason="cancelled")
            if done and done[0] == 1:
                break
            time.sleep(0.1)
        assert done == [1.0], "the cancelled request is counted once"
        # The one place is free again (over HTTP: the cancelled gRPC client is gone).
        code, body = s.request("POST", "/v2/models/decoder_long/generate",
                               {"input_ids": PROMPTS[3], "max_tokens": 4, "stream": False}, timeout=STREAM_DEADLINE_S)
        assert code == 200, body
        assert json.loads(body)["output_ids"] == reference_generate(repo / "decoder_long", PROMPTS[3], 4)
        # It ended early: far fewer responses than the 2,000 it asked for.
        assert len(streams.responses["first"]) < 2000


def test_unloading_ends_running_and_waiting_streams_with_an_error(tmp_path):
    """An unload while streams run (one at a time, 40 waiting): every request ends with a final
    response: its whole reference tokens, or an error naming the unload; then the model unloads
    and the server keeps serving."""
    repo = make_repo(tmp_path / "repo", ["decoder_tiny", "decoder_eos"])
    cfg = repo / "decoder_tiny" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "max_sequences" value: { string_value: "1" } }\n')
    with TritonServer(repo, "--model-control-mode=explicit", "--load-model=*") as s:
        streams = Streams(s)
        try:
            want = reference_generate(repo / "decoder_tiny", [5, 6, 7], 60)
            for i in range(40):
                streams.ask("decoder_tiny", f"u{i}", [5, 6, 7], *settings(max_tokens=60, ignore_eos=True))
            # Every request is inside the backend before the unload: Triton 2.51's stream handler
            # answers a request for an unloading model on its reading thread, unsynchronized with
            # responses completing on the same stream, and aborts in gRPC (SAFETY.md).
            deadline = time.monotonic() + STREAM_DEADLINE_S
            labels = {"model": "decoder_tiny", "instance": "decoder_tiny_0"}
            while time.monotonic() < deadline:
                m = s.metrics()
                waiting = m.sum("onnxrs_num_requests_waiting", **labels) or 0
                inside = waiting + (m.sum("onnxrs_num_requests_running", **labels) or 0)
                finished = m.sum("onnxrs_request_success_total", model="decoder_tiny") or 0
                if inside + finished == 40 and waiting >= 10:
                    break
                time.sleep(0.001)
            else:
                pytest.fail("the 40 requests were not all inside the backend, some waiting, within the deadline")
            assert s.request("POST", "/v2/repository/models/decoder_tiny/unload", {})[0] == 200
            deadline = time.monotonic() + STREAM_DEADLINE_S
            while time.monotonic() < deadline:
                with streams.lock:
                    done = sum(e.is_set() for e in streams.finished.values()) + len(streams.unattributed)
                if done == 40:
                    break
                time.sleep(0.01)
            with streams.lock:
                completed = [rid for rid, e in streams.finished.items() if e.is_set()]
                errors = list(streams.unattributed)
            assert len(completed) + len(errors) == 40, (len(completed), errors[:3])
            assert errors, "the unload came while streams ran: some end with its error"
            assert all("being unloaded" in e for e in errors), sorted(set(errors))
            for rid in completed:
                assert [t for r in streams.responses[rid] for t in r] == want, rid
            deadline = time.monotonic() + STREAM_DEADLINE_S
            while s.model_ready("decoder_tiny") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not s.model_ready("decoder_tiny")
            streams.ask("decoder_eos", "after", [5, 9, 10], *settings(max_tokens=8))
            assert streams.wait("after") == [11, 12, 2]
        finally:
            streams.close()
    assert "generation loop panicked" not in s.log_text()


def test_the_request_log_has_a_line_per_generation_request(tmp_path):
    repo = make_repo(tmp_path / "repo", ["decoder_eos"])
    log = tmp_path / "requests.jsonl"
    with TritonServer(repo, f"--backend-config=onnxrs,request-log={log}") as s:
        streams = Streams(s)
        try:
            got = {}
            for i, (prompt, _) in enumerate(EOS_PROMPTS[:3]):
                streams.ask("decoder_eos", f"ok{i}", list(prompt), *settings(max_tokens=30))
                got[f"ok{i}"] = (len(prompt), streams.wait(f"ok{i}"))
            streams.ask("decoder_eos", "short", [5], *settings(max_tokens=2))
            got["short"] = (1, streams.wait("short"))
            streams.ask("decoder_eos", "bad", [5, 64], alone=True)
            assert streams.finished["bad"].wait(STREAM_DEADLINE_S)
        finally:
            streams.close()
    # The log is flushed when the backend is finalized (the server stopped).
    lines = {json.loads(line)["request_id"]: json.loads(line) for line in log.read_text().splitlines()}
    assert set(lines) == set(got) | {"bad"}
    for rid, (prompt_len, tokens) in got.items():
        line = lines[rid]
        assert line["outcome"] == "success"
        assert (line["prompt_tokens"], line["generated_tokens"]) == (prompt_len, len(tokens)), rid
        assert line["finish_reason"] == ("length" if rid == "short" else "stop"), rid
        assert line["ttft_us"] <= line["execute_us"], rid
        assert (line["tpot_us"] is None) == (len(tokens) < 2), rid
    assert lines["bad"]["outcome"] == "error" and lines["bad"]["error_kind"] == "bad_input"
    assert "is not a token" in lines["bad"]["error"]


def test_memory_usage_holds_the_kv_cache_while_it_grows_and_gives_it_back(tmp_path):
    """decoder_long's cache: 2 layers x 2 x 4 heads x 8 floats = 256 bytes per position. While a
    2,000-token stream runs, the instance's memory_usage (and onnxrs_memory_bytes) holds it;
    cancelled, the figure returns to what the session holds (without an arena, the session's
    figure is the heap it took at load: fixed, so the comparison is exact)."""
    repo = make_repo(tmp_path / "repo", ["decoder_long"])
    cfg = repo / "decoder_long" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "enable_mem_arena" value: { string_value: "0" } }\n')
    with TritonServer(repo) as s:

        def cpu_figures():
            usage = {u["type"]: u["byte_size"] for u in s.stats("decoder_long")["memory_usage"]}
            gauge = s.metrics().get("onnxrs_memory_bytes", model="decoder_long", version="1", device="cpu")
            return usage["CPU"], gauge

        idle, idle_gauge = cpu_figures()
        assert idle == idle_gauge
        streams = Streams(s)
        streams.ask("decoder_long", "long", [5, 6, 7], *settings(max_tokens=2000, ignore_eos=True))
        deadline = time.monotonic() + STREAM_DEADLINE_S
        grown = idle
        while time.monotonic() < deadline and grown < idle + 100 * 256:
            grown, gauge = cpu_figures()
            time.sleep(0.01)
        assert grown >= idle + 100 * 256, (idle, grown)
        streams.client.stop_stream(cancel_requests=True)
        streams.client.close()
        deadline = time.monotonic() + STREAM_DEADLINE_S
        while time.monotonic() < deadline and cpu_figures() != (idle, idle):
            time.sleep(0.05)
        assert cpu_figures() == (idle, idle), "the cache is given back"


def test_text_in_and_out_with_the_folders_tokenizer(tmp_path):
    """decoder_text (decoder_tiny's weights and a byte-level tokenizer.json): text_input is
    tokenized as the tokenizer does it; each response's text_output is whole characters, and
    the pieces make exactly the tokenizer's text of the tokens streamed."""
    from tokenizers import Tokenizer

    repo = make_repo(tmp_path / "repo", ["decoder_text"])
    tok = Tokenizer.from_file(str(repo / "decoder_text" / "1" / "tokenizer.json"))
    with TritonServer(repo) as s:
        config = s.config("decoder_text")
        assert [i["name"] for i in config["input"]][:2] == ["input_ids", "text_input"]
        assert [o["name"] for o in config["output"]] == ["output_ids", "text_output"]
        client = grpcclient.InferenceServerClient(s.grpc_addr)
        got: dict[str, list] = {}
        done = threading.Event()

        def on_response(result, error):
            assert error is None, error
            rid = result.get_response().id
            ids, text = result.as_numpy("output_ids"), result.as_numpy("text_output")
            got.setdefault(rid, []).append((ids.tolist(), text[0].decode("utf-8")))
            if result.get_response().parameters["triton_final_response"].bool_param:
                done.set()

        client.start_stream(callback=on_response)
        try:
            for prompt in ["the café", "€ 10 at the sea", "a"]:
                done.clear()
                text_input = grpcclient.InferInput("text_input", [1], "BYTES")
                text_input.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
                client.async_stream_infer("decoder_text", [text_input, *settings(max_tokens=40, ignore_eos=True)],
                                          request_id=prompt, enable_empty_final_response=True)
                assert done.wait(STREAM_DEADLINE_S), prompt
                ids = [t for chunk, _ in got[prompt] for t in chunk]
                assert ids == reference_generate(repo / "decoder_text", tok.encode(prompt).ids, 40)[: len(ids)]
                assert len(ids) == 40
                # Each piece is valid UTF-8 (decoded above), and together they are the text of all
                # the tokens: a character split across responses would show there as two U+FFFD
                # where the whole text has one character (the random model also makes bytes that
                # are no character at all: U+FFFD in both).
                pieces = [text for _, text in got[prompt]]
                assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True), prompt
        finally:
            client.stop_stream()
            client.close()
        code, body = s.request("POST", "/v2/models/decoder_text/generate",
                               {"text_input": "the cat", "max_tokens": 6, "stream": False})
        assert code == 200, body
        answer = json.loads(body)
        assert answer["text_output"] == tok.decode(answer["output_ids"], skip_special_tokens=True)


def test_models_dir_has_the_decoders():
    for name in ("decoder_tiny", "decoder_gqa", "decoder_eos", "decoder_long"):
        assert (models_dir() / name / "1" / "genai_config.json").is_file()
