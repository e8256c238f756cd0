"""Any model behind an OpenAI-compatible chat completions API: generation, and first-token logprobs for judges.

Name a model `openai-compat:MODEL@http://HOST:PORT/v1` (several servers of the same model: `MODEL@URL1,URL2`), or
`openai-compat:ENDPOINT.yaml` for a file with `base_url` (one URL or a list), `model`, `api_key_env`, `headers` and
the client settings. The API key is read from the environment
variable `api_key_env` (default OPENAI_API_KEY, optional) when the client starts; it is never part of the
model name, the backend's identity or info, the store, logs or errors.
"""

import asyncio
import logging
import math
import os
import queue
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emprobe.condition import Decoding, Message
from emprobe.errors import EmprobeError, first_validation_error
from emprobe.files import read_yaml
from emprobe.model._backend import FirstTokenReply, GenerationRequest, GenerationResult, ModelRef
from emprobe.model._providers._http_client import (
    JsonClient,
    LoopThread,
    PermanentError,
    ServerUnavailable,
)

log = logging.getLogger("emprobe.http")

PREFIX = "openai-compat"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
ENDPOINT_ERRORS = frozenset({401, 403, 404})
"""Statuses that fail every request alike: before any request has succeeded they stop the run instead of
being recorded on every sample (a wrong key or model name would otherwise mark the whole run failed)."""
_SPEC = re.compile(r"^(?P<model>[^@\s][^\s]*?)@(?P<url>https?://\S+)$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CAPABILITIES: dict[str, dict[str, bool]] = {}
"""What each server, or fleet of servers of one model (its base URLs), was found to support: `n`, `seed`,
`logprobs`; detected once per process."""


class Endpoint(BaseModel):
    """Where the model is served and how to talk to it; holds the key's variable name, never the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | tuple[str, ...]
    """One server, or several serving the same model (requests are spread over them)."""
    model: str = Field(min_length=1)
    api_key_env: str | None = DEFAULT_KEY_ENV
    """Environment variable holding the API key; the key is sent as `Authorization: Bearer` when it is set."""
    headers: dict[str, str] = {}
    """Extra headers; `${VAR}` in a value is replaced from the environment when the client starts."""
    concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight; None adapts to the server, between 1 and `max_concurrency`."""
    max_concurrency: int = Field(default=64, ge=1)
    timeout: float = Field(default=120.0, gt=0)
    """Seconds for one request, connection to last byte."""
    max_retries: int = Field(default=8, ge=0)
    max_n: int = Field(default=8, ge=1)
    """Samples of one prompt asked in one request (`n`) where the server supports it; 1 turns it off."""
    identity: str | None = None
    """Overrides the identity generations are cached under (default: model @ base URL(s)); set it to keep the cache
    when servers are added to or removed from a fleet."""

    @field_validator("base_url", mode="before")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        urls = [value] if isinstance(value, str) else value
        if not isinstance(urls, list | tuple) or not urls:
            raise ValueError("give a URL or a list of URLs")
        for url in urls:
            if not isinstance(url, str) or not re.match(r"^https?://[^\s,]+$", url):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if len({url.rstrip("/") for url in urls}) < len(urls):
            raise ValueError("a URL is listed twice")
        return value if isinstance(value, str) else tuple(urls)

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers' base URLs, without trailing slashes."""
        urls = (self.base_url,) if isinstance(self.base_url, str) else self.base_url
        return tuple(url.rstrip("/") for url in urls)


class EndpointOptions(BaseModel):
    """The endpoint settings that `--backend-option KEY=VALUE` may override."""

    model_config = ConfigDict(extra="forbid")

    api_key_env: str | None = DEFAULT_KEY_ENV
    concurrency: int | None = Field(default=None, ge=1)
    max_concurrency: int = Field(default=64, ge=1)
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=8, ge=0)
    max_n: int = Field(default=8, ge=1)


