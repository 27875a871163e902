"""Tests of chat_app.py: its plain functions, the page driven by Streamlit's AppTest, and one real browser."""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow
import pytest
import torch
from streamlit.testing.v1 import AppTest

import chat_app
import gpt
from data.faq import faq_entry
from data.jsonl import read_jsonl

APP = str(Path(__file__).resolve().parent / "chat_app.py")
CHROMIUM = "/usr/bin/chromium"
FAQ = [
    {"question": "What is a KV cache?", "paraphrases": ["Why is generation with a key-value cache faster?"],
     "answer": "It keeps the keys and values of past tokens so each new token costs one step."},
    {"question": "How many parameters does the default model have?", "answer": "About 0.8 million."},
    {"question": "What does top-p sampling do?", "paraphrases": ["Explain nucleus sampling"],
     "answer": "It samples from the smallest set of tokens whose probability reaches p."},
]


# ----------------------------------------------------------------------------------------------------
# Tiny checkpoints, made once per test session


def instruct_model(tiny_gpt, tokenizer, pairs, steps=60):
    """A tiny GPT that has memorised each instruction's response; as in finetuning, only the response
    and <eos> are targets."""
    prompts = [gpt.instruction_ids(tokenizer, q) for q, _ in pairs]
    answers = [tokenizer.encode(a) + [gpt.EOS_ID] for _, a in pairs]
    width = max(len(p) + len(a) for p, a in zip(prompts, answers))
    x = torch.tensor([p + a + [gpt.PAD_ID] * (width - len(p) - len(a)) for p, a in zip(prompts, answers)])
    y = torch.tensor([[-100] * (len(p) - 1) + a + [-100] * (width - len(p) - len(a) + 1)
                      for p, a in zip(prompts, answers)])
    model = tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    try:
        for _ in range(steps):
            _, loss = model(x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer():
    return gpt.CharTokenizer.from_text("")


@pytest.fixture(scope="session")
def chat_out(tiny_gpt, tmp_path_factory, tokenizer):
    """An out/ folder holding one instruct checkpoint that answers "hi" with "hello"."""
    out = tmp_path_factory.mktemp("chat_out")
    model = instruct_model(tiny_gpt, tokenizer, [("hi", "hello"), ("bye", "see you")])
    gpt.save_checkpoint(out / "chat" / "ckpt.pt", model, tokenizer, kind="instruct", val_loss=0.25)
    return out


@pytest.fixture(scope="session")
def all_kinds_out(tiny_gpt, tmp_path_factory, tokenizer, chat_out):
    """An out/ folder with a checkpoint of each kind, and a pretraining run's metrics."""
    out = tmp_path_factory.mktemp("all_out")
    shutil.copytree(chat_out / "chat", out / "chat")
    gpt.save_checkpoint(out / "base" / "ckpt.pt", tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer, kind="pretrained")
    with open(out / "base" / "metrics.jsonl", "w") as f:
        for i in range(0, 100, 10):
            f.write(json.dumps({"step": i, "train_loss": 4 - i / 50, "lr": 1e-3}) + "\n")
            if i % 50 == 0:
                f.write(json.dumps({"step": i, "val_loss": 4.2 - i / 50}) + "\n")
        f.write(json.dumps({"step": 90, "val_bits_per_char": 1.75}) + "\n")  # as train.py's summary writes it
        f.write('{"step": 100, "train_lo')  # a line still being written
    classifier = gpt.GPTClassifier(tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), 3)
    gpt.save_checkpoint(out / "clf" / "ckpt.pt", classifier, tokenizer, kind="classifier",
                        labels=["law", "poetry", "gospel"])
    return out


@pytest.fixture(scope="session")
def faq_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("faq") / "faq.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in FAQ))
    return path


