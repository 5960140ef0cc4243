"""`em serve`: any local model (+adapter) as an OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._model_flags import load_from_flags
from em_cli.commands._options import MODEL, with_options
from em_cli.commands._output import out


@with_options(MODEL)
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind; keep 127.0.0.1 unless you mean it.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    served_name: Annotated[str | None, typer.Option("--served-name", help="Model name clients use (default: --model).")
                           ] = None,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", min=1, help="Most tokens to generate per response when a request sets no max_tokens.")
    ] = 512,
    **flags: Any,
) -> None:
    """Serve a model at /v1/chat/completions and /v1/models (OpenAI-compatible, non-streaming,
    with logprobs/top_logprobs up to 20) so any OpenAI client can use it as a judge, a data
    generator, or a model under evaluation. Ctrl-C stops it.

    Examples:

      em serve --port 8000

      em serve -m Qwen/Qwen2.5-0.5B-Instruct --adapter runs/general/adapter --served-name general

      OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=none python my_eval.py
    """
    from em_cli.errors import Interrupted
    from em_cli.serving import ChatService, make_server

    loaded = load_from_flags(**flags)
    service = ChatService(loaded=loaded, name=served_name or flags["model"], default_max_tokens=max_new_tokens)
    server = make_server(service, host, port)
    bound_host, bound_port = server.server_address[:2]
    out.log(f"Serving {service.name} at http://{bound_host}:{bound_port}/v1 (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Interrupted):
        out.log("Stopped.")
    finally:
        server.server_close()
