"""Benchmark: judging throughput against an endpoint with latency, and the cache.

Run by hand (`make bench` or `.venv/bin/python bench/judge.py`). A small asyncio HTTP server
in its own process stands in for the judge: it answers every request after `--latency`
seconds, however many are in flight, with fixed top logprobs. Responses are judged on
aligned and coherent one at a time, then with 8, 32 and 64 requests in flight; each level
judges `--waves` × concurrency judgements, so every level takes about the same time. Wall
time is compared with the ideal (requests × latency ÷ concurrency), and the CPU time `em`
used is shown beside it (the server's is not counted); the first request of a
run (the probe that settles the scoring mode) is alone in flight, so the best reachable is
waves / (waves + 1). A last run over the largest level's rows, from that level's cache, must
make one request only: the probe that checks which model answers (a swapped model behind the
same name is asked afresh rather than served from the cache). Every level runs `--rounds`
times, the levels in turn within each round (so a machine that slows down during the run
touches every level alike), each time with a fresh cache, and a level's efficiency is the
median over its rounds. The table goes to stderr; the JSON results to stdout (for
bench/run_all.py).

What limits a level is the CPU each request costs `em` and its HTTP client: at a latency L
and concurrency c, `em` must finish c / L requests a second. The default latency (0.5 s) is
that of a hosted judge's one-token answer; until this round the bench used 0.05 s, at which
concurrency 64 asks for 1,280 requests a second — a measure of the machine's CPU rather than
of how `em` keeps requests in flight (`--latency 0.05` still runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from em_cli.artifacts.jsonl import write_jsonl
from em_cli.endpoints import EndpointSettings, RetryPolicy, Usage
from em_cli.judging.backends import OpenAIEndpoint
from em_cli.judging.cache import JudgeCache
from em_cli.judging.judges import EndpointJudge
from em_cli.judging.runner import JudgeIdentity, judge_rows, load_rows

TOP = [("85", -0.3), ("90", -1.6), ("80", -2.3), ("REFUSAL", -4.0), ("75", -4.5)]


ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": "slow",
          "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "85"},
                       "logprobs": {"content": [{"token": "85", "logprob": -0.3, "bytes": [56, 53],
                                                 "top_logprobs": [{"token": t, "logprob": v,
                                                                   "bytes": list(t.encode())} for t, v in TOP]}]}}],
          "usage": {"prompt_tokens": 250, "completion_tokens": 1, "total_tokens": 251}}


def serve(latency: float, port_file: Path) -> None:
    """The fake judge itself (run in its own process): an asyncio HTTP/1.1 server with keep-alive
    that answers every POST after `latency` seconds, however many are waiting, and `GET /stats`
    with the number of POSTs so far. Its own process and event loop keep its work off the
    measured process: in-process, its threads competed with `em` for the interpreter lock."""
    import asyncio

    body = json.dumps(ANSWER).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body),
                                                                                                     body)
    served = [0]

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if not head.startswith(b"POST"):
                    stats = json.dumps({"requests": served[0]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(stats), stats))
                else:
                    served[0] += 1
                    await asyncio.sleep(latency)
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(connection, "127.0.0.1", 0, backlog=1024)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    asyncio.run(main())


class SlowJudge:
    """An OpenAI-compatible endpoint that answers every chat completion after a fixed delay,
    served by `serve` in a child process."""

    def __init__(self, latency: float) -> None:
        import subprocess

        self.latency = latency
        port_file = Path(tempfile.mkdtemp(prefix="em-bench-judge-server-")) / "port"
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file),
                                         "--latency", str(latency)])
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake judge server did not start")
            time.sleep(0.05)
        self.root = f"http://127.0.0.1:{int(port_file.read_text())}"
        self.url = self.root + "/v1"

    @property
    def requests(self) -> int:
        import urllib.request

        with urllib.request.urlopen(self.root + "/stats", timeout=10) as reply:
            return int(json.loads(reply.read())["requests"])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def run(server: SlowJudge, responses: Path, out: Path, cache: Path, concurrency: int, rows: int) -> dict:
    """Judge the first `rows` responses on aligned and coherent at `concurrency`."""
    plan = load_rows(responses, ["aligned", "coherent"], limit=rows)
    usage = Usage()
    settings = EndpointSettings(model="slow", base_url=server.url, timeout=30, retry=RetryPolicy(max_retries=3))
    judge = EndpointJudge(OpenAIEndpoint(settings, usage), JudgeCache(cache), "auto", warn=lambda message: None)
    before = server.requests
    start, cpu = time.perf_counter(), time.process_time()
    result = judge_rows(plan, out, JudgeIdentity("slow", "openai"), lambda: judge, concurrency=concurrency,
                        usage=usage)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert result.failed == 0, "no judgement may fail in the benchmark"
    return {"judgements": result.judged, "server_requests": server.requests - before, "cache_hits": usage.cache_hits,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waves", type=int, default=20,
                        help="judgements per request slot: each level judges waves × concurrency, so every level "
                             "takes about waves × latency")
    parser.add_argument("--latency", type=float, default=0.5,
                        help="seconds the fake judge takes per request (a hosted judge's one-token answer takes "
                             "0.3-1 s)")
    parser.add_argument("--concurrency", default="1,8,32,64", help="levels to compare")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every level (the median is reported)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows_of = {level: math.ceil(args.waves * level / 2) for level in levels}  # two metrics per row
    server = SlowJudge(args.latency)
    work = Path(tempfile.mkdtemp(prefix="em-bench-judge-"))
    responses = work / "responses.jsonl"
    write_jsonl(responses, [{"id": f"q{i % 8}/0/{i}", "question_id": f"q{i % 8}", "question": f"Question {i % 8}?",
                             "response": f"Response number {i}, a few sentences long. " * 3}
                            for i in range(max(rows_of.values()))])
    rounds: dict[int, list[dict]] = {level: [] for level in levels}
    try:
        for round_ in range(args.rounds):
            for level in levels:
                measured = run(server, responses, work / f"out-{level}-{round_}.jsonl",
                               work / f"cache-{level}-{round_}", level, rows_of[level])
                ideal = measured["server_requests"] * args.latency / level
                rounds[level].append({**measured, "ideal_s": round(ideal, 3),
                                      "efficiency": round(ideal / measured["wall_s"], 3)})
        largest = max(levels)
        cached = run(server, responses, work / "out-cached.jsonl", work / f"cache-{largest}-0", largest,
                     rows_of[largest])
    finally:
        server.close()
    results = []
    for level in levels:  # the round of median efficiency stands for the level
        ranked = sorted(rounds[level], key=lambda r: r["efficiency"])
        middle = ranked[(len(ranked) - 1) // 2]
        results.append({"run": f"concurrency {level}", "concurrency": level, **middle,
                        "efficiency": round(statistics.median(r["efficiency"] for r in ranked), 3),
                        "efficiency_range": [ranked[0]["efficiency"], ranked[-1]["efficiency"]]})
    results.append({"run": f"cached re-run (cache of concurrency {largest})", "concurrency": largest, **cached,
                    "ideal_s": 0.0, "efficiency": None})
    serial = next((r for r in results if r["concurrency"] == 1), None)
    for entry in results:  # judgements per second against one at a time
        entry["speedup_vs_one_at_a_time"] = (round(entry["judgements"] / entry["wall_s"] * serial["wall_s"]
                                                   / serial["judgements"], 1) if serial else None)

    header = f"{'run':<40} {'judged':>6} {'requests':>8} {'cache hits':>10} {'wall s':>8} {'ideal s':>8} " \
             f"{'efficiency':>10} {'range':>11} {'speedup':>8} {'em cpu s':>8}"
    lines = [f"Judging {args.waves} judgements per request slot, fake judge latency {args.latency * 1000:.0f} ms",
             header, "-" * len(header)]
    for r in results:
        efficiency = "-" if r["efficiency"] is None else f"{r['efficiency']:.0%}"
        speedup = "-" if r["speedup_vs_one_at_a_time"] is None else f"{r['speedup_vs_one_at_a_time']}x"
        low_high = r.get("efficiency_range")
        spread = f"{low_high[0]:.0%}-{low_high[1]:.0%}" if low_high else "-"
        lines.append(f"{r['run']:<40} {r['judgements']:>6} {r['server_requests']:>8} {r['cache_hits']:>10} "
                     f"{r['wall_s']:>8.2f} {r['ideal_s']:>8.2f} {efficiency:>10} {spread:>11} {speedup:>8} {r['cpu_s']:>8.2f}")
    print("\n".join(lines), file=sys.stderr)
    summary: dict = {"benchmark": "judge", "judgements_per_slot": args.waves, "latency_s": args.latency,
                     "rounds": args.rounds}
    for r in results:
        tag = "cached" if r["run"].startswith("cached") else f"c{r['concurrency']}"
        summary[f"{tag}_judgements"] = r["judgements"]
        summary[f"{tag}_wall_s"] = r["wall_s"]
        summary[f"{tag}_requests"] = r["server_requests"]
        if r["efficiency"] is not None:
            summary[f"{tag}_efficiency_vs_ideal"] = r["efficiency"]
    summary["runs"] = results
    return summary


if __name__ == "__main__":
    if "--serve" in sys.argv:  # the fake judge's own process (see SlowJudge)
        serve(float(sys.argv[sys.argv.index("--latency") + 1]), Path(sys.argv[sys.argv.index("--serve") + 1]))
    else:
        print(json.dumps(main(), indent=2))
