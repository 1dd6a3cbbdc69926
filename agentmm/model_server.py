"""A chat model on an OpenAI-compatible model server (``settings.model_url``): llama.cpp's
server, llama-cpp-python's, vLLM, Ollama. Several workers then share one GPU box.

``server_chat_model(settings)`` is langchain-openai's ``ChatOpenAI`` (the ``fleet`` extra)
pointed at the server, with what a turn needs on top:

- **token counting with the server's own tokenizer** where it has an endpoint for it
  (llama-cpp-python's ``/extras/tokenize``, vLLM's and llama.cpp's ``/tokenize``), so compose
  fits the window as the server will count it; the approximation where it has none. Which one
  is decided once per model object, on the first count (``ServerTokenizer``): a missing
  endpoint is not asked again. ``counts_exactly()`` says which, for ``TokenCounter``.
- **usage on a streamed reply**: asked for (``stream_usage``); a server that sends none
  (llama-cpp-python's) gets it counted: the reply's chunks (one a token there) and the
  prompt's messages by the tokenizer above, marked ``response_metadata["usage_counted"]``.
  A server that reports cached prompt tokens has them in the trace's ``cache`` as
  ``ChatLlamaCpp``'s (``reused_tokens``).
- **errors as one line**: an unreachable server, a refused key, a model the server does not
  serve, an error answer, a stream the server ended with no finish reason (llama-cpp-python's
  server cuts a reply short whenever another request arrives, unless started with
  ``--interrupt_requests False``): ``ModelServerError`` (``agentmm.errors``), not a traceback
  and not a truncated reply saved as if whole.
- ``max_tokens`` sent as ``max_tokens`` (``ChatOpenAI`` renames it ``max_completion_tokens``,
  which llama-cpp-python's server ignores).
- **tool calls** by ``tool_calling``: ``"native"``, the server's own (``tools``/``tool_choice``
  as OpenAI's API has them: vLLM with ``--enable-auto-tool-choice``, llama.cpp's server with
  ``--jinja``, Ollama); ``"constrained"``, agentmm's two steps with each answer constrained by
  the server's JSON-schema support (``agentmm.server_tool_calling``); ``"auto"``, constrained on
  llama-cpp-python's server (it answers ``tool_choice="auto"`` in plain text with a GGUF's own
  template, so no tool would ever be called), native elsewhere.

``endpoint_check(settings)`` is ``agentmm doctor``'s look at the server (``GET /models``);
it needs only httpx, not langchain-openai.

``langchain_openai`` is imported only when a server model is made (``server_chat_class``),
so ``import agentmm`` and ``agentmm --help`` stay light.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from agentmm.console_text import one_line
from agentmm.errors import ModelServerError, SettingsError
from agentmm.tokens import PER_MESSAGE_OVERHEAD, approximate_tokens

if TYPE_CHECKING:
    import httpx
    from langchain_core.language_models import BaseChatModel

    from agentmm.runtime import Runtime
    from agentmm.settings import Settings

PLACEHOLDER_KEY = "not-needed"  # most local servers want no key; the openai client wants one
REQUEST_TIMEOUT_S = 120.0  # a whole reply, the prefill of a long prompt included
CHECK_TIMEOUT_S = 5.0  # doctor's look
# A turn's tokenize call waits its turn behind replies on a server that answers one request at a
# time (llama-cpp-python's): with 5 s, as doctor's look, 7 of 24 turns failed under 8 users.
TOKENIZE_TIMEOUT_S = REQUEST_TIMEOUT_S
MAX_RETRIES = 1  # the openai client's default (2) makes a dead server take ~2 s to report


def api_root(model_url: str) -> str:
    """The server's root: ``model_url`` without its ``/v1`` (the tokenize endpoints live there)."""
    return model_url.rstrip("/").removesuffix("/v1")


def _one_line(text: str, width: int = 200) -> str:
    return one_line(text, width)


# -------------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class TokenizeEndpoint:
    """One server family's tokenize call: where, what it takes, whether it adds the model's
    special tokens (BOS) itself (then they are counted once, on ``""``, and taken off)."""

    server: str
    path: str
    body: Callable[[str, str], dict[str, Any]]
    adds_special: bool = False


