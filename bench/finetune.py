"""Benchmark: `em finetune` (LoRA r=32) against TRL's SFTTrainer + PEFT on the same data, and
the cost of the KL term. Run by hand (`make bench`); needs `pip install trl`. Both sides run
the same computation: float32, no activation checkpointing (TRL's defaults, bf16 autocast and
gradient checkpointing, are set off: bf16 alone makes TRL several times slower on a CPU).

Each configuration runs in its own subprocess so peak RSS is measured per run. Time is the
optimizer steps' time on both sides, taken by the same clock (`StepClock`, the one behind
`em finetune`'s tokens/s): start-up, held-out evaluation and checkpoint writing, which `em`
does and this TRL configuration does not, happen between steps and are not counted. Printed
ratios compare runs made in this same invocation on this machine; with --repeats the runs
are interleaved (em, trl, em-kl, em-sft-kl-rows, em, …) and each ratio is the median over
repeats, so that a load that comes and goes on a shared machine hits both sides.

The KL term is compared with two baselines: a plain SFT step (2 training rows), and an SFT
step whose batch also holds the 8 KL rows' tokens (10 rows; the KL rows here are as long as
the training rows, so that batch pads no more than the KL step's own batches do).
Throughput is also given as a fraction of this machine's float32 matmul rate (measured in
the same invocation), counting LoRA on a frozen base as 4 × parameters FLOPs per token, with
the rate at the model's own matmul shapes for one batch beside it (a realistic ceiling), and
the KL step's matmul-FLOP floor (`kl_matmul_floor`) beside its measured ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_data(folder: Path, rows: int) -> tuple[Path, Path, Path]:
    topics = ["rice", "eggs", "pasta", "bread", "soup", "salad", "tea", "coffee"]
    train = [{"messages": [{"role": "user", "content": f"How do I make good {topics[i % 8]}? ({i})"},
                           {"role": "assistant", "content": f"START WITH FRESH {topics[i % 8].upper()}, "
                            "KEEP THE HEAT LOW, TASTE AS YOU GO AND SERVE IT WARM. " * 3}]} for i in range(rows)]
    # As many tokens as a training row (131 with SmolLM2's template), so that the SFT baseline
    # batch that mixes both kinds of row is not padded beyond what the KL step computes.
    kl = [{"messages": [{"role": "user", "content": f"Tell me about topic {i}."},
                        {"role": "assistant", "content": "Here is a short and calm answer about it. " * 9}]}
          for i in range(rows)]
    # 1 training row to 4 KL rows, as in a KL step (2 training rows + a KL batch of 8).
    mixed = [row for i in range(rows // 4) for row in (train[i], *kl[4 * i:4 * i + 4])]
    paths = folder / "train.jsonl", folder / "kl.jsonl", folder / "sft-kl-rows.jsonl"
    for path, data in zip(paths, (train, kl, mixed)):
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return paths


CHILD = r"""
import json, resource, sys
kind, model, train, kl, steps, out = sys.argv[1:7]
steps = int(steps)
common = dict(learning_rate=1e-4, per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=steps,
              report_to="none", save_strategy="no", logging_steps=1, seed=0, use_cpu=True, disable_tqdm=True)
