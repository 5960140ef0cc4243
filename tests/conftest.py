from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_models import build_tiny_model

torch = pytest.importorskip("torch")


def _threads_per_worker() -> int:
    """The cores shared among pytest-xdist workers (`make test` runs one per core, up to 4):
    oversubscribed torch thread pools are much slower than one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


THREADS = _threads_per_worker()
torch.set_num_threads(THREADS)
if "PYTEST_XDIST_WORKER" in os.environ:
    # `em` processes the tests start inherit the share.
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    os.environ.setdefault("MKL_NUM_THREADS", str(THREADS))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's cache; they share one cache for the whole session
    (so the real model is dequantised at most once per run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EM_CACHE_DIR", str(tmp_path_factory.mktemp("em-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    return build_tiny_model("qwen2", tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_no_template(tmp_path_factory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-plain"), chat=False)


@pytest.fixture(params=["tiny_llama", "tiny_qwen"])
def tiny_model(request) -> Path:
    """Each test using this runs once per tiny model family."""
    return request.getfixturevalue(request.param)
