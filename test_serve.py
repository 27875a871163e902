"""Tests of serve.py, on loopback with real clients (the openai package, curl, httpx) against real server
processes, and of int8 inference (gpt.quantize_int8). Tiny random models, so answers are gibberish: what
is checked is the protocol, the errors, the load behaviour, and that int8 stays close to float32."""
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

import gpt
import serve
from trainer import cli

HERE = Path(__file__).resolve().parent
LIMIT = 20_000  # the test servers' --max_tokens: a stream that long outlasts any test that cuts it short


# ----------------------------------------------------------------------------------------------------
# Tiny checkpoints and real server processes


@pytest.fixture(scope="module")
def checkpoints(tiny_gpt, tmp_path_factory):
    """{kind: path} of one tiny random model saved as each kind (its folder name is the model's API id)."""
    root = tmp_path_factory.mktemp("serve")
    tokenizer = gpt.CharTokenizer.from_text("")
    model = tiny_gpt(tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    paths = {}
    for kind in ("pretrained", "instruct"):
        paths[kind] = root / kind / "ckpt.pt"
        gpt.save_checkpoint(paths[kind], model, tokenizer, kind=kind)
    paths["classifier"] = root / "classifier" / "ckpt.pt"
    gpt.save_checkpoint(paths["classifier"], gpt.GPTClassifier(model, 2), tokenizer, kind="classifier",
                        labels=["no", "yes"])
    return paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_servers(flags_by_ckpt, tmp_path):
    """serve.py processes, one per checkpoint, each on a free loopback port, started together (each spends
    seconds importing torch and FastAPI) and up once /health answers; their base URLs, in order."""
    processes, logs, urls = [], [], []
    for ckpt, flags in flags_by_ckpt.items():
        port, log = free_port(), tmp_path / f"server-{ckpt.parent.name}.log"
        with open(log, "w") as out:
            processes.append(subprocess.Popen([sys.executable, "serve.py", f"--ckpt={ckpt}", f"--port={port}",
                                               "--threads=1", f"--max_tokens={LIMIT}", *flags], cwd=HERE, stdout=out,
                                              stderr=subprocess.STDOUT))
        logs.append(log)
        urls.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120  # generous: the machine may be busy
        for process, log, url in zip(processes, logs, urls):
            while True:
                assert process.poll() is None, f"serve.py exited with {process.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"serve.py did not answer /health in time:\n{log.read_text()}"
                try:
                    if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def servers(checkpoints, tmp_path_factory):
    """The instruct checkpoint's server (queue bound 2) and the pretrained one's."""
    flags = {checkpoints["instruct"]: ["--queue=2"], checkpoints["pretrained"]: []}
    with running_servers(flags, tmp_path_factory.mktemp("logs")) as urls:
        yield urls


@pytest.fixture(scope="module")
def instruct_url(servers):
    return servers[0]


@pytest.fixture(scope="module")
def pretrained_url(servers):
    return servers[1]


def client(url):
    """The official OpenAI client, pointed at our server; the key is a placeholder, nothing leaves the machine."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def post(url, path, body, **options):
    return httpx.post(f"{url}{path}", json=body, timeout=60, trust_env=False, **options)


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Spell cat."}]


# ----------------------------------------------------------------------------------------------------
# The openai package, curl, and the shapes of answers


def test_openai_client_chats_with_an_instruct_checkpoint(instruct_url, checkpoints):
    with client(instruct_url) as c:
        assert [m.id for m in c.models.list()] == ["instruct"]
        answer = c.chat.completions.create(model="instruct", messages=CHAT, max_tokens=12, seed=1)
    tokenizer = gpt.CharTokenizer.from_text("")
    prompt_tokens = len(gpt.instruction_ids(tokenizer, "Spell cat."))  # the last user message is the instruction
    assert answer.object == "chat.completion" and answer.model == "instruct"
    assert answer.choices[0].message.role == "assistant" and isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens == prompt_tokens and 1 <= answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == prompt_tokens + answer.usage.completion_tokens


def test_streamed_chat_adds_up_to_the_answer_for_the_same_seed(instruct_url):
    settings = dict(model="instruct", messages=CHAT, max_tokens=40, temperature=1.0, seed=7)
    with client(instruct_url) as c:
        whole = c.chat.completions.create(**settings)
        chunks = list(c.chat.completions.create(**settings, stream=True, stream_options={"include_usage": True}))
        again = c.chat.completions.create(**settings)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content == again.choices[0].message.content and text
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()  # include_usage: a last chunk of counts


def test_openai_client_completes_text_with_a_pretrained_checkpoint(pretrained_url):
    settings = dict(model="pretrained", prompt="In the beginning", max_tokens=30, temperature=0.8, seed=3)
    with client(pretrained_url) as c:
        whole = c.completions.create(**settings)
        streamed = "".join(chunk.choices[0].text for chunk in c.completions.create(**settings, stream=True))
    assert whole.object == "text_completion" and whole.usage.prompt_tokens == len("In the beginning")
    assert streamed == whole.choices[0].text


def test_a_stop_string_cuts_the_text_before_it_streamed_or_not(pretrained_url):
    greedy = dict(prompt="abc", max_tokens=40, temperature=0)
    full = post(pretrained_url, "/v1/completions", greedy).json()["choices"][0]["text"]
    stop = full[10:12]
    cut = full[:full.find(stop)]
    with client(pretrained_url) as c:
        answer = c.completions.create(model="pretrained", **greedy, stop=[stop, "never here"])
        streamed = "".join(chunk.choices[0].text for chunk in
                           c.completions.create(model="pretrained", **greedy, stop=stop, stream=True))
    assert (answer.choices[0].text, answer.choices[0].finish_reason) == (cut, "stop")
    assert streamed == cut


def test_curl_gets_answers_and_a_stream(instruct_url):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed here")
    body = json.dumps({"messages": CHAT, "max_tokens": 5, "seed": 2})

    def curl(*args):
        done = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "60", *args], capture_output=True,
                              text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert json.loads(curl(f"{instruct_url}/health"))["status"] == "ok"
    plain = json.loads(curl(f"{instruct_url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", body))
    events = curl("-N", f"{instruct_url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
                  body[:-1] + ', "stream": true}').split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == plain["choices"][0]["message"]["content"]


# ----------------------------------------------------------------------------------------------------
# Bad requests: one OpenAI error JSON each, with a 4xx status


@pytest.mark.parametrize("path, body, status, param, message", [
    ("/v1/chat/completions", b'{"messages": [', 400, None, "not valid JSON"),
    ("/v1/chat/completions", [1, 2], 400, None, "must be a JSON object"),
    ("/v1/chat/completions", {"messages": CHAT, "temprature": 0.5}, 400, "temprature", "unknown field 'temprature'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi", "name": "x"}]}, 400, "messages[0].name",
     "unknown field"),
    ("/v1/chat/completions", {"messages": CHAT, "temperature": "hot"}, 400, "temperature", "valid number"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2.5}, 400, "max_tokens", "valid integer"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", "'user'"),
    ("/v1/chat/completions", {"messages": CHAT, "stop": 5}, 400, "stop", "valid string"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": LIMIT + 1}, 400, "max_tokens", "this server's limit"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 0}, 400, "max_tokens", "expected 1 to"),
    ("/v1/chat/completions", {"messages": CHAT, "temperature": 2.5}, 400, "temperature", "expected 0 to 2"),
    ("/v1/chat/completions", {"messages": CHAT, "top_p": 0}, 400, "top_p", "above 0"),
    ("/v1/chat/completions", {"messages": CHAT, "n": 2}, 400, "n", "n=1"),
    ("/v1/chat/completions", {"messages": CHAT, "seed": -1}, 400, "seed", "seed"),
    ("/v1/chat/completions", {"messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "up to 4"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", "a user message"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, 400, "messages", "a user message"),
    ("/v1/chat/completions", {"max_tokens": 5}, 400, "messages", "'messages' is required"),
    ("/v1/chat/completions", {"messages": CHAT, "model": "gpt-4o"}, 404, "model", "not served here"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt", "prompt is empty"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt", "valid string"),
    ("/v1/nothing", {"prompt": "a"}, 404, None, "Not Found"),
])
def test_bad_requests_get_one_openai_error_with_a_4xx_status(instruct_url, path, body, status, param, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{instruct_url}{path}", content=content, headers={"Content-Type": "application/json"},
                          timeout=60, trust_env=False)
    error = response.json()["error"]
    assert (response.status_code, error["param"], error["type"]) == (status, param, "invalid_request_error")
    assert message in error["message"]


def test_a_body_that_is_not_sent_as_json_is_refused_with_415(instruct_url):
    response = httpx.post(f"{instruct_url}/v1/completions", content=b'{"prompt": "a"}', timeout=60, trust_env=False,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "Content-Type: application/json" in response.json()["error"]["message"]


def test_a_pretrained_checkpoint_refuses_chat_and_points_to_completions(pretrained_url):
    response = post(pretrained_url, "/v1/chat/completions", {"messages": CHAT})
    assert response.status_code == 400 and "use /v1/completions" in response.json()["error"]["message"]


def test_a_classifier_checkpoint_refuses_to_write(checkpoints):
    served = serve.load(serve.ServeConfig(ckpt=str(checkpoints["classifier"])))
    with TestClient(serve.make_app(served, queue_size=1)) as app:
        for path, body in (("/v1/completions", {"prompt": "a"}), ("/v1/chat/completions", {"messages": CHAT})):
            response = app.post(path, json=body)
            assert response.status_code == 400 and "is a classifier" in response.json()["error"]["message"]


def test_bad_server_settings_end_in_one_line_and_exit_2(checkpoints, tmp_path, capsys):
    for flags, message in ((["--queue=0"], "--queue must be at least 1"),
                           (["--quantize=int4"], "expected auto, none or int8"),
                           ([f"--ckpt={tmp_path / 'none.pt'}"], "no such checkpoint file"),
                           (["--device=tpu"], "unknown device 'tpu'")):
        with pytest.raises(SystemExit) as exit:
            cli(serve.main, [f"--ckpt={checkpoints['instruct']}", *flags])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and message in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------------------------------
# Load: one generation at a time, a bounded queue, refusals with Retry-After, clients that leave


def tokens_generated(url):
    return httpx.get(f"{url}/health", timeout=10, trust_env=False).json()["tokens_generated"]


@contextmanager
def long_stream(url):
    """A greedy stream that would run for LIMIT tokens, open (and generating) until the block ends."""
    body = {"prompt": "a", "max_tokens": LIMIT, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60, trust_env=False) as response:
        events = (line for line in response.iter_lines() if line)
        for _ in range(10):  # some text has arrived: the worker is busy with this stream
            assert '"finish_reason": null' in next(events)
        yield


def test_a_client_that_disconnects_stops_its_generation(instruct_url):
    start = tokens_generated(instruct_url)
    with long_stream(instruct_url):
        pass
    deadline, counts = time.monotonic() + 30, [tokens_generated(instruct_url)]
    while len(counts) < 2 or counts[-1] != counts[-2]:  # settled: no token made in 0.5 s
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)
        counts.append(tokens_generated(instruct_url))
    assert counts[-1] - start < LIMIT / 4, counts  # stopped long before its max_tokens


def test_requests_past_the_queue_bound_get_503_with_retry_after(instruct_url):
    results = []

    def wait_in_queue():
        results.append(post(instruct_url, "/v1/completions", {"prompt": "a", "max_tokens": 2}).status_code)

    with long_stream(instruct_url):
        waiting = [threading.Thread(target=wait_in_queue) for _ in range(2)]  # the server's --queue=2
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{instruct_url}/health", timeout=10, trust_env=False).json()["waiting"] < 2:
            assert time.monotonic() < deadline, "the two requests never queued"
            time.sleep(0.05)
        refused = post(instruct_url, "/v1/completions", {"prompt": "a", "max_tokens": 2})
    for thread in waiting:
        thread.join(timeout=60)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "server_busy"
    assert results == [200, 200]  # the queued ones ran once the stream's client had gone


def test_eight_clients_five_requests_each_all_answered_or_refused(instruct_url):
    """8 concurrent clients x 5 requests against --queue=2: each gets 200, or 503 with Retry-After; no other
    status, no lost request, no hung connection (a client timeout would fail the test). Prints p50/p95."""
    outcomes, lock = [], threading.Lock()

    def one_client(seed):
        with httpx.Client(base_url=instruct_url, timeout=60, trust_env=False) as c:
            for i in range(5):
                began = time.perf_counter()
                try:
                    r = c.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 8, "seed": seed * 10 + i})
                    outcome = (r.status_code, time.perf_counter() - began, r.headers.get("Retry-After"), r.json())
                except httpx.HTTPError as e:  # a timeout: a hung connection
                    outcome = (type(e).__name__, time.perf_counter() - began, None, None)
                with lock:
                    outcomes.append(outcome)

    clients = [threading.Thread(target=one_client, args=(n,)) for n in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=300)
    assert len(outcomes) == 40, f"{40 - len(outcomes)} requests never came back"
    assert {status for status, *_ in outcomes} <= {200, 503}, [o[:2] for o in outcomes]
    answered = sorted(seconds for status, seconds, *_ in outcomes if status == 200)
    assert answered and all(body["choices"][0]["message"]["content"] is not None
                            for status, _, _, body in outcomes if status == 200)
    assert all(int(retry) >= 1 for status, _, retry, _ in outcomes if status == 503)
    p50, p95 = (answered[math.ceil(q * len(answered)) - 1] for q in (0.5, 0.95))  # nearest rank
    print(f"\nload: {len(answered)} answered, {40 - len(answered)} refused with 503; "
          f"latency of answered requests p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")


# ----------------------------------------------------------------------------------------------------
# Prompts and stop strings


def test_until_stop_holds_back_what_could_start_a_stop_string():
    pieces = list(serve.until_stop(iter(["Hel", "lo <", "en", "d> and more"]), ["<end>"]))
    assert "".join(pieces) == "Hello " and all("<" not in piece for piece in pieces)
    assert list(serve.until_stop(iter(["a", "b", "c"]), [])) == ["a", "b", "c"]  # no stops: nothing held back
    assert "".join(serve.until_stop(iter(["x <e", "n"]), ["<end>"])) == "x <en"  # the end shows what was held


def test_a_long_chat_message_is_cut_to_the_context_keeping_its_markers(instruct_url):
    answer = post(instruct_url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 100}],
                                                         "max_tokens": 3}).json()
    assert answer["usage"]["prompt_tokens"] == 63  # block_size 64 less the one new token that must fit


# ----------------------------------------------------------------------------------------------------
# int8 inference


def test_int8_replaces_every_linear_layer_and_stays_close_to_float32(tiny_gpt):
    model = tiny_gpt(64, block_size=32, n_layer=2, n_head=2, n_embd=64)
    idx = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(idx)[0]
        after = gpt.quantize_int8(model)(idx)[0]
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert model.wte.weight.dtype == torch.float32  # embeddings stay float
    error = (after - before).norm() / before.norm()
    assert 0 < error < 0.05, error  # changed (quantized), by a few percent at most (2% measured)
    assert (after.argmax(-1) == before.argmax(-1)).float().mean() >= 0.9  # the same likeliest next tokens


@pytest.mark.parametrize("quantize, n_embd, device, expected", [
    ("auto", 384, "cpu", True), ("auto", 768, "cpu", True),  # wide: int8 measured faster
    ("auto", 128, "cpu", False), ("auto", 384, "cuda", False),  # narrow, or not on the CPU: float32
    ("none", 768, "cpu", False), ("int8", 128, "cpu", True),  # what was asked for
])
def test_auto_takes_int8_on_the_cpu_for_wide_models_only(quantize, n_embd, device, expected):
    config = gpt.GPTConfig(n_embd=n_embd, n_head=4)
    assert gpt.use_int8(quantize, config, torch.device(device)) is expected


def test_int8_refuses_a_model_that_is_not_on_the_cpu(tiny_gpt):
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        gpt.quantize_int8(tiny_gpt().to("meta"))


def test_gpt_cli_and_serve_load_int8(checkpoints, capsys):
    gpt.main(["--ckpt", str(checkpoints["pretrained"]), "--prompt", "ab", "--max_new_tokens=5", "--temperature=0",
              "--device=cpu", "--quantize=int8"])
    assert capsys.readouterr().out.startswith("ab")
    served = serve.load(serve.ServeConfig(ckpt=str(checkpoints["instruct"]), quantize="int8"))
    assert not any(type(m) is torch.nn.Linear for m in served.model.modules())
    with TestClient(serve.make_app(served, queue_size=1)) as app:
        answer = app.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 4}).json()
    assert answer["usage"]["completion_tokens"] >= 1


def test_the_app_chats_in_int8_when_asked(checkpoints, tmp_path, monkeypatch):
    (tmp_path / "out" / "instruct").mkdir(parents=True)
    shutil.copy(checkpoints["instruct"], tmp_path / "out" / "instruct" / "ckpt.pt")
    monkeypatch.setenv("GPT_OUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("GPT_FAQ", str(tmp_path / "no_faq.jsonl"))
    at = AppTest.from_file(str(HERE / "chat_app.py"), default_timeout=30).run()
    at.sidebar.selectbox(key="quantize").set_value("int8").run()
    at.chat_input(key="chat_input").set_value("Spell cat.").run()
    assert not at.exception, at.exception
    assert any(caption.value.endswith("on cpu · int8") for caption in at.sidebar.caption)
    assert len(at.chat_message) == 2  # the question and the model's answer


# ----------------------------------------------------------------------------------------------------
# The container image: built and run only where an engine and the base image are already here


def container_engine():
    """(engine, why not): docker or podman if one is installed, has the Dockerfile's base image locally (the
    build must not depend on reaching an image registry), and can run a container from it."""
    base = next(line.split()[1] for line in (HERE / "Dockerfile").read_text().splitlines() if line.startswith("FROM"))
    for engine in ("docker", "podman"):
        if shutil.which(engine) and subprocess.run([engine, "image", "inspect", base], capture_output=True,
                                                   timeout=60).returncode == 0:
            tried = subprocess.run([engine, "run", "--rm", base, "true"], capture_output=True, text=True, timeout=120)
            if tried.returncode == 0:
                return engine, None
            return None, f"{engine} has {base} but cannot run a container here: {tried.stderr.strip()[-200:]}"
    return None, f"no container engine here with the base image {base} already pulled (docker or podman)"


def wait_for(url, seconds=180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def test_the_image_serves_the_app_on_8501_and_the_api_on_8000(checkpoints):
    engine, why_not = container_engine()
    if engine is None:
        pytest.skip(why_not)
    subprocess.run([engine, "build", "-t", "gpt-py-test", str(HERE)], check=True, capture_output=True, timeout=1800)
    app_port, api_port, containers = free_port(), free_port(), []
    try:
        for ports, command in ((f"{app_port}:8501", []), (f"{api_port}:8000", [
                "python", "serve.py", "--host=0.0.0.0", "--ckpt=out/instruct/ckpt.pt"])):
            started = subprocess.run([engine, "run", "-d", "--rm", "-p", f"127.0.0.1:{ports}", "-v",
                                      f"{checkpoints['instruct'].parent}:/app/out/instruct:ro", "gpt-py-test", *command],
                                     check=True, capture_output=True, text=True, timeout=120)
            containers.append(started.stdout.strip())
        wait_for(f"http://127.0.0.1:{app_port}/_stcore/health")  # streamlit's own health check
        wait_for(f"http://127.0.0.1:{api_port}/health")
        answer = post(f"http://127.0.0.1:{api_port}", "/v1/chat/completions", {"messages": CHAT, "max_tokens": 3})
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
    finally:
        for container in containers:
            subprocess.run([engine, "rm", "-f", container], capture_output=True, timeout=60)