def run_app(monkeypatch, out_dir, faq=None, checkpoint=None):
    monkeypatch.setenv("GPT_OUT_DIR", str(out_dir))
    monkeypatch.setenv("GPT_FAQ", str(faq or Path(out_dir) / "no_faq.jsonl"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    if checkpoint:
        at.sidebar.selectbox(key="checkpoint").set_value(checkpoint).run()
    assert not at.exception, at.exception
    return at


def ask(at, question):
    at.chat_input(key="chat_input").set_value(question).run()
    assert not at.exception, at.exception
    return at


def tab(at, name):
    return next(t for t in at.tabs if t.label == name)


def chart_rows(block):
    """The data behind the first chart in block, as a list of dicts."""
    [chart, *_] = block.get("vega_lite_chart")
    arrow = chart.proto.data if chart.proto.HasField("data") else chart.proto.datasets[0].data  # Altair / st.*_chart
    return pyarrow.ipc.open_stream(arrow.data).read_all().to_pylist()


# ----------------------------------------------------------------------------------------------------
# Plain functions


def test_faq_matcher_finds_paraphrases_and_ignores_unrelated_questions():
    matcher = chat_app.FaqMatcher([faq_entry(row, "test") for row in FAQ])
    score, entry = matcher.best_match("What is a KV cache?")
    assert score == pytest.approx(1.0) and entry.question == "What is a KV cache?"
    score, entry = matcher.best_match("what's nucleus sampling?")
    assert entry.question == "What does top-p sampling do?" and score >= chat_app.FAQ_THRESHOLD
    score, _ = matcher.best_match("Who wrote the book of Psalms?")
    assert score < chat_app.FAQ_THRESHOLD


def test_char_ngrams_normalise_case_and_punctuation():
    assert chat_app.char_ngrams("Hi, GPT!") == chat_app.char_ngrams("hi   gpt")
    assert chat_app.char_ngrams("ab", sizes=(3,)) == {" ab": 1, "ab ": 1}


def test_listing_only_holds_checkpoints_inside_out(tiny_gpt, tmp_path, tokenizer):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    gpt.save_checkpoint(out / "run" / "ckpt.pt", tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer)
    gpt.save_checkpoint(elsewhere / "secret.pt", tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer)
    (out / "link.pt").symlink_to(elsewhere / "secret.pt")  # a file link leading out
    (out / "linked_run").symlink_to(elsewhere)  # a folder link leading out
    (out / "alias.pt").symlink_to(out / "run" / "ckpt.pt")  # a link that stays inside
    assert chat_app.checkpoint_files(out) == [(out / "run" / "ckpt.pt").resolve()]
    assert chat_app.inside(out, out / ".." / "elsewhere" / "secret.pt") is None
    assert chat_app.inside(out, out / "link.pt") is None


def test_listing_describes_checkpoints_and_reports_unreadable_ones(tiny_gpt, tmp_path, tokenizer):
    gpt.save_checkpoint(tmp_path / "old" / "ckpt.pt", tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer, best_val_loss=1.5)
    gpt.save_checkpoint(tmp_path / "new" / "ckpt.pt", tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer, kind="instruct")
    os.utime(tmp_path / "old" / "ckpt.pt", (1e9, 1e9))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    infos, problems = chat_app.list_checkpoints(tmp_path)
    assert [(i.name, i.kind, i.val_loss) for i in infos] == [("new/ckpt.pt", "instruct", None),
                                                              ("old/ckpt.pt", "pretrained", 1.5)]
    assert len(problems) == 1 and "bad.pt" in problems[0] and "cannot load checkpoint" in problems[0]
    assert "old/ckpt.pt · pretrained · " in infos[1].label() and "val 1.500" in infos[1].label()


def test_the_app_opens_on_the_newest_instruct_runs_ckpt_pt(tiny_gpt, tmp_path, tokenizer):
    def save(name, kind, age):
        gpt.save_checkpoint(tmp_path / name, tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer, kind=kind)
        os.utime(tmp_path / name, (1e9 - age, 1e9 - age))

    save("kjv/ckpt.pt", "pretrained", age=0)  # the newest file, but not a chat model
    save("old_instruct/ckpt.pt", "instruct", age=300)
    save("kjv_instruct/ckpt.pt", "instruct", age=200)
    save("kjv_instruct/last.pt", "instruct", age=100)  # the resume state, written just after ckpt.pt
    infos, _ = chat_app.list_checkpoints(tmp_path)
    assert chat_app.default_checkpoint(infos).name == "kjv_instruct/ckpt.pt"
    infos, _ = chat_app.list_checkpoints(tmp_path / "kjv")  # no instruct checkpoint: the newest of any kind
    assert chat_app.default_checkpoint(infos).name == "ckpt.pt"


def test_loading_refuses_a_path_outside_out(tiny_gpt, tmp_path, tokenizer):
    gpt.save_checkpoint(tmp_path / "elsewhere.pt", tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer)
    (tmp_path / "out").mkdir()
    with pytest.raises(gpt.CheckpointError, match="only loads checkpoints under"):
        chat_app.load_shared_model(tmp_path / "out" / ".." / "elsewhere.pt", tmp_path / "out", torch.device("cpu"))


def test_sessions_generating_at_once_share_one_model_safely(chat_out, tokenizer):
    loaded = chat_app.load_shared_model(chat_out / "chat" / "ckpt.pt", chat_out, torch.device("cpu"))
    answers = {}

    def chat(question):
        ids = gpt.instruction_ids(tokenizer, question)
        answers[question] = tokenizer.decode(list(chat_app.stream_tokens(loaded, ids, 20, stop_ids=(gpt.EOS_ID,),
                                                                          temperature=0.0)))
    threads = [threading.Thread(target=chat, args=(q,)) for q in ("hi", "bye")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert answers == {"hi": "hello<eos>", "bye": "see you<eos>"}
    assert not loaded.lock.locked()


def test_text_pieces_never_split_a_multibyte_character():
    tokenizer = gpt.BPETokenizer([])  # bytes only: "é" is two tokens
    ids = tokenizer.encode("héllo") + [gpt.EOS_ID]
    collected = []
    pieces = list(chat_app.text_pieces(tokenizer, iter(ids), collected))
    assert "".join(pieces) == "héllo" and "\ufffd" not in "".join(pieces)
    assert collected == ids


@pytest.mark.parametrize("rope", [False, True])
def test_attention_maps_are_the_softmax_of_each_layers_own_queries_and_keys(rope):
    """The hooks must see each layer's real input: the maps equal softmax(q k^T / sqrt(hs) + mask), with q
    and k made here by hand from that layer's input and projection weights (rotated with rope)."""
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, rope=rope)).eval()
    for p in model.parameters():
        if p.dim() >= 2:
            torch.nn.init.normal_(p, std=0.3)  # wide weights: attention far from uniform, so mistakes show
    idx = torch.randint(5, 40, (2, 9))
    maps, logits = chat_app.attention_maps(model, idx)
    assert torch.equal(logits, model(idx)[0])
    assert all(not block.attn._forward_pre_hooks for block in model.blocks)  # the hooks are gone again
    cos, sin = gpt.rotary_tables(9, 16)
    x = model.wte(idx) + (0 if rope else model.wpe(torch.arange(9)))
    for block, weights in zip(model.blocks, maps):
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(32, dim=2)
        q, k = (t.view(2, 9, 2, 16).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
        if rope:
            q, k = gpt.rotate(q, cos, sin), gpt.rotate(k, cos, sin)
        scores = q @ k.transpose(-2, -1) / math.sqrt(16) + torch.full((9, 9), float("-inf")).triu(1)
        assert weights.shape == (2, 2, 9, 9)
        assert torch.allclose(weights, scores.softmax(dim=-1), atol=1e-6)
        x = block(x, rotary=(cos, sin) if rope else None)


def test_trace_report_shows_special_tokens_and_speed(tokenizer):
    prompt = gpt.instruction_ids(tokenizer, "hi")
    trace = chat_app.trace_report(tokenizer, prompt, tokenizer.encode("yo") + [gpt.EOS_ID], seconds=0.5)
    assert trace["sequence"] == "<inst>hi<resp>yo<eos>"
    assert (trace["prompt_tokens"], trace["new_tokens"], trace["tokens_per_s"]) == (4, 3, 6.0)


def test_prompt_problem_refuses_empty_and_over_long_prompts():
    assert chat_app.prompt_problem("hello", 5, 10) is None
    assert "empty" in chat_app.prompt_problem("  ", 0, 10)
    assert "11 tokens" in chat_app.prompt_problem("x" * 11, 11, 10)
    assert "characters" in chat_app.prompt_problem("x" * (chat_app.MAX_PROMPT_CHARS + 1), 5, 10)


def test_as_markdown_shows_model_text_literally():
    assert chat_app.as_markdown("*a* $1\nb") == "\\*a\\* \\$1  \nb"


def test_loss_curves_skip_partial_lines_and_keep_each_curve(all_kinds_out):
    lines, skipped = read_jsonl(all_kinds_out / "base" / "metrics.jsonl", skip_bad=True)
    rows = chat_app.loss_curves([record for _, record in lines])
    assert skipped == 1
    assert [r["step"] for r in rows if r["curve"] == "val_loss"] == [0, 50]
    assert len([r for r in rows if r["curve"] == "train_loss"]) == 10
    assert chat_app.loss_curves([{"iter": 3, "val_loss": 1.5}, {"val_loss": 2.0}]) == [
        {"step": 3, "curve": "val_loss", "loss": 1.5}]  # "iter" names the step too; a record without one is left out


# ----------------------------------------------------------------------------------------------------
# The page, driven by AppTest


def test_without_checkpoints_the_page_says_what_to_run(monkeypatch, tmp_path):
    at = run_app(monkeypatch, tmp_path)
    assert at.title[0].value == "No checkpoint yet"
    assert [c.value for c in at.code] == ["python train.py", "python finetune.py --task=instruct"]


def test_chat_streams_the_models_answer_with_its_trace(monkeypatch, chat_out):
    at = ask(run_app(monkeypatch, chat_out), "hi")
    user, assistant = at.chat_message
    assert user.markdown[0].value == "hi"
    assert assistant.markdown[0].value == "hello"
    assert assistant.caption[0].value == "from the model (chat/ckpt.pt)"
    assert assistant.expander[0].code[0].value == "<inst>hi<resp>hello<eos>"
    assert "4 prompt + 6 generated = 10 tokens" in assistant.expander[0].caption[0].value
    at = ask(at, "bye")
    assert [m.markdown[0].value for m in at.chat_message] == ["hi", "hello", "bye", "see you"]


def test_faq_answers_a_known_question_and_stays_out_of_others(monkeypatch, chat_out, faq_file):
    at = ask(run_app(monkeypatch, chat_out, faq=faq_file), "why is generation with a KV cache faster")
    reply = at.chat_message[1]
    assert reply.markdown[0].value == chat_app.as_markdown(FAQ[0]["answer"])
    assert reply.caption[0].value.startswith("from the FAQ (similarity 0.")
    at = ask(at, "hi")
    assert at.chat_message[3].markdown[0].value == "hello"
    assert at.chat_message[3].caption[0].value.startswith("from the model")


def test_faq_toggle_off_leaves_every_answer_to_the_model(monkeypatch, chat_out, faq_file):
    at = run_app(monkeypatch, chat_out, faq=faq_file)
    at.toggle(key="faq_on").set_value(False).run()
    at = ask(at, FAQ[0]["question"])
    assert at.chat_message[1].caption[0].value.startswith("from the model")


def test_over_long_prompt_is_refused(monkeypatch, chat_out):
    at = ask(run_app(monkeypatch, chat_out), "tell me " * 10)
    assert "tokens long, but at most 31 fit here" in at.warning[0].value
    assert len(at.chat_message) == 1  # the question, and no answer


def test_corrupt_checkpoint_shows_an_error_not_a_traceback(monkeypatch, tmp_path, chat_out, tokenizer):
    shutil.copytree(chat_out / "chat", tmp_path / "chat")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ckpt.pt").write_bytes((tmp_path / "chat" / "ckpt.pt").read_bytes()[:1000])
    at = run_app(monkeypatch, tmp_path)
    assert "broken/ckpt.pt: cannot load checkpoint" in at.sidebar.error[0].value
    [option] = at.sidebar.selectbox(key="checkpoint").options
    assert option.startswith("chat/ckpt.pt · instruct · 0.1 MB · val 0.250 · ")


def test_checkpoint_whose_weights_do_not_load_shows_an_error(tiny_gpt, monkeypatch, tmp_path, tokenizer):
    path = tmp_path / "run" / "ckpt.pt"
    gpt.save_checkpoint(path, tiny_gpt(tokenizer.vocab_size, block_size=32, n_layer=1), tokenizer)
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "config": {**ckpt["config"], "n_embd": 64}}, path)  # well-formed, but not these weights
    at = run_app(monkeypatch, tmp_path)
    assert at.error[0].value.startswith(f"Cannot load run/ckpt.pt: {path.resolve()}: config does not match its weights")
    assert not at.tabs


