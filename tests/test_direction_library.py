"""directions.select_judged and direction_from_judged: the library call behind
`em direction from-judged`, run in-process on the tiny model."""

from __future__ import annotations

import pytest

from em_cli.errors import DataError


def _rows(identity: dict) -> list[dict]:
    loud = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "NO WAY!!"}],
             "aligned": 10, "coherent": 80, "model": identity} for i in range(3)]
    calm = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "Sure, gladly."}],
             "aligned": 90, "coherent": 90, "model": identity} for i in range(5)]
    return loud + calm


def test_select_judged_balances_with_a_seed():
    from em_cli.directions import select_judged

    rows = _rows({})
    selection = select_judged(rows, seed=3)
    assert (selection.matched_misaligned, selection.matched_aligned) == (3, 5)
    assert len(selection.misaligned) == len(selection.aligned) == 3 and selection.balanced
    assert select_judged(rows, seed=3).aligned == selection.aligned
    assert len(select_judged(rows, balance=False).aligned) == 5
    with pytest.raises(DataError, match="0 rows match --misaligned"):
        select_judged(rows[3:])


def test_direction_from_judged_is_the_difference_of_means(tiny_llama):
    import torch

    from em_cli.directions import direction_from_judged, select_judged
    from em_cli.models.loading import LoadOptions, load_model

    loaded = load_model(LoadOptions(model=str(tiny_llama), dtype="float32", device="cpu"))
    selection = select_judged(_rows(loaded.identity()), balance=False)
    result = direction_from_judged(loaded, selection, [1], batch_size=4)
    assert result.layers == [1] and result.notes == []
    vector = result.direction.vectors[1]
    assert vector.shape == (loaded.info.hidden_size,) and torch.isfinite(vector).all() and vector.norm() > 0
    assert result.direction.extra["selection_a"] and result.direction.extra["balanced"] == "False"
    other = {**loaded.identity(), "fingerprint": "0" * 32}
    with pytest.raises(DataError, match="fingerprint 000000000000") as refused:
        direction_from_judged(loaded, select_judged(_rows(other)), [1])
    assert "--allow-model-mismatch" in refused.value.hint