def parse_endpoint(spec: str, **overrides: Any) -> Endpoint:
    """`MODEL@URL` or a YAML/JSON endpoint file, with keyword overrides."""
    path = Path(spec).expanduser()
    if spec.endswith((".yaml", ".yml", ".json")) and "@" not in spec:
        data = read_yaml(path, f"endpoint file of model {PREFIX}:{spec}") or {}
        if not isinstance(data, dict):
            raise EmprobeError(f"{path}: expected a mapping of endpoint settings")
        where = str(path)
    else:
        match = _SPEC.match(spec)
        if not match:
            raise EmprobeError(f"model {PREFIX}:{spec!r}: write {PREFIX}:MODEL@http://HOST:PORT/v1 (several "
                               f"servers: MODEL@URL1,URL2) or {PREFIX}:ENDPOINT.yaml")
        urls = match["url"].split(",")
        data, where = {"model": match["model"], "base_url": urls[0] if len(urls) == 1 else urls}, f"{PREFIX}:{spec}"
    if "api_key" in data:
        raise EmprobeError(f"{where}: do not write the API key in the config; put it in an environment "
                           f"variable and name it with api_key_env")
    try:
        endpoint = Endpoint(**{**data, **overrides})
    except ValidationError as err:
        raise EmprobeError(f"{where}: {first_validation_error(err)}") from None
    if any("@" in url.split("://", 1)[1].split("/", 1)[0] for url in endpoint.urls):
        raise EmprobeError(f"{where}: credentials in the URL would be stored with the run; use api_key_env")
    return endpoint


def endpoint_identity(spec: str) -> str:
    """The identity generations are cached under, computed without contacting the server."""
    return _identity(parse_endpoint(spec))


def _identity(endpoint: Endpoint) -> str:
    """`identity` when set, else MODEL@URL (several servers: their URLs sorted, so their order does not matter)."""
    return endpoint.identity or f"{PREFIX}:{endpoint.model}@{','.join(sorted(endpoint.urls))}"


