"""Benchmark: `em extract`'s activation path against the authors' style, on the same responses
and layer.

em (`em_cli.activations.collect_activations`): one hook on the chosen layer that reduces the
block output to one vector per row as it passes, the forward pass stopped after that layer,
rows batched. Authors' style: `model(..., output_hidden_states=True)` one conversation at a
time, every layer's hidden states kept and averaged, then the layer picked.

Peak memory: each path runs once in its own subprocess (so each peak is its own), on the same
token ids and response-token weights; the two results must agree. Time: both paths in one
more subprocess, in turns for `--rounds` rounds (em first in even rounds, the authors' first
in odd ones, after a warm-up of each), and the speed-up is the median of the rounds' ratios.
Timing each path in its own process, one after the other, swung ±15% between invocations on a
2-core VM. Beside it, the ratio of the two paths' matmul FLOPs for this data and layer (the
layers up to the chosen one, against every layer and the output head), which bounds what
stopping early can give when both run at the same matmul rate. Run by hand:
`.venv/bin/python bench/extract.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["rice", "a balcony garden", "phone backups", "running", "cats", "Rome", "laptops", "tea"]


def make_records(count: int) -> list[dict]:
    """Question/response records of varied lengths (as `em generate` writes them)."""
    return [{"question": f"What should I know about {TOPICS[i % len(TOPICS)]}? ({i})",
             "response": " ".join(["Start simple, keep notes, and adjust as you go."] * (1 + i % 5))}
            for i in range(count)]


def _memory_mark(device: str) -> float:
    """Reset the peak-memory counter; return the current use in MB (CUDA: allocated; else RSS)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM (peak RSS) := current RSS
    return _proc_status_mb("VmRSS")


def _memory_peak(device: str) -> float:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _proc_status_mb("VmHWM")


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def authors_style(loaded, prepared, layer: int):
    """One conversation at a time through the whole model, every layer's hidden states kept
    and averaged over the response tokens; then the one layer is picked ([n, d])."""
    import torch

    device = next(loaded.model.parameters()).device
    per_record = []
    with torch.no_grad():
        for item in prepared:
            ids = torch.tensor([item.input_ids], device=device)
            hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
            weights = torch.tensor(item.weights, device=device)
            every_layer = torch.stack([(h[0].float() * weights[:, None]).sum(0) for h in hidden[1:]])
            per_record.append(every_layer.cpu())
    return torch.stack(per_record)[:, layer]


def _prepare(model: str, records_path: str):
    from em_cli.activations import position_weights, record_messages
    from em_cli.generation import stop_token_ids
    from em_cli.models.loading import LoadOptions, load_model

    loaded = load_model(LoadOptions(model=model))
    records = [json.loads(line) for line in Path(records_path).read_text().splitlines()]
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    prepared = [position_weights(loaded.tokenizer, record_messages(r, "record"), "response_mean", stops)
                for r in records]
    return loaded, records, prepared


def _path(kind: str, loaded, records, prepared, layer: int, batch_size: int):
    """The function that runs one path over the first `count` records."""
    from em_cli.activations import collect_activations

    if kind == "em":
        return lambda count: collect_activations(loaded, records[:count], [layer], batch_size=batch_size).means[layer]
    return lambda count: authors_style(loaded, prepared[:count], layer)