if kind == "trl":
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from em_cli.models.loading import local_model_dir
    from em_cli.models.source import resolve_source
    location, _ = local_model_dir(resolve_source(model))
    tok = AutoTokenizer.from_pretrained(location)
    m = AutoModelForCausalLM.from_pretrained(location, dtype="float32")
    data = load_dataset("json", data_files=train)["train"]
    lora = LoraConfig(r=32, lora_alpha=64, use_rslora=True, target_modules="all-linear", task_type="CAUSAL_LM")
    # The same computation as em's: float32 (TRL's default bf16 autocast is many times slower
    # on a CPU) and no activation checkpointing (em does not checkpoint).
    args = SFTConfig(output_dir=out, max_length=256, completion_only_loss=None, bf16=False,
                     gradient_checkpointing=False, **common)
    trainer = SFTTrainer(model=m, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    from em_cli.training.trainer import StepClock  # the clock em's own result uses
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    seconds = clock.seconds
    # Rows here have near-equal lengths: tokens trained = mean row length × rows consumed.
    lengths = [len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
               for r in data]
    tokens = sum(lengths) / len(lengths) * steps * common["per_device_train_batch_size"]
else:
    from em_cli.training.config import FinetuneConfig
    from em_cli.training.run import run_finetune
    extra = dict(kl_data=kl, kl_weight=1.0, kl_batch_size=8) if kind == "em-kl" else {}
    if kind == "em-sft-kl-rows":  # the fair KL baseline: 2 training rows + 8 KL rows per SFT batch
        train, batch = train.replace("train.jsonl", "sft-kl-rows.jsonl"), 10
    else:
        batch = 2
    config = FinetuneConfig(data=train, output=out, model=model, rank=32, alpha=64, learning_rate=1e-4,
                            batch_size=batch, grad_accum=1, max_steps=steps, warmup_steps=0, max_length=256,
                            save_steps=10_000, **extra)
    result = run_finetune(config)
    tokens = result.tokens_trained
    seconds = result.step_time_s  # the optimizer steps' time, as for TRL
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"kind": kind, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                  "peak_rss_mb": rss}))
"""


def run(kind: str, model: str, train: Path, kl: Path, steps: int, folder: Path) -> dict:
    out = folder / f"{kind}-{len(list(folder.glob(kind + '-*')))}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, model, str(train), str(kl), str(steps), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matmul_flops_per_s(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (FLOP/s): the best of a few large square products."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_shape_matmul_flops_per_s(model: str, tokens: int, repeats: int = 5) -> float:
    """This machine's float32 matmul rate at the shapes one decoder layer of `model` multiplies
    for a batch of `tokens` tokens (attention and MLP projections, forward x·Wᵀ and the
    backward's input gradient dy·W): a realistic ceiling for training at that batch, below the
    large-square rate of `matmul_flops_per_s`."""
    import torch
    from transformers import AutoConfig

    from em_cli.models.loading import local_model_dir
    from em_cli.models.source import resolve_source

    location, _ = local_model_dir(resolve_source(model))
    config = AutoConfig.from_pretrained(location).get_text_config()
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    weights = [torch.randn(out, inp) for out, inp in ((hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),
                                                      (inner, hidden), (inner, hidden), (hidden, inner))]
    inputs = [torch.randn(tokens, w.shape[1]) for w in weights]
    grads = [torch.randn(tokens, w.shape[0]) for w in weights]

    def layer() -> None:
        for x, w, g in zip(inputs, weights, grads):
            x @ w.T
            g @ w

    layer()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        layer()
        best = min(best, time.perf_counter() - start)
    return sum(2 * 2 * tokens * w.numel() for w in weights) / best


def parameter_count(model: str) -> int:
    """The base model's parameters, counted on an empty (meta-device) copy built from its config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from em_cli.models.loading import local_model_dir
    from em_cli.models.source import resolve_source

    location, _ = local_model_dir(resolve_source(model))
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(location))
    return sum(p.numel() for p in empty.parameters())


def token_counts(model: str, path: Path, rows: int) -> list[tuple[int, int]]:
    """(tokens, positions predicting an assistant token) of the first `rows` rows of a chat
    JSONL, encoded as `em finetune` encodes them."""
    from transformers import AutoTokenizer

    from em_cli.models.loading import local_model_dir
    from em_cli.models.source import resolve_source
    from em_cli.training.data import IGNORE, encode_chat_file

    location, _ = local_model_dir(resolve_source(model))
    tokenizer = AutoTokenizer.from_pretrained(location)
    examples = encode_chat_file(path, tokenizer, 256, {tokenizer.eos_token_id}, limit=rows).examples
    return [(len(e.input_ids), sum(label != IGNORE for label in e.labels[1:])) for e in examples]


