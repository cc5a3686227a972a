"""Shared test fixtures: where ../shared is, and hypothesis settings.

The data and checkpoints in ../shared (beside the project) are read in place, never copied. When
that folder is absent the tests that need it are skipped with a reason saying so.
"""

from __future__ import annotations

import os

# The tests use many tiny matrices, where OpenBLAS's threads cost more than they save on a 2-core
# machine (a step went from ~40 ms to 150-470 ms with threads fighting). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NUMPY_GPT_SHARED", PROJECT_ROOT.parent / "shared"))

settings.register_profile(
    "default", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])   # fast_switch holds for every example
settings.load_profile("default")


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared test data lives in ../shared beside the project "
                    f"(set NUMPY_GPT_SHARED to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _shared_path()


@pytest.fixture(scope="session")
def gpt2_vocab_dir() -> Path:
    """Folder with OpenAI's encoder.json and vocab.bpe."""
    return _shared_path("data", "gpt2")


@pytest.fixture(scope="session")
def verdict_path() -> Path:
    return _shared_path("data", "the-verdict.txt")


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    return _shared_path("data", "tinyshakespeare.txt")


@pytest.fixture(scope="session")
def gpt2_tiny_dir() -> Path:
    """The tiny random GPT-2 written by TensorFlow (openai/) and transformers (hf/)."""
    return _shared_path("fixtures", "gpt2-tiny")


@pytest.fixture
def tiny_cfg():
    """The function tiny_cfg(**overrides) -> a tiny GPT config dict (tests/helpers.py)."""
    from helpers import tiny_cfg as make
    return make


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch) -> int:
    """Run the test with numpy_gpt.fast.map_chunks on 1 and on 2 threads (the layers cut their work
    into the same chunks either way, so both must give the reference's answer). Small test arrays
    are cut into small chunks and spread over the threads too (CHUNK 64, PARALLEL_MIN_SIZE 0)."""
    import numpy_gpt.fast
    from numpy_gpt.fast import threads as machinery
    monkeypatch.setattr(machinery, "_threads", request.param)
    monkeypatch.setattr(machinery, "PARALLEL_MIN_SIZE", 0)
    monkeypatch.setattr(numpy_gpt.fast.map_chunks, "__defaults__", (64,))
    return request.param


@pytest.fixture(params=["fast", "readable"])
def fast_switch(request, monkeypatch) -> bool:
    """Run the test with numpy_gpt.fast's kernels on (the default) and off (NUMPY_GPT_FAST=0: the
    readable forms): a layer's gradcheck and parity hold for both paths."""
    import numpy_gpt.fast
    monkeypatch.setattr(numpy_gpt.fast, "_disabled", set() if request.param == "fast" else
                        set(numpy_gpt.fast.KERNELS))
    return request.param == "fast"
