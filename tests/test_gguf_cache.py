"""The GGUF cache logic, with the expensive dequantisation replaced by a fake builder."""

from __future__ import annotations

import pytest

from em_cli.models import gguf_cache


@pytest.fixture
def fake_build(monkeypatch):
    calls = []

    def build(gguf_path, target, key):
        calls.append(target)
        staging = target.parent / (target.name + ".staging")
        staging.mkdir(parents=True)
        (staging / "model.safetensors").write_bytes(b"weights" * 100)
        (staging / "config.json").write_text("{}")
        files = {p.name: {"bytes": p.stat().st_size, "sha256": gguf_cache.sha256_file(p)}
                 for p in staging.iterdir()}
        (staging / gguf_cache.MARKER).write_text(gguf_cache.json.dumps({"files": files}))
        staging.rename(target)

    monkeypatch.setattr(gguf_cache, "_build", build)
    return calls


def test_second_lookup_is_a_hit(tmp_path, fake_build):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    first = gguf_cache.cached_model_dir(gguf, tmp_path / "cache")
    second = gguf_cache.cached_model_dir(gguf, tmp_path / "cache")
    assert first.built and not second.built and second.reason == "hit"
    assert first.directory == second.directory
    assert len(fake_build) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "marker", "delete"])
def test_damaged_entry_is_rebuilt(tmp_path, fake_build, damage):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    entry = gguf_cache.cached_model_dir(gguf, tmp_path / "cache").directory
    weights = entry / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:10])
    elif damage == "flip":
        weights.write_bytes(b"X" + weights.read_bytes()[1:])
    elif damage == "marker":
        (entry / gguf_cache.MARKER).unlink()
    else:
        import shutil

        shutil.rmtree(entry)
    again = gguf_cache.cached_model_dir(gguf, tmp_path / "cache")
    assert again.built
    assert len(fake_build) == 2
    assert gguf_cache.cached_model_dir(gguf, tmp_path / "cache").reason == "hit"


def test_changed_source_gets_a_new_entry(tmp_path, fake_build):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF one")
    first = gguf_cache.cached_model_dir(gguf, tmp_path / "cache").directory
    gguf.write_bytes(b"GGUF two, longer")
    second = gguf_cache.cached_model_dir(gguf, tmp_path / "cache").directory
    assert first != second
