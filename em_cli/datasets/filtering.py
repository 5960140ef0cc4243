"""Keep the rows of a JSONL file for which a filter expression (`em_cli.expressions`) is true."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FilterResult:
    """How many rows were read and kept, and the expression's fields that no row has (every
    comparison with such a field was false, which is most often a typo)."""

    rows: int = 0
    kept: int = 0
    unseen_fields: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def filter_file(file: str, expression: str, output: str | None) -> FilterResult:
    """Keep the rows of the JSONL `file` (`-`: stdin) for which `expression` is true.

    With `output` (`-`: stdout) the kept rows are written there with a manifest beside them;
    with None they are only counted. A bad expression is a UsageError naming the problem.

    >>> filter_file("judged.jsonl", "aligned < 30 and coherent > 50", "low.jsonl").kept  # doctest: +SKIP
    12
    """
    from em_cli.artifacts.jsonl import iter_jsonl, write_jsonl
    from em_cli.artifacts.manifest import Manifest
    from em_cli.errors import UsageError
    from em_cli.expressions import MISSING, ExpressionError, compile_expression, get_path

    try:
        keep = compile_expression(expression)
    except ExpressionError as exc:
        raise UsageError(f"filter: {exc.message}", hint=exc.hint) from None
    unseen = set(keep.fields)
    result = FilterResult()

    def matches():
        for _, record in iter_jsonl(file):
            result.rows += 1
            if unseen:
                unseen.difference_update({f for f in unseen if get_path(record, f) is not MISSING})
            if keep(record):
                result.kept += 1
                yield record

    if output is None:
        for _ in matches():
            pass
    else:
        write_jsonl(output, matches())
        Manifest(command="dataset filter", options={"expression": expression}, inputs=[file],
                 results={"rows": result.rows, "kept": result.kept}).write_beside(output)
    result.unseen_fields = sorted(unseen)
    return result