@pytest.mark.parametrize("change, message", [
    ({"kind": "classifier"}, "a classifier needs 'labels'"),
    ({"tokenizer": {"type": "char", "chars": ["a", "a"]}}, "'chars' must be distinct single characters"),
    ({"config": {"vocab_size": 102, "n_embd": 30}}, "n_embd=30 is not divisible by n_head=4"),
])
def test_hand_made_checkpoint_shows_an_error_in_the_sidebar(monkeypatch, tmp_path, chat_out, change, message):
    shutil.copytree(chat_out / "chat", tmp_path / "chat")
    ckpt = torch.load(tmp_path / "chat" / "ckpt.pt", weights_only=True)
    (tmp_path / "bad").mkdir()
    torch.save({**ckpt, **change}, tmp_path / "bad" / "ckpt.pt")
    at = run_app(monkeypatch, tmp_path)
    [error] = at.sidebar.error
    assert "bad/ckpt.pt: " in error.value and message in error.value
    [option] = at.sidebar.selectbox(key="checkpoint").options  # the good checkpoint still opens
    assert option.startswith("chat/ckpt.pt")


def test_generate_streams_a_continuation(monkeypatch, all_kinds_out):
    at = run_app(monkeypatch, all_kinds_out, checkpoint="base/ckpt.pt")
    at.sidebar.slider(key="max_new_tokens").set_value(12).run()
    at.number_input(key="seed").set_value(7).run()
    at.button(key="generate").click().run()
    assert not at.exception
    generated = tab(at, "Generate").markdown[0].value
    model, tokenizer, _ = gpt.load_model(all_kinds_out / "base" / "ckpt.pt")
    expected = model.generate(torch.tensor([tokenizer.encode("In the beginning")]), 12, temperature=0.8, seed=7,
                              stop_ids=(gpt.EOS_ID,))
    text = tokenizer.decode([i for i in expected[0, 16:].tolist() if i != gpt.EOS_ID])
    assert generated == chat_app.as_markdown("In the beginning" + text)
    assert "tokens/s" in tab(at, "Generate").caption[0].value


