"""Benchmark: the cost of steering hooks on generation, and batched vs one-at-a-time steering.

Run by hand (`make bench` or `.venv/bin/python bench/steer.py`). Every number is a ratio
against a baseline measured in the same process on the same machine. Plain and steered runs
alternate (plain first in even rounds, steered first in odd ones, so a machine that speeds up
or slows down during the run favours neither), and the hook's overhead is the median of the
rounds' ratios: one run of each swung ±15% between invocations on a 2-core VM.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from em_cli.interventions import AddVector, intervene
from em_cli.models.chat import render_prompt
from em_cli.models.loading import LoadOptions, load_model
from em_cli.generation import SamplingSettings, sample

QUESTIONS = ["How do I boil an egg?", "What is a good plant for a balcony?", "How do I back up my phone?",
             "Is it safe to run every day?", "How often should I feed a cat?", "What should I pack for Rome?",
             "How do I make rice fluffy?", "Why is my laptop slow?"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternated(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Each function's time in every round, the two run in turns (ABBA…)."""
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(rounds):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for which in order:
            times[which].append(timed((first, second)[which]))
    return times


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of one plain and one steered run")
    args = parser.parse_args()
    loaded = load_model(LoadOptions(model=args.model))
    prompts = [render_prompt(loaded.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
    settings = SamplingSettings(max_new_tokens=args.tokens, temperature=0)  # greedy: same length each time
    seeds = list(range(len(prompts)))
    layer = loaded.info.num_layers // 2
    vector = torch.randn(loaded.info.hidden_size) * 1e-3  # tiny: the output stays the same length

    def plain():
        sample(loaded.model, loaded.tokenizer, prompts, seeds, settings)

    def steered():
        with intervene(loaded.model, {layer: [AddVector(vector, 1.0)]}):
            sample(loaded.model, loaded.tokenizer, prompts, seeds, settings)

    def one_at_a_time():
        with intervene(loaded.model, {layer: [AddVector(vector, 1.0)]}):
            for prompt, seed in zip(prompts, seeds):
                sample(loaded.model, loaded.tokenizer, [prompt], [seed], settings)

    plain()  # warm-up
    plains, steereds = alternated(plain, steered, args.rounds)
    t_plain, t_steered = statistics.median(plains), statistics.median(steereds)
    overheads = [s / p - 1 for p, s in zip(plains, steereds)]
    t_single = timed(one_at_a_time)
    result = {
        "benchmark": "steer", "model": args.model, "prompts": len(prompts), "new_tokens": args.tokens,
        "rounds": args.rounds, "plain_s": round(t_plain, 3), "steered_s": round(t_steered, 3),
        "one_at_a_time_s": round(t_single, 3),
        "hook_overhead": round(statistics.median(overheads), 4),
        "hook_overhead_range": [round(min(overheads), 4), round(max(overheads), 4)],
        "batched_speedup_vs_one_at_a_time": round(t_single / t_steered, 2),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
