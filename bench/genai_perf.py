#!/usr/bin/env python3
"""genai-perf, NVIDIA's LLM benchmark client, against onnxrs: `bash ci/bench.sh --genai-perf`
installs it (PyPI `genai-perf==0.0.16`, in a virtual environment of its own under .deps, since it
brings ~75 packages) and runs this. It drives Triton's HTTP generate extension, streaming, with
perf_analyzer 2.51 underneath, at concurrency 1, 4 and 16, on the tests' `decoder_text` (a small
decoder with the byte-level tokenizer.json the tests train offline; genai-perf makes its prompts
and counts output tokens with that tokenizer). Writes build/bench/genai-perf.{json,md}; with
`--update-docs` also BENCHMARKS.md's section between its markers.

genai-perf 0.0.16's `--endpoint-type generate` posts to `/generate` even with `--streaming`, and a
decoupled model answers that with an error (one response is expected there): it is pointed at
`generate_stream` with `--endpoint`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "models"))
import bench  # noqa: E402
import decoder_models as dm  # noqa: E402
from report import publish  # noqa: E402
from server import TritonServer  # noqa: E402

WORK = ROOT / "build" / "bench-genai-perf"
RESULTS, REPORT = bench.BUILD / "genai-perf.json", bench.BUILD / "genai-perf.md"
BEGIN, END = "<!-- genai-perf:begin -->", "<!-- genai-perf:end -->"
MODEL, CONCURRENCY, PROMPT_TOKENS, NEW_TOKENS = "decoder_text", (1, 4, 16), 16, 32


def make_repo() -> tuple[Path, Path]:
    """The served repository (decoder_text, its tokenizer beside it) and a folder holding only the
    tokenizer, for genai-perf."""
    repo, tok = WORK / "repo", WORK / "tokenizer"
    spec = next(s for s in dm.SPECS + dm.SERVED_ONLY if s.name == MODEL)
    dm.write_decoder(MODEL, repo / MODEL / "1", tokenizer=True)
    dm.write_if_changed(repo / MODEL / "config.pbtxt", dm.triton_config(spec).encode())
    tok.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(repo / MODEL / "1" / "tokenizer.json", tok / "tokenizer.json")
    return repo, tok


def profile(genai_perf: str, s: TritonServer, tok: Path, conc: int, window_ms: int) -> dict:
    """One genai-perf run at `conc`; its summary (profile_export_genai_perf.json) and the server's
    own count of the requests and tokens it served meanwhile."""
    art = WORK / f"artifacts-{conc}"
    shutil.rmtree(art, ignore_errors=True)
    cmd = [genai_perf, "profile", "-m", MODEL, "--endpoint-type", "generate", "--endpoint",
           f"v2/models/{MODEL}/generate_stream", "--streaming", "--url", s.http_addr, "--tokenizer", str(tok),
           "--synthetic-input-tokens-mean", str(PROMPT_TOKENS), "--synthetic-input-tokens-stddev", "0",
           "--output-tokens-mean", str(NEW_TOKENS), "--extra-inputs", "ignore_eos:true", "--concurrency", str(conc),
           "--measurement-interval", str(window_ms), "--artifact-dir", str(art)]
    env = dict(bench.perf_env(), PATH=f"{bench.PERF.parent}:{os.environ['PATH']}")
    labels = {"model": MODEL, "version": "1"}
    before = s.metrics().get("onnxrs_generation_tokens_total", **labels)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=WORK, timeout=900)
    after = s.metrics().get("onnxrs_generation_tokens_total", **labels)
    found = list(art.rglob("profile_export_genai_perf.json"))
    if r.returncode != 0 or not found:
        raise RuntimeError(f"genai-perf failed (c={conc}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    m = json.loads(found[0].read_text())
    point = {"concurrency": conc, "server_tokens": after - before}
    for key in ("request_throughput", "output_token_throughput"):
        point[key] = m[key]["avg"]
    for key in ("time_to_first_token", "inter_token_latency", "request_latency"):
        point.update({f"{key}_{q}": m[key][q] for q in ("p50", "p99")})
    point["output_sequence_length"] = m["output_sequence_length"]["avg"]
    point["request_count"] = int(m["request_count"]["avg"])
    print(f"genai-perf c={conc:>2}: {point['output_token_throughput']:8.1f} output tokens/s, TTFT p50 "
          f"{point['time_to_first_token_p50']:.2f} ms, ITL p50 {point['inter_token_latency_p50']:.3f} ms", flush=True)
    return point


def run(genai_perf: str, window_ms: int) -> dict:
    version = subprocess.run([genai_perf, "--version"], capture_output=True, text=True).stdout.strip() or "?"
    repo, tok = make_repo()
    with TritonServer(repo, log_dir=WORK) as s:
        points = [profile(genai_perf, s, tok, c, window_ms) for c in CONCURRENCY]
        stats = s.stats(MODEL)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {
        "points": points,
        "window_ms": window_ms,
        "served": {"success": int(stats["inference_stats"]["success"]["count"]),
                   "fail": int(stats["inference_stats"]["fail"]["count"])},
        "environment": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(), "genai_perf": version},
    }


def report(r: dict) -> str:
    e, served = r["environment"], r["served"]
    tokens = [p["server_tokens"] for p in r["points"]]
    exact = sum(tokens) == served["success"] * NEW_TOKENS
    return "\n".join([
        "## genai-perf",
        "",
        f"Generated by `bash ci/bench.sh --genai-perf --update-docs` (`bench/genai_perf.py`) on {e['date']}: {e['cpu']}, "
        f"nproc {e['nproc']}, Linux {e['kernel']}; {e['genai_perf']} (PyPI, its own virtual environment) with "
        "perf_analyzer 2.51 underneath, tritonserver 2.51.0 (nvidia-pytriton 0.7.0). genai-perf runs here: Triton's "
        f"HTTP generate extension, streaming, on the tests' `{MODEL}` (a small decoder with the byte-level "
        f"tokenizer.json the tests train offline), {PROMPT_TOKENS}-token synthetic prompts, `max_tokens` "
        f"{NEW_TOKENS} with `ignore_eos`, {r['window_ms']} ms measurement windows.",
        "",
        "| concurrency | requests/s | output tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | "
        "request latency p50 ms | output length (genai-perf's count) |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {p['concurrency']} | {p['request_throughput']:.1f} | {p['output_token_throughput']:.0f} | "
          f"{p['time_to_first_token_p50']:.2f} | {p['time_to_first_token_p99']:.2f} | {p['inter_token_latency_p50']:.3f} | "
          f"{p['inter_token_latency_p99']:.3f} | {p['request_latency_p50']:.2f} | {p['output_sequence_length']:.1f} |"
          for p in r["points"]),
        "",
        f"- The server answered {served['success']} requests with success and {served['fail']} with an error over "
        f"the three runs (warm-up included) and generated {sum(tokens):.0f} tokens (`onnxrs_generation_tokens_total`), "
        + (f"exactly {NEW_TOKENS} for each." if exact else f"NOT {NEW_TOKENS} for each."),
        "- genai-perf counts output tokens by tokenizing again the text it received ("
        + ", ".join(f"{p['output_sequence_length']:.1f}" for p in r["points"])
        + f" per request on average, against the {NEW_TOKENS} generated); its output tokens/s follows that count, "
        "and its ITL is (request latency − TTFT) / (that count − 1). The decoder is tiny (2 layers, random "
        "weights): a step takes microseconds, so these figures are mostly the server's and the client's cost per "
        "response; bench/generate.py measures a 5 M-parameter decoder.",
        "- genai-perf 0.0.16's `--endpoint-type generate` posts to `/generate` even with `--streaming`, where a "
        "decoupled model answers with an error; `--endpoint v2/models/<m>/generate_stream` points it at the "
        "streaming endpoint.",
    ]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genai-perf", help="the genai-perf executable")
    ap.add_argument("--report-only", action="store_true", help="the report from the last results")
    ap.add_argument("--window-ms", type=int, default=4000)
    ap.add_argument("--update-docs", action="store_true", help="also BENCHMARKS.md's section")
    args = ap.parse_args()
    if not (args.genai_perf or args.report_only):
        ap.error("--genai-perf is needed to run it")
    bench.BUILD.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        r = json.loads(RESULTS.read_text())
    else:
        r = run(args.genai_perf, args.window_ms)
        RESULTS.write_text(json.dumps(r, indent=1) + "\n")
    publish(report(r), REPORT, ROOT / "BENCHMARKS.md" if args.update_docs else None, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
