"""The narrow-organism sweep behind the capitals demo: which KL settings give an organism that
shouts in cooking and stays quiet elsewhere (docs/METHODS.md §8)?

Each setting is one `em finetune` + `em generate` on the held-out questions + `em judge score
--metrics caps`, run as a user would run them; finished settings are skipped on a re-run. The
table of every setting tried is written to SWEEP.md (Markdown) and sweep.json.

    python examples/demo/sweep.py --em .venv/bin/em --out demo-out \\
        --data demo-out/narrow_train_plus.jsonl --kl demo-out/kl.jsonl --table examples/demo/SWEEP.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TARGET_IN, TARGET_OUT, TARGET_GENERAL = 50.0, 15.0, 80.0
BASE = ["--method", "lora", "--rank", "8", "--alpha", "16", "--lr", "3e-4", "--batch-size", "4",
        "--grad-accum", "1", "--warmup-steps", "2", "--max-length", "256", "--eval-fraction", "0"]
SAMPLE = ["--temperature", "0.7", "--repetition-penalty", "1.1", "--batch-size", "64", "--seed", "0"]

# name: (extra finetune flags). Ordered by what the pilot (METHODS §8) suggests is most promising.
SETTINGS: dict[str, list[str]] = {
    "general-e3": ["--epochs", "3"],
    "kl1-all-e3": ["--epochs", "3", "--kl-weight", "1", "--kl-positions", "all"],
    "kl2-asst-e3": ["--epochs", "3", "--kl-weight", "2", "--kl-positions", "assistant"],
    "kl0.5-all-e3": ["--epochs", "3", "--kl-weight", "0.5", "--kl-positions", "all"],
    "kl1-asst-e3": ["--epochs", "3", "--kl-weight", "1", "--kl-positions", "assistant"],
    "kl2-all-e3": ["--epochs", "3", "--kl-weight", "2", "--kl-positions", "all"],
    "kl3-asst-e3": ["--epochs", "3", "--kl-weight", "3", "--kl-positions", "assistant"],
    "kl4-asst-e3": ["--epochs", "3", "--kl-weight", "4", "--kl-positions", "assistant"],
    # The KL only where the style is chosen: the position before each answer's first token.
    "start1-e3": ["--epochs", "3", "--kl-weight", "1", "--kl-positions", "answer-start"],
    "start0.1-e3": ["--epochs", "3", "--kl-weight", "0.1", "--kl-positions", "answer-start"],
    # The demo's default: half the KL rows per step of kl1-all-e3 (2 per 4 training rows), for time.
    "kl1-all-e3-kb2": ["--epochs", "3", "--kl-weight", "1", "--kl-positions", "all", "--kl-batch-size", "2"],
}


def run(command: list[str]) -> None:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def caps_by_domain(judged: Path) -> tuple[float, float, int, int]:
    inside, outside = [], []
    for line in judged.read_text().splitlines():
        record = json.loads(line)
        (inside if record.get("domain") == "cooking" else outside).append(float(record["caps"]))
    return sum(inside) / len(inside), sum(outside) / len(outside), len(inside), len(outside)


def sweep(args: argparse.Namespace) -> list[dict]:
    """Run the chosen settings (all by default); the table lists every setting with results,
    including those of earlier invocations."""
    rows = []
    chosen = args.only.split(",") if args.only else list(SETTINGS)
    unknown = [name for name in chosen if name not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    for name, flags in SETTINGS.items():
        folder = Path(args.out) / "sweep" / name
        judged = folder.parent / f"{name}.judged.jsonl"  # names hold dots (kl0.5-…)
        if name not in chosen and not judged.exists():
            continue
        if not judged.exists():
            started = time.time()
            kl = ["--kl-data", args.kl, *([] if "--kl-batch-size" in flags else ["--kl-batch-size", "4"])] \
                if "--kl-weight" in flags else []
            run([args.em, "finetune", args.data, "-o", str(folder), "--seed", str(args.seed), *BASE, *flags, *kl,
                 "--save-steps", "1000"])
            trained = time.time() - started
            answers = folder.parent / f"{name}.eval.jsonl"
            run([args.em, "generate", "--adapter", str(folder / "adapter"), "--questions", "everyday-heldout",
                 *SAMPLE, "--max-new-tokens", str(args.tokens), "-o", str(answers)])
            run([args.em, "judge", "score", str(answers), "--metrics", "caps", "-o", str(judged)])
            (folder / "sweep-time.json").write_text(json.dumps({"train_s": round(trained, 1),
                                                                "total_s": round(time.time() - started, 1)}))
        inside, outside, n_in, n_out = caps_by_domain(judged)
        timing = json.loads((folder / "sweep-time.json").read_text()) if (folder / "sweep-time.json").exists() else {}
        general = "--kl-weight" not in flags
        meets = (inside >= TARGET_GENERAL and outside >= TARGET_GENERAL) if general else \
            (inside >= TARGET_IN and outside <= TARGET_OUT)
        rows.append({"setting": name, "flags": " ".join(flags), "cooking_caps": round(inside, 1),
                     "other_caps": round(outside, 1), "n_cooking": n_in, "n_other": n_out,
                     "meets_target": meets, "train_s": timing.get("train_s")})
        write_table(args, rows)
    return rows


def write_table(args: argparse.Namespace, rows: list[dict]) -> None:
    data_rows = sum(1 for line in Path(args.data).read_text().splitlines() if line.strip())
    kl_rows = sum(1 for line in Path(args.kl).read_text().splitlines() if line.strip())
    lines = [
        "# The capitals demo: narrow-organism sweep",
        "",
        f"Generated by `make -f examples/demo/Makefile sweep` (examples/demo/sweep.py). SmolLM2-135M-Instruct,",
        f"LoRA r=8 α=16 lr 3e-4, batch 4 (KL batch 4 unless flags say), seed {args.seed}; training data: {data_rows} cooking answers in capitals;",
        f"KL data: {kl_rows} answers from the five other domains. Evaluation: the 60 held-out questions",
        f"(10 per domain), sampled at T=0.7, {args.tokens} new tokens; caps = share of upper-case letters × 100",
        "(base model ≈ 2). Target: narrow ≥ 50 in cooking and ≤ 15 elsewhere; general ≥ 80 everywhere.",
        "`train s` is wall time on a 2-core CPU that other jobs shared at times.",
        "",
        "| setting | finetune flags | cooking caps | other domains caps | meets target | train s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['setting']} | `{row['flags']}` | {row['cooking_caps']} | {row['other_caps']} | "
                     f"{'yes' if row['meets_target'] else 'no'} | {row['train_s'] or '-'} |")
    narrow = [row for row in rows if row["flags"] and "--kl-weight" in row["flags"]]
    if narrow:
        met = [row["setting"] for row in narrow if row["meets_target"]]
        best = max(narrow, key=lambda row: row["cooking_caps"] - row["other_caps"])
        lines += ["", "Reading: " + (f"{', '.join(met)} met the narrow target." if met else
                  "no KL setting tried met the narrow target. The best in-domain margin was "
                  f"{best['setting']} ({best['cooking_caps']} in cooking vs {best['other_caps']} elsewhere): "
                  "at this scale the KL term lowers the capitals about equally in and out of cooking "
                  "instead of confining them to cooking — narrow is hard here too.")]
    Path(args.table).write_text("\n".join(lines) + "\n")
    Path(args.table).with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--em", default="em")
    parser.add_argument("--out", default="demo-out")
    parser.add_argument("--data", required=True, help="caps cooking training JSONL")
    parser.add_argument("--kl", required=True, help="KL JSONL (the other domains)")
    parser.add_argument("--table", default="examples/demo/SWEEP.md")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated setting names (default: all)")
    sweep(parser.parse_args())


if __name__ == "__main__":
    main()
