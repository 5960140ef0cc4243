"""The `em` entry point: registers the subcommands and turns errors into exit codes.

Only typer/rich and `em`'s light modules are imported here; torch and transformers are
imported inside the commands that need them, so `em --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from em_cli import __version__
from em_cli.commands import compare as compare_cmd
from em_cli.commands import dataset as dataset_cmd
from em_cli.commands import direction as direction_cmd
from em_cli.commands import extract as extract_cmd
from em_cli.commands import finetune as finetune_cmd
from em_cli.commands import generate as generate_cmd
from em_cli.commands import environment as info_cmd
from em_cli.commands import judge as judge_cmd
from em_cli.commands import model as model_cmd
from em_cli.commands import question_sets as questions_cmd
from em_cli.commands import serve as serve_cmd
from em_cli.commands import steer as steer_cmd
from em_cli.commands._errors import report
from em_cli.errors import Interrupted

app = typer.Typer(
    name="em",
    help="Create, measure and dissect model organisms of emergent misalignment.\n\n"
         "Subcommands exchange JSONL and safetensors files; chain them in shell pipelines or Makefiles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"em {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No notes on stderr; warnings, errors and results "
                                                              "still appear.")] = False,
) -> None:
    """Create, measure and dissect model organisms of emergent misalignment."""
    from em_cli.commands._output import out

    out.quiet = quiet


# The suite, in pipeline order, with the one-line purpose `em --help` shows.
SUITE: dict[str, tuple[str, object]] = {
    "dataset": ("Validate, split, mix, filter, convert and generate chat datasets (JSONL).", dataset_cmd.app),
    "generate": ("Sample responses from a model (+adapter) to a question set → responses JSONL.",
                 generate_cmd.generate),
    "finetune": ("Train LoRA / rank-1 / steering-vector / full organisms, optionally KL-regularised.",
                 finetune_cmd.finetune),
    "extract": ("Residual-stream activations of conversations → activations safetensors.", extract_cmd.extract),
    "direction": ("Mean-difference directions, cosines, projections, GGUF control vectors.", direction_cmd.app),
    "steer": ("Generate while adding or ablating directions; layer × scale sweeps.", steer_cmd.steer),
    "judge": ("Score responses with an LLM judge (logprob-weighted 0-100) or built-in scorers.", judge_cmd.app),
    "compare": ("Efficiency, stability and pre-training KL of two solutions, with plots.", compare_cmd.app),
}

for _name, (_help, _command) in SUITE.items():
    if isinstance(_command, typer.Typer):
        app.add_typer(_command, name=_name, short_help=_help)
    else:
        app.command(_name, short_help=_help)(_command)

app.add_typer(model_cmd.app, name="model")
app.add_typer(questions_cmd.app, name="questions")
app.command("serve", short_help="Serve a local model as an OpenAI-compatible endpoint (for judging, data, evals).")(serve_cmd.serve)
app.command("info")(info_cmd.info)


def _interrupted(signum: int, frame: object) -> None:
    raise Interrupted()


def _log_to_stderr() -> None:
    """Library modules log progress notes through `logging`; show them on stderr."""
    import logging

    # bitsandbytes warns at import about optional CPU kernels; nothing a user should act on.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logger = logging.getLogger("em_cli")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if os.environ.get("EM_DEBUG") else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 0 ok, 1 error, 2 usage (bad flags are reported by typer itself)."""
    _log_to_stderr()
    # Ctrl-C becomes our own error, so it is reported as one line with exit code 130 (the
    # CLI framework would otherwise print "Aborted!" and exit 1).
    signal.signal(signal.SIGINT, _interrupted)
    if not os.environ.get("EM_DEBUG"):
        import warnings

        # Library deprecation chatter is for developers, not for people running experiments.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        # Not standalone: usage errors come back as exceptions, reported as one `Error:` line.
        result = typer.main.get_command(app).main(args=argv, prog_name="em", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - the one place every error is reported
        code = report(exc)
    if argv is None:
        sys.exit(code)
    return code
