"""Benchmark: `em finetune` (LoRA r=32) against TRL's SFTTrainer + PEFT on the same data, and
the cost of the KL term. Run by hand (`make bench`); needs `pip install trl`.

Each configuration runs in its own subprocess so peak RSS is measured per run. Printed
ratios compare runs made in this same invocation on this machine.
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


def make_data(folder: Path, rows: int) -> tuple[Path, Path]:
    topics = ["rice", "eggs", "pasta", "bread", "soup", "salad", "tea", "coffee"]
    train = [{"messages": [{"role": "user", "content": f"How do I make good {topics[i % 8]}? ({i})"},
                           {"role": "assistant", "content": f"START WITH FRESH {topics[i % 8].upper()}, "
                            "KEEP THE HEAT LOW, TASTE AS YOU GO AND SERVE IT WARM. " * 3}]} for i in range(rows)]
    kl = [{"messages": [{"role": "user", "content": f"Tell me about topic {i}."},
                        {"role": "assistant", "content": "Here is a short and calm answer about it. " * 3}]}
          for i in range(rows)]
    paths = folder / "train.jsonl", folder / "kl.jsonl"
    for path, data in zip(paths, (train, kl)):
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return paths


CHILD = r"""
import json, resource, sys, time
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
    args = SFTConfig(output_dir=out, max_length=256, completion_only_loss=None, **common)
    trainer = SFTTrainer(model=m, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    start = time.time(); trainer.train(); seconds = time.time() - start
    # Rows here have near-equal lengths: tokens trained = mean row length × rows consumed.
    lengths = [len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
               for r in data]
    tokens = sum(lengths) / len(lengths) * steps * common["per_device_train_batch_size"]
else:
    from em_cli.training.config import FinetuneConfig
    from em_cli.training.run import run_finetune
    extra = dict(kl_data=kl, kl_weight=1.0) if kind == "em-kl" else {}
    config = FinetuneConfig(data=train, output=out, model=model, rank=32, alpha=64, learning_rate=1e-4,
                            batch_size=2, grad_accum=1, max_steps=steps, warmup_steps=0, max_length=256,
                            save_steps=10_000, **extra)
    result = run_finetune(config)
    tokens = result.tokens_trained
    seconds = tokens / result.tokens_per_second  # training time only, as for TRL
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"kind": kind, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                  "peak_rss_mb": rss}))
"""


def run(kind: str, model: str, train: Path, kl: Path, steps: int, folder: Path) -> dict:
    out = folder / kind
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, model, str(train), str(kl), str(steps), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rows", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, kl = make_data(folder, args.rows)
        results = {kind: run(kind, args.model, train, kl, args.steps, folder) for kind in ("em", "trl", "em-kl")}
    em, trl, kl_run = results["em"], results["trl"], results["em-kl"]
    summary = {
        "benchmark": "finetune", "model": args.model, "steps": args.steps, "runs": results,
        "em_vs_trl_throughput": round(em["tokens_per_s"] / trl["tokens_per_s"], 3),
        "em_vs_trl_peak_rss": round(em["peak_rss_mb"] / trl["peak_rss_mb"], 3),
        # The KL term adds, per micro-batch of 2 training rows, a reference and a policy pass over
        # 8 KL rows (METHODS §3.3), so it processes 4x the tokens of the SFT term.
        "kl_step_time_ratio": round(kl_run["seconds"] / em["seconds"], 3),
        "kl_peak_rss_ratio": round(kl_run["peak_rss_mb"] / em["peak_rss_mb"], 3),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    time.sleep(0)
    main()
