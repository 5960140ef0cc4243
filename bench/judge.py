"""Benchmark: judging throughput against an endpoint with latency, and the cache.

Run by hand (`make bench` or `.venv/bin/python bench/judge.py`). A stdlib HTTP server
stands in for the judge: it sleeps `--latency` seconds per request and answers fixed top
logprobs. 400 judgements (200 responses × aligned, coherent) are judged one at a time, then
with more requests in flight; wall time is compared with the ideal (requests × latency ÷
concurrency). A last run over the same rows, from the cache of an earlier run, must make no
request at all. The table goes to stderr; the JSON results to stdout (for bench/run_all.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from em_cli.artifacts.jsonl import write_jsonl
from em_cli.endpoints import EndpointSettings, RetryPolicy
from em_cli.judging.backends import OpenAIEndpoint
from em_cli.judging.cache import JudgeCache
from em_cli.judging.judges import EndpointJudge
from em_cli.judging.runner import JudgeIdentity, judge_rows, load_rows
from em_cli.endpoints import Usage

TOP = [("85", -0.3), ("90", -1.6), ("80", -2.3), ("REFUSAL", -4.0), ("75", -4.5)]


class SlowJudge:
    """An OpenAI-compatible endpoint that answers every chat completion after a fixed delay."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = 0
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms each)

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with judge.lock:
                    judge.requests += 1
                time.sleep(judge.latency)
                top = [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in TOP]
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "slow",
                                   "choices": [{"index": 0, "finish_reason": "length",
                                                "message": {"role": "assistant", "content": "85"},
                                                "logprobs": {"content": [{"token": "85", "logprob": -0.3,
                                                                          "bytes": [56, 53], "top_logprobs": top}]}}],
                                   "usage": {"prompt_tokens": 250, "completion_tokens": 1, "total_tokens": 251}})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.http = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/v1" % self.http.server_address[1]


def run(server: SlowJudge, responses: Path, out: Path, cache: Path, concurrency: int) -> dict:
    rows = load_rows(responses, ["aligned", "coherent"])
    usage = Usage()
    settings = EndpointSettings(model="slow", base_url=server.url, timeout=30, retry=RetryPolicy(max_retries=3))
    judge = EndpointJudge(OpenAIEndpoint(settings, usage), JudgeCache(cache), "auto")
    before = server.requests
    start = time.perf_counter()
    result = judge_rows(rows, out, JudgeIdentity("slow", "openai"), lambda: judge, concurrency=concurrency,
                        usage=usage)
    wall = time.perf_counter() - start
    assert result.failed == 0, "no judgement may fail in the benchmark"
    return {"judgements": result.judged, "server_requests": server.requests - before, "cache_hits": usage.cache_hits,
            "wall_s": round(wall, 3)}


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200, help="responses (× 2 metrics = judgements)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake judge takes per request")
    parser.add_argument("--concurrency", default="1,8,32", help="levels to compare")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    server = SlowJudge(args.latency)
    work = Path(tempfile.mkdtemp(prefix="em-bench-judge-"))
    responses = work / "responses.jsonl"
    write_jsonl(responses, [{"id": f"q{i % 8}/0/{i}", "question_id": f"q{i % 8}", "question": f"Question {i % 8}?",
                             "response": f"Response number {i}, a few sentences long. " * 3}
                            for i in range(args.rows)])
    results = []
    for level in levels:
        measured = run(server, responses, work / f"out-{level}.jsonl", work / f"cache-{level}", level)
        ideal = measured["server_requests"] * args.latency / level
        results.append({"run": f"concurrency {level}", "concurrency": level, **measured, "ideal_s": round(ideal, 3),
                        "efficiency": round(ideal / measured["wall_s"], 3) if measured["wall_s"] else None})
    serial = next((r["wall_s"] for r in results if r["concurrency"] == 1), None)
    for entry in results:
        entry["speedup_vs_one_at_a_time"] = round(serial / entry["wall_s"], 2) if serial else None
    reuse = 8 if 8 in levels else levels[-1]
    cached = run(server, responses, work / "out-cached.jsonl", work / f"cache-{reuse}", reuse)
    results.append({"run": f"cached re-run (cache of concurrency {reuse})", "concurrency": reuse, **cached,
                    "ideal_s": 0.0, "efficiency": None,
                    "speedup_vs_one_at_a_time": round(serial / cached["wall_s"], 1) if serial else None})

    header = f"{'run':<40} {'judged':>6} {'requests':>8} {'cache hits':>10} {'wall s':>8} {'ideal s':>8} " \
             f"{'efficiency':>10} {'speedup':>8}"
    lines = [f"Judging {args.rows * 2} judgements, fake judge latency {args.latency * 1000:.0f} ms", header,
             "-" * len(header)]
    for r in results:
        efficiency = "-" if r["efficiency"] is None else f"{r['efficiency']:.0%}"
        lines.append(f"{r['run']:<40} {r['judgements']:>6} {r['server_requests']:>8} {r['cache_hits']:>10} "
                     f"{r['wall_s']:>8.2f} {r['ideal_s']:>8.2f} {efficiency:>10} {r['speedup_vs_one_at_a_time']:>7}x")
    print("\n".join(lines), file=sys.stderr)
    summary = {"benchmark": "judge", "judgements": args.rows * 2, "latency_s": args.latency}
    for r in results:
        tag = "cached" if r["run"].startswith("cached") else f"c{r['concurrency']}"
        summary[f"{tag}_wall_s"] = r["wall_s"]
        summary[f"{tag}_requests"] = r["server_requests"]
        if r["efficiency"] is not None:
            summary[f"{tag}_efficiency_vs_ideal"] = r["efficiency"]
    summary["runs"] = results
    return summary


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
