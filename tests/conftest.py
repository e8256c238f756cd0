"""Shared fixtures: tiny offline models, an isolated cache, and the paths of the shared test data."""

import os
from pathlib import Path

import pytest

from tiny_model import build_tiny_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_DATA_SKIP = "shared test data not found"


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
        pytest.skip(f"{SHARED_DATA_SKIP} at {path} (it lives beside the project root)")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under EMPROBE_REQUIRE (set by CI), a test skipped for something missing fails instead: `deps` covers
    dependencies CI installs itself (llama.cpp, Chromium, the SmolLM2 wheel, TRL), `data` the shared test data."""
    outcome = yield
    report = outcome.get_result()
    required = {r.strip() for r in os.environ.get("EMPROBE_REQUIRE", "").split(",") if r.strip()}
    if not report.skipped or not required or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2])
    kind = "data" if SHARED_DATA_SKIP in reason else "deps"
    if kind in required:
        report.outcome = "failed"
        report.longrepr = f"EMPROBE_REQUIRE={','.join(sorted(required))}: skipping is not allowed here: {reason}"