def test_classify_shows_label_probabilities(monkeypatch, all_kinds_out):
    at = run_app(monkeypatch, all_kinds_out, checkpoint="clf/ckpt.pt")
    at.text_area(key="classify_text").set_value("Blessed are the meek").run()
    table = tab(at, "Classify").dataframe[0].value
    assert list(table["label"]) == ["law", "poetry", "gospel"]
    assert table["probability"].sum() == pytest.approx(1.0)
    assert at.subheader[0].value == table["label"][table["probability"].idxmax()]
    bars = chart_rows(tab(at, "Classify"))
    assert [row["label"] for row in bars] == ["law", "poetry", "gospel"]


def test_inspect_renders_attention_and_next_tokens(monkeypatch, chat_out):
    at = run_app(monkeypatch, chat_out)
    at.text_input(key="inspect_prompt").set_value("hi").run()
    inspect = tab(at, "Inspect")
    cells = chart_rows(inspect)
    assert len(cells) == 4 * 5 // 2  # <inst> h i <resp>: a causal triangle
    assert {c["query"] for c in cells} == {"0 <inst>", "1 h", "2 i", "3 <resp>"}
    model, tokenizer, _ = gpt.load_model(chat_out / "chat" / "ckpt.pt")
    maps, _ = chat_app.attention_maps(model, torch.tensor([gpt.instruction_ids(tokenizer, "hi")]))
    weights = maps[0][0, 0]  # layer 0, head 0: the selectboxes' defaults
    assert [c["weight"] for c in cells] == pytest.approx([float(weights[i, j]) for i in range(4) for j in range(i + 1)])
    table = inspect.dataframe[0].value
    assert table["token"][0] == "'h'" and len(table) == 10  # "hello" starts with h