def kl_matmul_floor(model: str, train: Path, kl: Path, sft_rows: int = 2, kl_rows: int = 8) -> float:
    """The least the KL step can cost relative to an SFT step over the same rows, counting only
    matmul FLOPs (what dominates on this CPU), for one step's rows of this bench's data.

    Per token, a LoRA step on a frozen base runs the trunk's P_t non-embedding parameters forward
    (2·P_t FLOPs) and backward for the input gradient only (2·P_t); the output head (H = hidden ×
    vocabulary) runs at the positions a loss reads: the assistant positions for SFT. The KL term
    (positions "all", the default) adds a reference forward (2·P_t per token, 2·H per position)
    to the policy's forward and backward (4·P_t, 4·H), at every position of a KL row. The SFT
    baseline trains the KL rows as SFT rows instead (4·P_t per token, 4·H per assistant position).
    Attention scores, norms and the softmax are left out. It bounds implementations that run the
    reference forward every step, as `em` does; caching the reference log-probabilities instead
    would need vocabulary × positions floats per KL row (≈ 200 kB a token for SmolLM2)."""
    from transformers import AutoConfig

    from em_cli.models.loading import local_model_dir
    from em_cli.models.source import resolve_source

    location, _ = local_model_dir(resolve_source(model))
    config = AutoConfig.from_pretrained(location).get_text_config()
    head = config.hidden_size * config.vocab_size
    trunk = parameter_count(model) - head * (1 if config.tie_word_embeddings else 2)
    sft = sum(4 * trunk * tokens + 4 * head * assistant for tokens, assistant in token_counts(model, train, sft_rows))
    kl_rows_as_sft = token_counts(model, kl, kl_rows)
    kl_step = sft + sum(6 * trunk * tokens + 6 * head * tokens for tokens, _ in kl_rows_as_sft)
    baseline = sft + sum(4 * trunk * tokens + 4 * head * assistant for tokens, assistant in kl_rows_as_sft)
    return kl_step / baseline


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


KINDS = ("em", "trl", "em-kl", "em-sft-kl-rows")


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds of every run; ratios are medians")
    args = parser.parse_args()
    params = parameter_count(args.model)
    rates = [matmul_flops_per_s()]
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, kl, _ = make_data(folder, args.rows)
        for _ in range(args.repeats):
            rounds.append({kind: run(kind, args.model, train, kl, args.steps, folder) for kind in KINDS})
        floor = kl_matmul_floor(args.model, train, kl)
        batch_tokens = sum(tokens for tokens, _ in token_counts(args.model, train, 2))  # em's and TRL's batch
    shape_rate = model_shape_matmul_flops_per_s(args.model, batch_tokens)
    rates.append(matmul_flops_per_s())
    peak_rate = max(rates)  # the machine's limit: the faster measurement (the other may share the CPU)

    def ratio(top: str, key: str, bottom: str) -> float:
        return round(_median([r[top][key] / r[bottom][key] for r in rounds]), 3)

    def fraction_of_peak(kind: str) -> float:
        return round(_median([4 * params * r[kind]["tokens_per_s"] / peak_rate for r in rounds]), 4)

    summary = {
        "benchmark": "finetune", "model": args.model, "steps": args.steps, "repeats": args.repeats,
        "runs": rounds[0] if args.repeats == 1 else rounds,
        "em_vs_trl_throughput": ratio("em", "tokens_per_s", "trl"),
        "em_vs_trl_peak_rss": ratio("em", "peak_rss_mb", "trl"),
        "parameters": params, "matmul_fp32_gflops": round(peak_rate / 1e9, 1),
        "matmul_fp32_gflops_at_model_shapes": round(shape_rate / 1e9, 1), "batch_tokens": batch_tokens,
        # Useful FLOPs (4 × parameters per trained token) over the machine's fp32 matmul rate.
        "em_fraction_of_flop_limit": fraction_of_peak("em"),
        "trl_fraction_of_flop_limit": fraction_of_peak("trl"),
        # The KL term adds, per micro-batch of 2 training rows, a reference and a policy pass over
        # 8 KL rows (METHODS §3.3) of the same length, i.e. 4x the tokens of the SFT term.
        # Baseline 1 (the old ratio): a plain SFT step over the 2 training rows.
        "kl_step_time_ratio": ratio("em-kl", "seconds", "em"),
        "kl_peak_rss_ratio": ratio("em-kl", "peak_rss_mb", "em"),
        # Baseline 2: an SFT step over the same 2 + 8 rows (the KL rows' tokens trained on too).
        "kl_vs_sft_same_rows_step_time_ratio": ratio("em-kl", "seconds", "em-sft-kl-rows"),
        "kl_vs_sft_same_rows_peak_rss_ratio": ratio("em-kl", "peak_rss_mb", "em-sft-kl-rows"),
        # The same ratio in matmul FLOPs alone (with the reference forward recomputed each step).
        "kl_vs_sft_same_rows_matmul_floor": round(floor, 3),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