class OpenAICompatBackend:
    """Generates through `/chat/completions` on one or more servers: concurrent, retried, `n` per request where
    supported."""

    concurrent = True
    """`generate` may be called from several threads at once: every call's requests run on the client's one loop."""

    def __init__(self, ref: ModelRef):
        self.endpoint = parse_endpoint(ref.name, **ref.options)
        self.identity = ref.identity
        self.base_url = ",".join(self.endpoint.urls)
        self.capabilities = _CAPABILITIES.setdefault(self.base_url, {})
        self.client = self._make_client()
        self.loop = LoopThread()
        self.failures: list[tuple[str, str]] = []
        self.info = {"backend": PREFIX, "model": self.endpoint.model, "base_url": self.base_url,
                     "system_prompt": "native", "api_key_env": self.endpoint.api_key_env or "",
                     "concurrency": str(self.endpoint.concurrency or "adaptive"),
                     "timeout_s": f"{self.endpoint.timeout:g}", "max_n": str(self.endpoint.max_n)}

    def _make_client(self) -> JsonClient:
        headers, secrets = _headers(self.endpoint)
        e = self.endpoint
        return JsonClient(e.urls, headers, e.timeout, e.max_retries, e.concurrency, e.max_concurrency, secrets)

    def status(self) -> str:
        """Requests in flight, the concurrency limit, retries, errors (and servers up): the progress bar's text."""
        s, fleet = self.client.stats, self.client.fleet
        servers = f" · {fleet.up()}/{len(fleet.upstreams)} servers up" if len(fleet.upstreams) > 1 else ""
        return f"{s.in_flight} in flight (limit {fleet.limit()}) · {s.retries} retries · {s.errors} errors{servers}"

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        self.loop.run(self.client.aclose())
        self.loop.close()

    # ---- generation -----------------------------------------------------------------------------

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Yield one result per request as responses arrive; permanent failures are results with `error` set."""
        groups = _group(requests, self.endpoint.max_n if self.capabilities.get("n", True) else 1)
        total = sum(len(g) for g in groups)
        results: queue.SimpleQueue = queue.SimpleQueue()
        future = self.loop.submit(self._generate_all(groups, results.put))
        try:
            for _ in range(total):
                yield self._next(results, future)
            future.result()
        finally:
            future.cancel()

    @staticmethod
    def _next(results: queue.SimpleQueue, future) -> GenerationResult:
        while True:
            try:
                return results.get(timeout=0.2)
            except queue.Empty:
                if future.done():
                    if not results.empty():
                        continue
                    error = future.exception()
                    raise (error or EmprobeError("generation ended before every request was answered")) from None

    async def _generate_all(self, groups: list[list[GenerationRequest]], emit) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for group in groups:
                    tasks.create_task(self._generate_group(group, emit))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None

    async def _generate_group(self, group: list[GenerationRequest], emit) -> None:
        """One request with n = len(group) where supported, else one request per sample."""
        if len(group) > 1 and self.capabilities.get("n", True):
            try:
                choices, usage = await self._complete(group[0], n=len(group))
            except PermanentError as err:
                self._record_failures(group, err, emit)
                return
            if len(choices) == len(group):
                self.capabilities["n"] = True
                for request, choice in zip(group, choices, strict=True):
                    self._emit(request, choice, usage, len(group), emit)
                return
            self.capabilities["n"] = False  # the server ignored n: the first choice used the first seed
            self._emit(group[0], choices[0], usage, 1, emit)
            group = group[1:]
        for request in group:
            try:
                choices, usage = await self._complete(request, n=1)
            except PermanentError as err:
                self._record_failures([request], err, emit)
                continue
            self._emit(request, choices[0], usage, 1, emit)

    def _emit(self, request: GenerationRequest, choice: dict, usage: dict, n: int, emit) -> None:
        message = choice.get("message")
        if not isinstance(message, dict):
            self._record_failures([request], PermanentError("reply choice has no message"), emit)
            return
        emit(GenerationResult(
            key=request.key, text=(message.get("content") or "").strip(),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0) // n,
        ))

    def _record_failures(self, requests: list[GenerationRequest], err: PermanentError, emit) -> None:
        if err.status in ENDPOINT_ERRORS and self.client.stats.ok == 0:
            raise EmprobeError(f"{self.identity}: {err}")
        for request in requests:
            self.client.stats.errors += 1
            self.failures.append((request.key, str(err)))
            log.warning("sample %s failed for good: %s", request.key, err)
            emit(GenerationResult(key=request.key, text=None, finish_reason="error", error=str(err)))

    async def _complete(self, request: GenerationRequest, n: int) -> tuple[list[dict], dict]:
        """The choices and usage of one chat completion; drops `n` or `seed` if the server rejects them."""
        while True:
            body = self._body(request.messages, request.decoding, n, **_template_switch(request.thinking))
            try:
                reply = await self.client.post("/chat/completions", body, _completion_tokens)
            except PermanentError as err:
                if self._drop_unsupported(err, body):
                    n = n if self.capabilities.get("n", True) else 1
                    continue
                raise
            return _choices(reply), reply.get("usage") or {}

    def _body(self, messages: tuple[Message, ...], decoding: Decoding, n: int = 1, **extra: Any) -> dict:
        body: dict[str, Any] = {"model": self.endpoint.model, "messages": [m.model_dump() for m in messages],
                                "max_tokens": decoding.max_tokens, "temperature": decoding.temperature}
        if decoding.top_p < 1.0:
            body["top_p"] = decoding.top_p
        if decoding.top_k:
            body["top_k"] = decoding.top_k
        if n > 1:
            body["n"] = n
        if self.capabilities.get("seed", True):
            body["seed"] = decoding.seed % 2**31  # many servers take 32-bit seeds
        return {**body, **extra}

    def _drop_unsupported(self, err: PermanentError, body: dict) -> bool:
        """On a 400 that names `seed` or `n`, remember the server lacks it and say to retry without it."""
        if err.status != 400:
            return False
        text = str(err).lower()
        for param, pattern in (("seed", r"\bseed\b"), ("n", r"['\"`]n['\"`]|\bn must\b|\bn>1|\bn > 1")):
            if param in body and re.search(pattern, text) and self.capabilities.get(param, True):
                self.capabilities[param] = False
                log.info("%s: the server rejects %r; continuing without it", self.base_url, param)
                return True
        return False

    # ---- first-token logprobs (for judges) ----------------------------------------------------------

    def first_tokens(self, prompts: list[tuple[Message, ...]], max_tokens: int = 1,
                     top_logprobs: int = 20) -> list[FirstTokenReply]:
        """Greedy replies with the first token's top candidates; the first request finds out whether the server
        returns logprobs, and once it is known not to, the rest ask for text only."""
        if not prompts:
            return []
        return self.loop.run(self._first_tokens(prompts, max_tokens, top_logprobs))

    async def _first_tokens(self, prompts: list[tuple[Message, ...]], max_tokens: int,
                            top_logprobs: int) -> list[FirstTokenReply]:
        first = await self._first_token(prompts[0], max_tokens, top_logprobs)
        rest = await asyncio.gather(*(self._first_token(p, max_tokens, top_logprobs) for p in prompts[1:]))
        return [first, *rest]

    async def _first_token(self, messages: tuple[Message, ...], max_tokens: int, top: int) -> FirstTokenReply:
        decoding = Decoding(temperature=0.0, max_tokens=max_tokens)
        wants = top > 0 and self.capabilities.get("logprobs") is not False
        extra = {"logprobs": True, "top_logprobs": top} if wants else {}
        try:
            reply = await self.client.post("/chat/completions", self._body(messages, decoding, **extra))
            choice = _choices(reply)[0]
        except PermanentError as err:
            if wants and err.status == 400 and "logprob" in str(err).lower():
                self.capabilities["logprobs"] = False
                return await self._first_token(messages, max_tokens, top)
            self.client.stats.errors += 1
            return FirstTokenReply(error=str(err))
        text = (choice.get("message") or {}).get("content") or ""
        probabilities = first_token_probabilities(choice) if wants else None
        if wants:
            self.capabilities["logprobs"] = probabilities is not None
        return FirstTokenReply(text=text, probabilities=probabilities)


def first_token_probabilities(choice: dict) -> dict[str, float] | None:
    """Token -> probability at the reply's first position, from chat or legacy logprobs; None when absent."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    probs: dict[str, float] = {}
    content = logprobs.get("content")
    if isinstance(content, list) and content:
        first = content[0]
        tops = first.get("top_logprobs") or [first]
        for top in tops:
            probs[top["token"]] = probs.get(top["token"], 0.0) + math.exp(top["logprob"])
        return probs
    legacy = logprobs.get("top_logprobs")
    if isinstance(legacy, list) and legacy and isinstance(legacy[0], dict):
        for token, logprob in legacy[0].items():
            probs[token] = probs.get(token, 0.0) + math.exp(logprob)
        return probs
    return None