TOKENIZE_ENDPOINTS = (
    TokenizeEndpoint("llama-cpp-python", "extras/tokenize", lambda model, text: {"model": model, "input": text}, True),
    TokenizeEndpoint(
        "vLLM", "tokenize", lambda model, text: {"model": model, "prompt": text, "add_special_tokens": False}
    ),
    TokenizeEndpoint("llama.cpp", "tokenize", lambda model, text: {"content": text, "add_special": False}),
)
_PROBE_TEXT = "Hello there"
_CACHE_LIMIT = 20_000


class ServerTokenizer:
    """Counts tokens with the server's tokenizer where it has an endpoint, else approximately.

    The endpoint is found on the first call and kept (``endpoint``; None: the server has none,
    and it is not asked again). An unreachable server while deciding is a ``ModelServerError``
    and decides nothing, so the next call asks again."""

    def __init__(self, model_url: str, model: str, api_key: str | None, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.model_url = model_url
        self.root = api_root(model_url)
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._decided = False
        self._endpoint: TokenizeEndpoint | None = None
        self._special = 0
        self._client: httpx.Client | None = None
        self._counts: dict[str, int] = {}

    @property
    def endpoint(self) -> TokenizeEndpoint | None:
        """The tokenize endpoint this server has (decided on first use), None if it has none."""
        if not self._decided:
            with self._lock:
                if not self._decided:
                    self._decide()
        return self._endpoint

    @property
    def exact(self) -> bool:
        return self.endpoint is not None

    def token_ids(self, text: str) -> list[int]:
        """``text``'s tokens by the server's tokenizer (no BOS); ``ModelServerError`` if it has no
        tokenize endpoint."""
        endpoint = self.endpoint
        if endpoint is None:
            raise ModelServerError(f"the model server at {self.model_url} has no tokenize endpoint")
        tokens = self._tokenize(endpoint, text)
        if tokens is None:
            raise ModelServerError(f"the model server at {self.model_url} stopped answering its tokenize endpoint")
        return tokens[self._special :] if self._special and len(tokens) >= self._special else tokens

    def count(self, text: str) -> int:
        if not text:
            return 0
        cached = self._counts.get(text)
        if cached is None:
            cached = len(self.token_ids(text)) if self.exact else approximate_tokens(text)
            if len(self._counts) >= _CACHE_LIMIT:
                self._counts.clear()
            self._counts[text] = cached
        return cached

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(base_url=self.root, headers=headers, timeout=self.timeout_s)
        return self._client

    def _decide(self) -> None:
        for endpoint in TOKENIZE_ENDPOINTS:
            tokens = self._tokenize(endpoint, _PROBE_TEXT)
            if tokens:  # llama.cpp's server answers a body it does not read with no tokens
                self._endpoint = endpoint
                if endpoint.adds_special:
                    self._special = len(self._tokenize(endpoint, "") or [])
                break
        self._decided = True

    def _tokenize(self, endpoint: TokenizeEndpoint, text: str) -> list[int] | None:
        """The tokens, or None where this endpoint is not there or not this server's kind."""
        import httpx

        try:
            response = self._http().post(endpoint.path, json=endpoint.body(self.model, text))
        except httpx.HTTPError as exc:
            raise ModelServerError(unreachable(self.model_url, exc)) from exc
        if response.status_code in (401, 403):
            raise ModelServerError(refused_key(self.model_url, response.status_code))
        if response.status_code >= 400:
            return None
        try:
            tokens = response.json().get("tokens")
        except (ValueError, AttributeError):
            return None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            return None
        return tokens


# -------------------------------------------------------------------------------- errors


def unreachable(model_url: str, exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    detail = _one_line(str(cause) or type(cause).__name__, 120)
    return f"cannot reach the model server at {model_url} ({detail}): is it running? (model_url)"


def refused_key(model_url: str, status: int) -> str:
    return f"the model server at {model_url} refused the API key (HTTP {status}): set model_api_key"


def cut_short(model_url: str) -> str:
    """A stream that ended with no finish reason: the server stopped the reply itself.
    llama-cpp-python's server does that to a reply whenever another request comes in (its
    ``interrupt_requests``, on by default), a tokenize call included."""
    return (
        f"the model server at {model_url} ended the reply before it was finished (another request cut it "
        "short? llama-cpp-python's server does unless started with --interrupt_requests False)"
    )


def server_error(exc: BaseException, model_url: str, model: str) -> ModelServerError | None:
    """``exc`` (the openai client's, or httpx's) as agentmm's one-line error, None if it is not
    one of the model server's."""
    import httpx
    import openai

    if isinstance(exc, ModelServerError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ModelServerError(f"the model server at {model_url} did not answer within {REQUEST_TIMEOUT_S:.0f} s")
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return ModelServerError(unreachable(model_url, exc))
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ModelServerError(refused_key(model_url, exc.status_code))
    if isinstance(exc, openai.NotFoundError):
        return ModelServerError(
            f"the model server at {model_url} does not serve model {model!r} "
            f"(HTTP 404: {_one_line(exc.message, 120)}); `agentmm doctor` lists the models it serves"
        )
    if isinstance(exc, openai.APIStatusError):
        return ModelServerError(
            f"the model server at {model_url} answered HTTP {exc.status_code}: {_one_line(exc.message)}"
        )
    return None


# -------------------------------------------------------------------------------- the chat model


class _StreamWatch:
    """What a streamed reply showed so far: whether the server sent usage, how many content
    chunks (a token each on llama-cpp-python's server) and whether it said the reply finished."""

    def __init__(self) -> None:
        self.usage = False
        self.pieces = 0
        self.finished = False

    def see(self, chunk: Any) -> Any:
        self.usage = _note_cache(chunk) or self.usage
        self.pieces += bool(chunk.message.content)
        self.finished = self.finished or _finishes(chunk)
        return chunk

    def check_finished(self, url: str) -> None:
        """A stream that ended without a finish reason was cut short by the server."""
        if not self.finished:
            raise ModelServerError(cut_short(url))


def _usage_chunk(tokenizer: ServerTokenizer, messages: list[Any], pieces: int) -> Any:
    """The closing chunk of a stream the server sent no usage for: counted, and marked so."""
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    prompt = sum(tokenizer.count(message.text) + PER_MESSAGE_OVERHEAD for message in messages)
    usage = {"input_tokens": prompt, "output_tokens": pieces, "total_tokens": prompt + pieces}
    message = AIMessageChunk(content="", usage_metadata=usage, response_metadata={"usage_counted": True})  # type: ignore[arg-type]
    return ChatGenerationChunk(message=message)


def _note_cache(chunk: Any) -> bool:
    """Whether ``chunk`` carries usage; a server's count of cached prompt tokens goes in the
    reply's ``cache`` metadata as ``ChatLlamaCpp`` writes it (``/why`` shows it)."""
    usage = chunk.message.usage_metadata
    if not usage:
        return False
    cached = (usage.get("input_token_details") or {}).get("cache_read")
    if cached is not None:
        chunk.message.response_metadata["cache"] = {
            "prompt_tokens": usage.get("input_tokens", 0),
            "reused_tokens": cached,
        }
    return True


def _finishes(chunk: Any) -> bool:
    """Whether ``chunk`` says why the reply ended (langchain-openai puts it in generation_info;
    ``stream`` moves it to the message's metadata only later)."""
    info = chunk.generation_info or {}
    return bool(info.get("finish_reason") or chunk.message.response_metadata.get("finish_reason"))


@functools.cache
def server_chat_class() -> type[BaseChatModel]:
    """``ChatModelServer``, made on first use so that langchain-openai is imported only then
    (a class, not state: made once, like ``cpu_buffers.buffered_llama_class``)."""
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise SettingsError(
            "model_url needs langchain-openai: pip install 'agentmm[fleet]' (or pip install langchain-openai)"
        ) from exc
    from pydantic import PrivateAttr

    from agentmm.server_tool_calling import ServerToolCalling

    class ChatModelServer(ServerToolCalling, ChatOpenAI):  # type: ignore[misc]
        """``ChatOpenAI`` on an OpenAI-compatible server, counting tokens with the server's
        tokenizer, reporting usage on every stream, calling tools as ``tool_calling`` says and
        failing with ``ModelServerError``."""

        tool_calling: Literal["auto", "constrained", "native"] = "auto"
        _tokenizer: ServerTokenizer = PrivateAttr()
        _format: int | None = PrivateAttr(default=None)  # the RESPONSE_FORMATS entry the server took

        def __init__(self, **data: Any) -> None:
            super().__init__(**data)
            key = self.openai_api_key.get_secret_value() if self.openai_api_key is not None else None
            self._tokenizer = ServerTokenizer(
                str(self.openai_api_base),
                self.model_name,
                None if key == PLACEHOLDER_KEY else key,
                timeout_s=TOKENIZE_TIMEOUT_S,
            )

        @property
        def _llm_type(self) -> str:
            return "openai-compatible-server"

        @property
        def display_name(self) -> str:
            return self.model_name

        @property
        def tokenizer(self) -> ServerTokenizer:
            return self._tokenizer

        def counts_exactly(self) -> bool:
            """Whether ``get_num_tokens`` is the server's own tokenizer (decided on first use)."""
            return self._error_free(lambda: self._tokenizer.exact)

        def get_num_tokens(self, text: str) -> int:
            return self._error_free(lambda: self._tokenizer.count(text))

        def get_token_ids(self, text: str) -> list[int]:
            return self._error_free(lambda: self._tokenizer.token_ids(text))

        def get_num_tokens_from_messages(self, messages: list[Any], tools: Any = None) -> int:
            return sum(self.get_num_tokens(message.text) + PER_MESSAGE_OVERHEAD for message in messages)

        def close(self) -> None:
            self._tokenizer.close()

        def _error_free(self, call: Callable[[], Any]) -> Any:
            try:
                return call()
            except Exception as exc:
                error = server_error(exc, str(self.openai_api_base), self.model_name)
                if error is None or error is exc:
                    raise
                raise error from exc

        # -- requests ----------------------------------------------------------------------

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            if "max_completion_tokens" in payload:  # what every OpenAI-compatible server reads
                payload["max_tokens"] = payload.pop("max_completion_tokens")
            return payload

        def _stream(self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None,
                    **kwargs: Any) -> Iterator[Any]:  # fmt: skip
            if (found := self._tools_of(kwargs)) is not None:
                yield from self._constrained_stream(messages, found, stop, run_manager, kwargs)
                return
            watch = _StreamWatch()
            try:
                for chunk in super()._stream(messages, stop=stop, run_manager=run_manager, **kwargs):
                    yield watch.see(chunk)
            except Exception as exc:
                self._raise_typed(exc)
            watch.check_finished(str(self.openai_api_base))
            if not watch.usage:
                yield _usage_chunk(self._tokenizer, messages, watch.pieces)

        async def _astream(self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None,
                           **kwargs: Any) -> AsyncIterator[Any]:  # fmt: skip
            if (found := await self._atools_of(kwargs)) is not None:
                async for chunk in self._aconstrained_stream(messages, found, stop, run_manager, kwargs):
                    yield chunk
                return
            watch = _StreamWatch()
            try:
                async for chunk in super()._astream(messages, stop=stop, run_manager=run_manager, **kwargs):
                    yield watch.see(chunk)
            except Exception as exc:
                self._raise_typed(exc)
            watch.check_finished(str(self.openai_api_base))
            if not watch.usage:  # counting may ask the server: off the loop
                yield await asyncio.to_thread(
                    self._error_free, lambda: _usage_chunk(self._tokenizer, messages, watch.pieces)
                )

        def _generate(self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None,
                      **kwargs: Any) -> Any:  # fmt: skip
            from langchain_core.language_models.chat_models import generate_from_stream

            if (found := self._tools_of(kwargs)) is not None:
                return generate_from_stream(self._constrained_stream(messages, found, stop, run_manager, kwargs))
            try:
                return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
            except Exception as exc:
                self._raise_typed(exc)

        async def _agenerate(self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None,
                             **kwargs: Any) -> Any:  # fmt: skip
            from langchain_core.language_models.chat_models import agenerate_from_stream

            if (found := await self._atools_of(kwargs)) is not None:
                stream = self._aconstrained_stream(messages, found, stop, run_manager, kwargs)
                return await agenerate_from_stream(stream)
            try:
                return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
            except Exception as exc:
                self._raise_typed(exc)

        def _raise_typed(self, exc: Exception) -> None:
            error = server_error(exc, str(self.openai_api_base), self.model_name)
            if error is None or error is exc:
                raise exc
            raise error from exc

    return ChatModelServer


def server_chat_model(settings: Settings) -> BaseChatModel:
    """The chat model on ``settings.model_url``: ``settings.model`` names it there; sampling
    (temperature, top_p, seed) and the reply's length (max_tokens) as for the local model."""
    if settings.model_url is None:
        raise SettingsError("server_chat_model needs model_url (the model server's http(s)://host:port/v1)")
    return server_chat_class()(
        base_url=settings.model_url, model=settings.model, api_key=settings.model_api_key or PLACEHOLDER_KEY,
        temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens, seed=settings.seed,
        stream_usage=True, use_responses_api=False, max_retries=MAX_RETRIES, timeout=REQUEST_TIMEOUT_S,
        http_async_client=loop_safe_async_client(), tool_calling=settings.tool_calling,
    )  # fmt: skip


def loop_safe_async_client() -> httpx.AsyncClient:
    """An async HTTP client that keeps no connection between requests. langchain-openai's
    default is one client per base URL for the whole process, whose pooled connections belong
    to the event loop that opened them: the next Agent (a new loop) then failed with "Event
    loop is closed". A local connection costs well under a millisecond against a reply's
    hundreds."""
    import httpx

    return httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=REQUEST_TIMEOUT_S)


def chat_model(settings: Settings, *, runtime: Runtime | None = None) -> BaseChatModel:
    """The configured chat model: on the model server when ``model_url`` is set, else the local
    GGUF (``ChatLlamaCpp``, loaded into ``runtime`` on its first call)."""
    if settings.model_url is not None:
        return server_chat_model(settings)
    from agentmm.llm import ChatLlamaCpp

    return ChatLlamaCpp.from_settings(settings, runtime=runtime)


# -------------------------------------------------------------------------------- doctor


@dataclass
class EndpointReport:
    """What ``GET {model_url}/models`` said: reachable, the models served, whether the
    configured one is among them (or would be answered anyway), and the tokenizer found."""

    url: str
    ok: bool
    detail: str
    reachable: bool = False
    models: list[str] | None = None
    model_served: bool = False
    tokenizer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "reachable": self.reachable, "models": self.models,
                "model_served": self.model_served, "tokenizer": self.tokenizer}  # fmt: skip


# ``owned_by`` of the servers that serve their one model under any name asked for.
ANY_NAME_SERVERS = {"me": "llama-cpp-python", "llamacpp": "llama.cpp"}


def endpoint_check(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> EndpointReport:
    """``agentmm doctor``'s check of ``settings.model_url``: one line for each outcome."""
    import httpx

    url = str(settings.model_url)
    key = settings.model_api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url}/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return EndpointReport(url, False, unreachable(url, exc))
    if response.status_code in (401, 403):
        return EndpointReport(url, False, refused_key(url, response.status_code), reachable=True)
    if response.status_code >= 400:
        detail = f"{url}/models answered HTTP {response.status_code}: is model_url the API's base (…/v1)?"
        return EndpointReport(url, False, detail, reachable=True)
    try:
        listed = response.json()["data"]
        models = [str(entry["id"]) for entry in listed]
    except (ValueError, KeyError, TypeError):
        return EndpointReport(url, False, f"{url}/models is not an OpenAI model list", reachable=True)
    tokenizer = ServerTokenizer(url, settings.model, key)
    try:
        endpoint = tokenizer.endpoint
        counting = (
            f"tokens counted by the server ({endpoint.server} /{endpoint.path})"
            if endpoint
            else "tokens approximated (no tokenize endpoint)"
        )
    except ModelServerError as exc:
        endpoint, counting = None, f"tokenize: {exc}"
    finally:
        tokenizer.close()
    shown = ", ".join(models[:5]) + (f" and {len(models) - 5} more" if len(models) > 5 else "")
    report = EndpointReport(url, True, "", reachable=True, models=models,
                            tokenizer=f"{endpoint.server} /{endpoint.path}" if endpoint else None)  # fmt: skip
    owners = {str(entry.get("owned_by")) for entry in listed if isinstance(entry, dict)}
    any_name = len(models) == 1 and next(iter(owners), "") in ANY_NAME_SERVERS
    if settings.model in models:
        report.model_served = True
        report.detail = f"{url} serves {settings.model!r} ({len(models)} model(s): {shown}); {counting}"
    elif any_name:
        report.model_served = True
        server = ANY_NAME_SERVERS[next(iter(owners))]
        report.detail = (f"{url} serves one model, {shown}, under any name ({server}): model {settings.model!r} "
                         f"is answered by it; {counting}")  # fmt: skip
    elif not models:
        report.ok = False
        report.detail = f"{url} is reachable but serves no model"
    else:
        report.ok = False
        report.detail = f"{url} does not serve model {settings.model!r}; it serves {shown}: set model to one of them"
    return report