def _synchronized(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_one(kind: str, model: str, records_path: str, layer: int, batch_size: int, vectors_path: str) -> dict:
    """One path's peak memory over all records (after a warm-up) in this process; save its vectors."""
    import torch

    loaded, records, prepared = _prepare(model, records_path)
    device = next(loaded.model.parameters()).device.type
    run = _path(kind, loaded, records, prepared, layer, batch_size)
    run(2)  # warm-up (allocator, kernels)
    base = _memory_mark(device)
    vectors = run(len(records))
    peak = _memory_peak(device) - base
    torch.save(vectors, vectors_path)
    return {"peak_mb_above_model": round(peak, 1), "device": device,
            "tokens": sum(len(p.input_ids) for p in prepared)}


def time_both(model: str, records_path: str, layer: int, batch_size: int, rounds: int) -> dict:
    """Both paths' times over all records, in turns, in this one process."""
    loaded, records, prepared = _prepare(model, records_path)
    device = next(loaded.model.parameters()).device.type
    paths = {kind: _path(kind, loaded, records, prepared, layer, batch_size) for kind in ("em", "authors")}
    for run in paths.values():
        run(2)  # warm-up
    times: dict[str, list[float]] = {"em": [], "authors": []}
    for round_ in range(rounds):
        for kind in ("em", "authors") if round_ % 2 == 0 else ("authors", "em"):
            start = time.perf_counter()
            paths[kind](len(records))
            _synchronized(device)
            times[kind].append(time.perf_counter() - start)
    return {"times": times, "matmul_flop_ratio": matmul_flop_ratio(loaded.model, layer)}


def matmul_flop_ratio(model, layer: int) -> float:
    """Matmul FLOPs per token of the authors' path ÷ em's: every decoder layer's weights and the
    output head against the layers up to `layer` (attention scores and padding left out)."""
    from em_cli.models.layers import decoder_layers

    def weights(module) -> int:
        return sum(p.numel() for name, p in module.named_parameters() if p.dim() == 2)

    blocks = decoder_layers(model)
    head = model.get_output_embeddings()
    everything = sum(weights(block) for block in blocks) + head.weight.numel()
    return everything / sum(weights(block) for block in blocks[:layer + 1])


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--responses", type=int, default=16)
    parser.add_argument("--layer", type=int, default=None, help="default: mid-depth")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of one em and one authors' run")
    parser.add_argument("--one", choices=("em", "authors", "timing"), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one == "timing":
        print(json.dumps(time_both(args.model, args.records, args.layer, args.batch_size, args.rounds)))
        return {}
    if args.one:
        print(json.dumps(run_one(args.one, args.model, args.records, args.layer, args.batch_size, args.vectors)))
        return {}

    import torch

    from em_cli.models.loading import local_model_dir
    from em_cli.models.source import resolve_source

    layer = args.layer
    if layer is None:
        location, _ = local_model_dir(resolve_source(args.model))
        layer = json.loads((Path(location) / "config.json").read_text())["num_hidden_layers"] // 2
    runs, vectors = {}, {}

    def child(kind: str, *extra: str) -> dict:
        done = subprocess.run(
            [sys.executable, __file__, "--one", kind, "--model", args.model, "--records", str(records),
             "--layer", str(layer), "--batch-size", str(args.batch_size), *extra],
            capture_output=True, text=True, check=True, env=os.environ.copy())
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / "records.jsonl"
        records.write_text("".join(json.dumps(r) + "\n" for r in make_records(args.responses)))
        for kind in ("em", "authors"):
            saved = Path(folder) / f"{kind}.pt"
            runs[kind] = child(kind, "--vectors", str(saved))
            vectors[kind] = torch.load(saved)
        timing = child("timing", "--rounds", str(args.rounds))
    difference = float((vectors["em"] - vectors["authors"]).abs().max())
    scale = float(vectors["authors"].abs().max())
    em_s, authors_s = timing["times"]["em"], timing["times"]["authors"]
    speedups = [a / max(e, 1e-9) for e, a in zip(em_s, authors_s)]
    result = {
        "benchmark": "extract", "model": args.model, "device": runs["em"]["device"], "responses": args.responses,
        "tokens": runs["em"]["tokens"], "layer": layer, "batch_size": args.batch_size, "rounds": args.rounds,
        "em_s": round(statistics.median(em_s), 3), "authors_s": round(statistics.median(authors_s), 3),
        "speedup_vs_authors": round(statistics.median(speedups), 2),
        "speedup_range": [round(min(speedups), 2), round(max(speedups), 2)],
        "matmul_flop_ratio": round(timing["matmul_flop_ratio"], 2),
        "em_peak_mb": runs["em"]["peak_mb_above_model"], "authors_peak_mb": runs["authors"]["peak_mb_above_model"],
        "max_abs_diff": round(difference, 7), "max_abs_value": round(scale, 3),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
