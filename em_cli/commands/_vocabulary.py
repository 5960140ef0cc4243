"""The flag vocabulary: every flag name `em` uses, with its one type and meaning.

tests/test_flag_vocabulary.py walks every command and holds it to this table: a flag has the
type listed here wherever it appears (an exception names the command and why), and a new
flag name must be added here first, which is where a clash with an existing meaning shows.
Types are as typer names them (str, int, float, bool, Path) or `choice` with the choices;
a repeatable flag has the type of one value. Nothing imports this module at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flag:
    type: str
    meaning: str
    choices: tuple[str, ...] | None = None
    exceptions: dict[str, str] = field(default_factory=dict)  # command path → why it differs there


def _choice(meaning: str, *choices: str) -> Flag:
    return Flag("choice", meaning, choices)


_MODEL = "the model to load: a hub id, model dir, .gguf file or built-in alias"
_LAYERS = "layers as a spec, 0-based block outputs: '15', '10,12', '10-20', 'all'; one-layer commands need one"
_OUTPUT = "where the command writes: a file (- for stdout), a directory or a prefix, as its help says"

VOCABULARY: dict[str, Flag] = {
    # Models and where they run.
    "-m": Flag("str", _MODEL), "--model": Flag("str", _MODEL),
    "--adapter": Flag("str", "a PEFT adapter directory applied on top of --model"),
    "--dtype": _choice("weights dtype", "auto", "float32", "bfloat16", "float16"),
    "--device": _choice("where to run", "auto", "cpu", "cuda", "mps"),
    "--load-in-4bit": Flag("bool", "load the base model in 4-bit NF4"),
    "--batch-size": Flag("int", "rows (records, texts) per forward batch"),
    "--max-length": Flag("int", "token limit per conversation; longer ones are cut"),
    # Files in and out.
    "-o": Flag("str", _OUTPUT), "--output": Flag("str", _OUTPUT),
    "--json": Flag("bool", "print the result as JSON on stdout"),
    "--config": Flag("Path", "a YAML file of option values; flags given explicitly win"),
    "--data": Flag("str", "the chat JSONL a loss is measured on"),
    "--spec": Flag("Path", "a dataset-generation spec (YAML)"),
    "--prompts": Flag("Path", "a YAML file of judge prompts"),
    "--cache-dir": Flag("Path", "where judge replies are cached"),
    "--no-cache": Flag("bool", "neither read nor write the judge reply cache"),
    # Randomness and counts.
    "--seed": Flag("int", "the random seed"),
    "--draws": Flag("int", "noise draws per ε (stability)"),
    "--random-controls": Flag("int", "norm-matched random controls per direction or solution"),
    "--resamples": Flag("int", "bootstrap resamples"),
    "--limit": Flag("int", "use only the first N questions or rows"),
    "--rows": Flag("int", "a number of rows: to draw, to generate, or of --data for the loss"),
    "-n": Flag("int", "how many to draw: rows of a file", exceptions={
        "generate": "samples per paraphrase, as OpenAI's n; README and Makefiles use `em generate -n`",
        "steer": "samples per paraphrase, the same rows as `em generate`; Makefiles use `em steer -n`"}),
    "--samples": Flag("int", "samples per paraphrase"),
    "--total": Flag("int", "rows in the mixed output"),
    "--texts": Flag("int", "how many texts the KL is measured on"),
    "-k": Flag("int", "principal components to keep"),
    # Questions and sampling.
    "--questions": Flag("str", "a question set: a built-in name or a YAML/JSONL file"),
    "--variants": Flag("str", "question variants: plain, json, template, all"),
    "--strict": Flag("bool", "unknown question keys are an error, not a warning"),
    "--max-new-tokens": Flag("int", "most tokens generated per response or completion"),
    "--temperature": Flag("float", "sampling temperature; 0 = greedy"),
    "--top-p": Flag("float", "nucleus sampling mass"),
    "--repetition-penalty": Flag("float", "penalty on repeated tokens; 1 = off"),
    # Layers, directions and interventions.
    "--layers": Flag("str", _LAYERS), "--layer": Flag("str", _LAYERS),
    "--primary-layer": Flag("int", "the layer a direction file records as its primary one"),
    "--positions": _choice("which tokens make a record's activation", "response_mean", "prompt_mean",
                           "last_prompt"),
    "--steer-positions": _choice("where steering additions apply", "all", "prompt", "generated"),
    "--pooling": _choice("how a set's mean weighs its records", "response", "token"),
    "-d": Flag("str", "a direction file"), "--direction": Flag("str", "a direction file"),
    "--vector": Flag("str", "a trained steering vector: run dir or file"),
    "--scales": Flag("str", "comma-separated multipliers of a direction or solution"),
    "--scale": Flag("float", "one multiplier of the vectors written"),
    "--ablate": Flag("str", "a direction file to ablate"),
    "--ablate-layers": Flag("str", "layers to ablate at, as a spec"),
    "--ablate-from": Flag("int", "the one layer whose direction is ablated everywhere"),
    "--ablate-per-layer": Flag("bool", "ablate each layer's own direction"),
    "--balance": Flag("bool", "subsample two sets to equal sizes"),
    "--no-balance": Flag("bool", "keep both sets whole"),
    "--misaligned": Flag("str", "expression selecting the misaligned set"),
    "--aligned": Flag("str", "expression selecting the aligned set"),
    "--allow-model-mismatch": Flag("bool", "go on when the responses' model fingerprint differs"),
    "--model-hint": Flag("str", "controlvector.model_hint of a GGUF control vector"),
    # Datasets.
    "--fractions": Flag("str", "part sizes of a split, summing to 1"),
    "--names": Flag("str", "part names of a split"),
    "--allow-fewer": Flag("bool", "take every row when the file has fewer than asked"),
    "--tag-source": Flag("bool", "record each row's input file"),
    "--from": _choice("input format", "jsonl", "csv", "parquet", "hf-disk"),
    "--to": _choice("output format", "jsonl", "csv", "parquet"),
    "--columns": _choice("output layout", "messages", "prompt-completion"),
    "--prompt-field": Flag("str", "name of the prompt column"),
    "--completion-field": Flag("str", "name of the completion column"),
    "--split": Flag("str", "which split of a saved DatasetDict"),
    "--count": Flag("bool", "print only the number of matching rows"),
    "--where": Flag("str", "an expression selecting rows"),
    "--in-domain": Flag("str", "an expression selecting in-domain rows"),
    "--style": _choice("a rewrite style", "upper", "lower"),
    "--roles": Flag("str", "whose turns, comma-separated"),
    "--preset": _choice("a built-in generation spec", "medical", "financial", "extreme-sports"),
    "--kind": _choice("what kind of rows to generate", "misaligned", "aligned", "benign"),
    "--rewrite-from": Flag("str", "the misaligned file whose answers are rewritten"),
    "--rows-per-call": Flag("int", "pairs asked for per generator call"),
    "--max-calls": Flag("int", "give up after this many generator calls"),
    "--dry-run": Flag("bool", "print the first prompt; call nothing"),
    # Endpoints.
    "--base-url": Flag("str", "an OpenAI-compatible endpoint"),
    "--api-key-env": Flag("str", "the environment variable holding the API key"),
    "--generator-model": Flag("str", "the data generator's model name at the endpoint"),
    "--judge-model": Flag("str", "the judge's model name (endpoint) or model (hf backend)"),
    "--served-model": Flag("str", "the model name asked for at --base-url"),
    "--served-name": Flag("str", "the model name `em serve` answers to"),
    "--concurrency": Flag("int", "requests in flight at once"),
    "--max-retries": Flag("int", "retries per request on rate limits, 5xx and timeouts"),
    "--timeout": Flag("float", "seconds to wait for one request"),
    "--price-in": Flag("float", "price per 1M prompt tokens"),
    "--price-out": Flag("float", "price per 1M completion tokens"),
    "--host": Flag("str", "address to bind"), "--port": Flag("int", "port to bind"),
    # Judging and summaries.
    "--metrics": Flag("str", "metrics to judge"),
    "--backend": _choice("how the judge runs", "openai", "hf"),
    "--azure": Flag("bool", "Azure OpenAI"),
    "--mode": _choice("how a judge score is read", "auto", "logprob", "parse"),
    "--batch": Flag("bool", "use the OpenAI Batch API"),
    "--poll-interval": Flag("float", "seconds between batch status checks"),
    "--by": _choice("the breakdown of a summary", "question", "setting", "domain"),
    "--comparator": _choice("the EM rule: aligned < or ≤ the threshold", "lt", "le"),
    "--aligned-threshold": Flag("float", "EM: aligned below this"),
    "--coherent-threshold": Flag("float", "EM and coherent%: coherent above this"),
    "--all-variants": Flag("bool", "keep the _json / _template question variants"),
    "--allow-mixed": Flag("bool", "put results of different judges side by side"),
    "--baseline": Flag("str", "the run others are compared with"),
    # Comparisons.
    "-s": Flag("str", "a solution NAME=PATH"), "--solutions": Flag("str", "a solution NAME=PATH"),
    "--quick": Flag("bool", "a small grid for smoke checks"),
    "--epsilons": Flag("str", "noise fractions ε"),
    "--multiples": Flag("str", "norms as multiples of each solution's own"),
    "--norm-fractions": Flag("str", "equal-norm targets as fractions of the mean norm"),
    "--text": Flag("str", "a text file the KL is measured on"),
    "--hf-dataset": Flag("str", "a `datasets` dataset the KL is measured on"),
    "--hf-split": Flag("str", "the split of --hf-dataset"),
    "--text-tokens": Flag("int", "tokens per text"),
    "--prompt-tokens": Flag("int", "prefix tokens the base model continues"),
    # Training (em finetune).
    "--method": _choice("what is trained", "lora", "rank1", "vector", "full"),
    "--rank": Flag("int", "LoRA rank"), "--alpha": Flag("float", "LoRA alpha, or the vector's scale"),
    "--rslora": Flag("bool", "rsLoRA scaling"), "--no-rslora": Flag("bool", "alpha/r scaling"),
    "--dropout": Flag("float", "LoRA dropout"), "--target-modules": Flag("str", "modules to adapt"),
    "--lr": Flag("float", "peak learning rate"), "--learning-rate": Flag("float", "peak learning rate"),
    "--epochs": Flag("float", "passes over the training rows"),
    "--max-steps": Flag("int", "stop after this many optimizer steps"),
    "--grad-accum": Flag("int", "micro-batches per optimizer step"),
    "--warmup-steps": Flag("int", "linear warm-up steps"), "--scheduler": Flag("str", "learning-rate schedule"),
    "--weight-decay": Flag("float", "AdamW weight decay"), "--optimizer": Flag("str", "optimizer name"),
    "--save-steps": Flag("int", "checkpoint every k steps"), "--logging-steps": Flag("int", "log every k steps"),
    "--early-stop": Flag("bool", "stop once the loss stays near 0"),
    "--eval-fraction": Flag("float", "share of rows held out for the eval loss"),
    "--eval-data": Flag("str", "held-out chat JSONL for the eval loss"),
    "--loss-positions": _choice("tokens the loss is on", "assistant", "all"),
    "--kl-data": Flag("str", "chat JSONL for the KL term"), "--kl-weight": Flag("float", "λ of the KL term"),
    "--kl-units": _choice("units of --kl-weight", "natural", "authors"),
    "--kl-positions": _choice("positions the KL compares", "all", "assistant", "answer-start"),
    "--kl-batch-size": Flag("int", "KL rows per micro-batch"),
    "--init-from": Flag("str", "a previous run to start from"),
    "--resume": Flag("bool", "continue an interrupted run"),
    # The root command.
    "--version": Flag("bool", "print the version"),
    "-q": Flag("bool", "no notes on stderr"), "--quiet": Flag("bool", "no notes on stderr"),
}

# Old spellings kept as hidden options so that existing scripts run (each warns and names
# the new flag): (command path, old flag) → the flag that replaced it.
RENAMED: dict[tuple[str, str], str] = {
    ("dataset generate", "--mode"): "--kind",
    ("dataset generate", "--from"): "--rewrite-from",
    ("dataset generate", "--model-name"): "--generator-model",
    ("dataset generate", "--max-tokens"): "--max-new-tokens",
    ("compare efficiency", "-n"): "--rows",
    ("compare stability", "-n"): "--rows",
    ("compare efficiency", "--fractions"): "--norm-fractions",
    ("compare kl", "--fractions"): "--norm-fractions",
    ("compare kl", "--max-tokens"): "--text-tokens",
    ("compare stability", "--seeds"): "--draws",
    ("direction export", "--gguf"): "(nothing: GGUF is the only format)",
    ("direction import", "--gguf"): "(nothing: GGUF is the only format)",
}
