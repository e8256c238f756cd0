"""Shared fixtures: tiny offline models, an isolated cache, and the paths of the shared test data."""

from pathlib import Path

import pytest

from tiny_model import build_tiny_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Converted models go to a cache of this test session, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMPROBE_CACHE", str(tmp_path_factory.getbasetemp() / "emprobe-cache"))
        yield


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen_no_system(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen"), "qwen2", system_role=False)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (it lives beside the project root)")
    return path