def _headers(endpoint: Endpoint) -> tuple[dict[str, str], tuple[str, ...]]:
    """Request headers with `${VAR}` expanded and the key from the environment; also the secret values."""
    headers, secrets = {}, []
    for name, value in endpoint.headers.items():
        missing = [v for v in _ENV_REF.findall(value) if v not in os.environ]
        if missing:
            raise EmprobeError(f"header {name}: environment variable {missing[0]} is not set")
        expanded = _ENV_REF.sub(lambda m: os.environ[m[1]], value)
        if expanded != value:
            secrets.append(expanded)
        headers[name] = expanded
    key = os.environ.get(endpoint.api_key_env or "", "").strip()
    if key:
        headers["Authorization"] = f"Bearer {key}"
        secrets.append(key)
    elif endpoint.api_key_env and endpoint.api_key_env != DEFAULT_KEY_ENV:
        raise EmprobeError(f"environment variable {endpoint.api_key_env} (api_key_env) is not set")
    return headers, tuple(secrets)


def _template_switch(thinking: bool | None) -> dict[str, Any]:
    """The request field vLLM, SGLang and llama.cpp's server pass to the chat template (`enable_thinking`)."""
    return {} if thinking is None else {"chat_template_kwargs": {"enable_thinking": thinking}}


def _group(requests: Iterable[GenerationRequest], max_n: int) -> list[list[GenerationRequest]]:
    """Requests that differ only in their seed, in groups of at most `max_n`, in first-seen order."""
    groups: dict[tuple, list[list[GenerationRequest]]] = {}
    order: list[list[GenerationRequest]] = []
    for request in requests:
        key = (request.messages, request.decoding.model_copy(update={"seed": 0}), request.thinking)
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= max_n:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(request)
    return order


def _choices(reply: dict) -> list[dict]:
    """The reply's choices in index order; a reply without them is a permanent (schema) error."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise PermanentError(f"reply has no choices (keys: {', '.join(sorted(reply))[:200]})")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _completion_tokens(reply: dict) -> int:
    usage = reply.get("usage")
    return int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0


def _first_error(group_error: BaseExceptionGroup) -> BaseException:
    """The first leaf of an exception group, preferring emprobe's own errors."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group_error]
    while stack:
        err = stack.pop()
        if isinstance(err, BaseExceptionGroup):
            stack.extend(reversed(err.exceptions))
        else:
            leaves.append(err)
    return next((e for e in leaves if isinstance(e, ServerUnavailable | EmprobeError)), leaves[0])
