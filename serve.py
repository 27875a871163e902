"""
serve.py: an OpenAI-compatible HTTP API for a gpt.py checkpoint, so your own code can call your model.

  python serve.py --ckpt out/kjv_instruct/ckpt.pt                   # http://127.0.0.1:8000/v1
  python serve.py --ckpt out/kjv/ckpt.pt --port 8001 --quantize=int8

Endpoints:
  GET  /health                 is it up, which model, how many requests wait
  GET  /v1/models              the one model served, by its id (the checkpoint's folder name unless --name)
  POST /v1/completions         continue a text ("prompt"); made for pretrained checkpoints
  POST /v1/chat/completions    answer "messages"; instruct checkpoints answer the last user message
Both POSTs take model, max_tokens, temperature, top_p, stop, seed, n (1 only), stream and stream_options.
`"stream": true` sends the answer as server-sent events in OpenAI's chunk format. Any OpenAI client works:
OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused").

Under load: one worker thread owns the model and generates for one request at a time. Requests wait for it
in a bounded queue (--queue); past the bound they are refused at once with 503 and a Retry-After header,
rather than piling up. A streaming client that goes away stops its generation at the next token.
Bad requests get OpenAI's error JSON ({"error": {"message", "type", "param", "code"}}) with a 4xx status.
"""
import asyncio
import json
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

import gpt
from trainer import ConfigError, check_range, cli, parse_config


@dataclass
class ServeConfig:
    """Serve a gpt.py checkpoint over an OpenAI-compatible HTTP API."""

    ckpt: str = "out/kjv_instruct/ckpt.pt"
    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 listens on every network interface (in a container)
    port: int = 8000
    device: str = "cpu"  # cpu, cuda[:N], mps or auto
    quantize: str = "auto"  # none, int8 (CPU only), or auto: int8 where it is faster (gpt.use_int8)
    max_tokens: int = 256  # the most new tokens a request may ask for, and what it gets if it does not say
    queue: int = 8  # requests that may wait while one generates; more are refused with 503
    threads: int = 0  # torch's threads for generation; 0 keeps torch's default. 1 suits small models on a busy CPU
    name: str = ""  # the model's id in the API; empty: the checkpoint's folder name

    def __post_init__(self):
        check_range("port", self.port, "[0, 65535]")
        check_range("max_tokens", self.max_tokens, "[1, inf)")
        check_range("queue", self.queue, "[1, inf)")
        check_range("threads", self.threads, "[0, inf)")
        if self.quantize not in ("auto", "none", "int8"):
            raise ConfigError(f"--quantize={self.quantize!r}: expected auto, none or int8")


@dataclass
class Served:
    """The loaded model and what the API says about it."""

    model: torch.nn.Module
    tokenizer: object
    kind: str  # pretrained, instruct or classifier (gpt.py's checkpoint kinds)
    name: str
    created: int  # the checkpoint file's time, as /v1/models reports it
    device: torch.device
    max_tokens: int  # the most new tokens a request may ask for


def load(cfg):
    """The checkpoint of cfg, on its device, quantized if asked. Bad settings raise ConfigError or CheckpointError."""
    try:
        device = gpt.pick_device(cfg.device)
        model, tokenizer, ckpt = gpt.load_model(cfg.ckpt, device)
        if gpt.use_int8(cfg.quantize, getattr(model, "gpt", model).config, device):  # a classifier's is its gpt's
            model = gpt.quantize_int8(model)
    except gpt.CheckpointError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    path = Path(cfg.ckpt)
    return Served(model, tokenizer, ckpt["kind"], cfg.name or path.resolve().parent.name, int(path.stat().st_mtime),
                  device, cfg.max_tokens)


# ----------------------------------------------------------------------------------------------------
# Requests: their shape (pydantic checks types and refuses unknown fields), then their meaning


class Strict(BaseModel):
    # strict: "1" is not a number and 5.0 not an int; forbid: a misspelt field is an error, not silently ignored
    model_config = ConfigDict(extra="forbid", strict=True)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(Strict):
    include_usage: bool = False  # a last chunk with the token counts