def test_training_tab_draws_the_runs_loss_curves(monkeypatch, all_kinds_out):
    at = run_app(monkeypatch, all_kinds_out, checkpoint="base/ckpt.pt")
    training = tab(at, "Training")
    curves = chart_rows(training)
    assert {row["curve"] for row in curves} == {"train_loss", "val_loss"} and len(curves) == 12
    assert training.metric[0].value == "1.750"  # bits per character of the whole validation split
    assert training.caption[0].value == ("13 records from base/metrics.jsonl, best val loss 3.2000 "
                                         "(1 unreadable lines skipped)")


# ----------------------------------------------------------------------------------------------------
# A real browser


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url, server, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-2000:]}")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package: chromium)")
def test_browser_chat_round_trip(tmp_path, chat_out):
    from playwright.sync_api import sync_playwright

    port, log = free_port(), tmp_path / "streamlit.log"
    env = {**os.environ, "GPT_OUT_DIR": str(chat_out), "GPT_FAQ": str(tmp_path / "no_faq.jsonl")}
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/_stcore/health", server, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/")
                box = page.get_by_test_id("stChatInputTextArea")
                box.fill("hi", timeout=30_000)
                box.press("Enter")
                answer = page.get_by_test_id("stChatMessage").nth(1)
                answer.get_by_text("from the model (chat/ckpt.pt)").wait_for(timeout=30_000)
                assert answer.get_by_test_id("stMarkdownContainer").first.inner_text() == "hello"
                page.screenshot(path=tmp_path / "chat_app.png")
            finally:
                browser.close()
        assert (tmp_path / "chat_app.png").stat().st_size > 10_000
    finally:
        server.kill()
        server.wait(timeout=10)
