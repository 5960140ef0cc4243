"""`em info`: the environment, for bug reports."""

from __future__ import annotations

from em_cli.commands._options import JsonOpt
from em_cli.commands._output import emit_json


def info(json_: JsonOpt = False) -> None:
    """Print versions, accelerators and cache paths (paste this into bug reports).

    Example: em info --json
    """
    from rich.console import Console
    from rich.table import Table

    from em_cli.env_report import environment_report

    report = environment_report()
    if json_:
        emit_json(report)
        return
    table = Table(show_header=False, box=None)
    table.add_row("em", report["em"])
    table.add_row("python", f"{report['python']} ({report['executable']})")
    table.add_row("platform", report["platform"])
    for name, version in report["packages"].items():
        table.add_row(name, version or "[red]not installed[/red]")
    acc = report["accelerators"]
    table.add_row("cuda", f"{acc['cuda_available']} (torch built for CUDA {acc['cuda_version']})"
                  + (f": {', '.join(acc['cuda_devices'])}" if acc["cuda_devices"] else ""))
    table.add_row("mps", str(acc["mps_available"]))
    table.add_row("cpu threads", str(acc["cpu_threads"]))
    for name, path in report["paths"].items():
        table.add_row(name.replace("_", " "), path)
    for name, value in report["env"].items():
        table.add_row(f"${name}", value)
    Console().print(table)