class Sampling(Strict):
    """What both endpoints take besides their input. None means the default, as OpenAI's clients may send it."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class CompletionRequest(Sampling):
    prompt: str


class ChatRequest(Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens in chat


TOP_FIELDS = sorted(set(CompletionRequest.model_fields) | set(ChatRequest.model_fields))
FIELDS = {*TOP_FIELDS, *Message.model_fields, *StreamOptions.model_fields}  # every name a field path can hold


class ApiError(Exception):
    """A refused request: its HTTP status and OpenAI's error fields."""

    def __init__(self, status, message, param=None, kind="invalid_request_error", code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code, self.headers = \
            status, message, param, kind, code, headers


def error_json(e):
    body = {"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}}
    return JSONResponse(body, e.status, headers=e.headers)


def describe(errors):
    """pydantic's complaints about a body as one ApiError naming the field, e.g. messages[0].role."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first['ctx']['error']}")
    if isinstance(first["input"], bytes):  # FastAPI parses only bodies sent as JSON
        return ApiError(415, "send the body as JSON, with the header Content-Type: application/json")
    if first["loc"] == ("body",):
        return ApiError(400, "the body must be a JSON object, such as {\"prompt\": \"In the beginning\"}")

    def path(loc):  # drops "body" and the names pydantic gives union members, such as "list[str]"
        parts = [p for p in loc[1:] if isinstance(p, int) or p in FIELDS]
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")

    param = path(first["loc"])
    if first["type"] == "extra_forbidden":  # the unknown name ends the path
        param = ".".join(filter(None, [path(first["loc"][:-1]), str(first["loc"][-1])]))
        return ApiError(400, f"unknown field {param!r}; the fields this server takes are {', '.join(TOP_FIELDS)}", param)
    if first["type"] == "missing":
        return ApiError(400, f"{param!r} is required", param)
    reasons = dict.fromkeys(e["msg"] for e in errors if path(e["loc"]) == param)  # a union fails once per member
    return ApiError(400, f"{param}: {' or '.join(reasons)}, not {first['input']!r:.40}", param)


@dataclass
class Settings:
    max_tokens: int
    temperature: float
    top_p: float | None
    stops: list[str]
    seed: int | None


def settings(body, limit):
    """The generation settings of a request, checked against OpenAI's ranges and this server's token limit."""
    if body.n not in (None, 1):
        raise ApiError(400, f"n={body.n}: this server writes one answer per request (n=1)", "n")
    asked = [m for m in (getattr(body, "max_completion_tokens", None), body.max_tokens) if m is not None]
    max_tokens = asked[0] if asked else limit
    if not 1 <= max_tokens <= limit:
        raise ApiError(400, f"max_tokens={max_tokens}: expected 1 to {limit}, this server's limit", "max_tokens")
    temperature = 1.0 if body.temperature is None else body.temperature
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature={temperature}: expected 0 to 2 (0 is greedy)", "temperature")
    top_p = 1.0 if body.top_p is None else body.top_p
    if not 0 < top_p <= 1:
        raise ApiError(400, f"top_p={top_p}: expected above 0 and at most 1", "top_p")
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > 4 or "" in stops:
        raise ApiError(400, f"stop={body.stop!r:.60}: expected up to 4 non-empty strings", "stop")
    if body.seed is not None and not 0 <= body.seed < 2**63:
        raise ApiError(400, f"seed={body.seed}: expected 0 <= seed < 2**63", "seed")
    return Settings(max_tokens, temperature, top_p if top_p < 1 else None, stops, body.seed)


def check_model(served, body):
    """The request names this model (or none), and the model writes text."""
    if body.model not in (None, served.name):
        raise ApiError(404, f"model {body.model!r} is not served here; this server serves {served.name!r}", "model",
                       code="model_not_found")
    if served.kind == "classifier":
        raise ApiError(400, f"{served.name!r} is a classifier checkpoint: it labels text and cannot write it; "
                       "serve a pretrained or instruct checkpoint", "model", code="model_not_supported")


def chat_prompt(served, messages):
    """The ids after which this checkpoint writes its answer to messages, in the format it was finetuned on.
    Prompt formats live here alone, so another (a chat checkpoint's roles) plugs in beside the instruct one."""
    if served.kind != "instruct":
        raise ApiError(400, f"{served.name!r} is a {served.kind} checkpoint: it continues text and has no chat "
                       "format; use /v1/completions", "messages", code="model_not_supported")
    users = [m.content for m in messages if m.role == "user"]
    if not users or not users[-1]:
        raise ApiError(400, "messages: expected a user message with text to answer", "messages")
    # Instruct checkpoints learned single instructions, so the last user message is the one they answer.
    return gpt.instruction_ids(served.tokenizer, users[-1])


def completion_prompt(served, prompt):
    ids = served.tokenizer.encode(prompt)
    if not ids:
        raise ApiError(400, "prompt is empty: the model needs at least one character to continue", "prompt")
    return ids


# ----------------------------------------------------------------------------------------------------
# Generation: one worker thread, a bounded queue of jobs, text streamed back to the event loop


class Job:
    """One request's generation. The worker thread sends events to the request's event loop:
    ("text", piece) any number of times, then ("done", finish_reason, completion_tokens) or ("error", message)."""

    def __init__(self, prompt_ids, settings):
        self.prompt_ids, self.settings = prompt_ids, settings
        self.loop, self.events = asyncio.get_running_loop(), asyncio.Queue()
        self.cancelled = threading.Event()  # set when the client has gone: the worker stops at the next token

    def send(self, *event):  # from the worker thread
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Worker:
    """The one thread that runs the model, taking jobs in turn from a queue that holds at most `size`."""

    def __init__(self, served, size, threads=0):
        self.served, self.jobs, self.threads = served, queue.Queue(maxsize=size), threads
        self.seconds_per_job = 1.0  # a running mean, for Retry-After
        self.tokens_generated = 0  # since the start, for /health (and the test that a gone client stops its job)
        threading.Thread(target=self.run, name="generation", daemon=True).start()

    def submit(self, job):
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            wait = max(1, math.ceil((self.jobs.qsize() + 1) * self.seconds_per_job))  # those waiting, and the one running
            raise ApiError(503, f"the server is busy: {self.jobs.qsize()} requests are waiting; retry in {wait} s",
                           kind="server_busy", headers={"Retry-After": str(wait)}) from None

    def run(self):
        if self.threads:  # set here: each thread keeps its own OpenMP setting
            torch.set_num_threads(self.threads)
        while True:
            job = self.jobs.get()
            if job.cancelled.is_set():  # its client left while it waited
                continue
            began = time.perf_counter()
            try:
                finish, n_tokens = self.generate(job)
                job.send("done", finish, n_tokens)
            except Exception as e:  # a bug must end this request, not the thread every request needs
                job.send("error", f"generation failed: {type(e).__name__}: {e}")
            self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - began)

    def generate(self, job):
        """Stream job's text to it; returns (finish_reason, tokens generated)."""
        s, new = job.settings, []

        def new_ids():  # the answer's ids until <eos>, which ends it without being part of its text
            idx = torch.tensor([job.prompt_ids], device=self.served.device)
            for i in self.served.model.generate_stream(idx, s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                                       stop_ids=(gpt.EOS_ID,), seed=s.seed):
                if job.cancelled.is_set():
                    return
                new.append(i)
                self.tokens_generated += 1
                if i != gpt.EOS_ID:
                    yield i

        pieces = until_stop(gpt.decode_stream(self.served.tokenizer, new_ids()), s.stops)
        while True:
            try:
                job.send("text", next(pieces))
            except StopIteration as end:  # its value: whether a stop string ended the text
                stopped = end.value or (new and new[-1] == gpt.EOS_ID)
                return ("stop" if stopped else "length"), len(new)


def until_stop(pieces, stops):
    """The text pieces up to the first of the stop strings, which is cut off with everything after it; returns
    whether one was found. Text that could be the start of a stop string is held back until it is known not to
    be, so a stream never shows what a stop takes back, and streamed pieces add up to the whole answer."""
    held, hold = "", max(map(len, stops), default=1) - 1
    for piece in pieces:
        held += piece
        found = [i for i in (held.find(stop) for stop in stops) if i >= 0]
        if found:
            if min(found):
                yield held[:min(found)]
            return True
        if len(held) > hold:
            yield held[:len(held) - hold]
            held = held[len(held) - hold:]
    if held:
        yield held
    return False


# ----------------------------------------------------------------------------------------------------
# Responses in OpenAI's shapes


def choice(finish=None, **content):
    """One entry of "choices"; content is text= (completions), message= (chat) or delta= (a chat stream's chunk)."""
    return {"index": 0, **content, "finish_reason": finish, "logprobs": None}


def content(chat, text, chunk):
    """A choice's text as each endpoint names it: a completion's "text", a chat's "message", or its "delta"."""
    if not chat:
        return {"text": text}
    return {"delta": {"content": text}} if chunk else {"message": {"role": "assistant", "content": text}}


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def envelope(served, chat, chunk, request_id, created, **fields):
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    return {"id": request_id, "object": kind, "created": created, "model": served.name, **fields}


async def answer(served, worker, body, prompt_ids, chat):
    """Queue the generation, then send the whole answer, or stream it."""
    s = settings(body, served.max_tokens)
    prompt_ids = gpt.shorten_prompt(prompt_ids, served.model.config.block_size)  # the tail, and the <inst>..<resp>
    job = Job(prompt_ids, s)
    worker.submit(job)
    request_id, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(stream(served, job, chat, request_id, created, include_usage),
                                 media_type="text/event-stream")
    try:
        pieces = []
        while (event := await job.events.get())[0] == "text":
            pieces.append(event[1])
    finally:
        job.cancelled.set()  # a no-op once done; stops the job if this request was cancelled
    if event[0] == "error":
        raise ApiError(500, event[1], kind="server_error")
    _, finish, n_tokens = event
    return envelope(served, chat, False, request_id, created, choices=[choice(finish, **content(chat, "".join(pieces), False))],
                    usage=usage(len(prompt_ids), n_tokens))


async def stream(served, job, chat, request_id, created, include_usage):
    """Server-sent events: one chunk per text piece, a last chunk with the finish reason, [DONE]."""
    def event(**fields):
        return f"data: {json.dumps(envelope(served, chat, True, request_id, created, **fields))}\n\n"

    try:
        if chat:  # OpenAI's first chat chunk names the role
            yield event(choices=[choice(delta={"role": "assistant", "content": ""})])
        while (item := await job.events.get())[0] == "text":
            yield event(choices=[choice(**content(chat, item[1], True))])
        if item[0] == "error":  # the status line has gone out already: the error travels as an event
            yield f"data: {json.dumps({'error': {'message': item[1], 'type': 'server_error'}})}\n\n"
            return
        _, finish, n_tokens = item
        yield event(choices=[choice(finish, **({"delta": {}} if chat else {"text": ""}))])
        if include_usage:
            yield event(choices=[], usage=usage(len(job.prompt_ids), n_tokens))
        yield "data: [DONE]\n\n"
    finally:  # also when the client disconnects and the server cancels this stream
        job.cancelled.set()


# ----------------------------------------------------------------------------------------------------
# The app


def make_app(served, queue_size, threads=0):
    """The FastAPI app serving one model. Every error leaves as OpenAI's error JSON."""
    app = FastAPI(title="gpt.py", docs_url=None, redoc_url=None)
    worker = Worker(served, queue_size, threads)

    app.add_exception_handler(ApiError, lambda request, e: error_json(e))
    app.add_exception_handler(RequestValidationError, lambda request, e: error_json(describe(e.errors())))
    app.add_exception_handler(HTTPException, lambda request, e: error_json(ApiError(
        e.status_code, f"{e.detail}: {request.method} {request.url.path}; this server has GET /health, "
        "GET /v1/models, POST /v1/completions and POST /v1/chat/completions")))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, "kind": served.kind, "waiting": worker.jobs.qsize(),
                "tokens_generated": worker.tokens_generated}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "gpt.py"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        check_model(served, body)
        return await answer(served, worker, body, completion_prompt(served, body.prompt), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        check_model(served, body)
        return await answer(served, worker, body, chat_prompt(served, body.messages), chat=True)

    return app


def main(argv=None):
    cfg = parse_config(ServeConfig, argv)
    served = load(cfg)
    uvicorn.run(make_app(served, cfg.queue, cfg.threads), host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    cli(main)
