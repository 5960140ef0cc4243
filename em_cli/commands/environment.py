"""`em info`: the environment, for bug reports."""

from __future__ import annotations

from typing import Any

from em_cli.commands._options import JsonOpt
from em_cli.commands._output import out


def info(json_: JsonOpt = False) -> None:
    """Print versions, accelerators and cache paths (paste this into bug reports).

    Example: em info --json
    """
    from em_cli.env_report import environment_report

    out.result(environment_report(), json_, _print_report)


def _print_report(report: dict[str, Any]) -> None:
    from rich.text import Text

    acc = report["accelerators"]
    out.pairs([
        ("em", report["em"]),
        ("python", f"{report['python']} ({report['executable']})"),
        ("platform", report["platform"]),
        *[(name, version or Text("not installed", style="red")) for name, version in report["packages"].items()],
        ("cuda", f"{acc['cuda_available']} (torch built for CUDA {acc['cuda_version']})"
                 + (f": {', '.join(acc['cuda_devices'])}" if acc["cuda_devices"] else "")),
        ("mps", str(acc["mps_available"])),
        ("cpu threads", str(acc["cpu_threads"])),
        *[(name.replace("_", " "), path) for name, path in report["paths"].items()],
        *[(f"${name}", value) for name, value in report["env"].items()],
    ])
