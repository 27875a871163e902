"""
chat_app.py: pick a checkpoint, then chat with it, generate, classify, and look inside.

    streamlit run chat_app.py

Reading order:
  1. settings       where checkpoints and the FAQ live, and the limits on prompts
  2. checkpoints    list the files under out/ (and only those), load one for every browser session
  3. the FAQ        character n-gram TF-IDF, by hand, for questions the FAQ already answers
  4. generation     stream text from a model that several sessions share; the raw trace
  5. the page       the sidebar, then one tab per thing a checkpoint can do
Sections 1-4 are plain functions that test_chat_app.py calls without Streamlit.
"""
import itertools
import math
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import altair as alt
import streamlit as st
import torch
import torch.nn.functional as F

import gpt
from data.faq import load_faq
from data.jsonl import read_jsonl

# ----------------------------------------------------------------------------------------------------
# 1. Settings

APP_DIR = Path(__file__).resolve().parent
# Environment variables let tests (or a second app) point at other folders.
OUT_DIR = Path(os.environ.get("GPT_OUT_DIR", APP_DIR / "out"))
FAQ_PATH = Path(os.environ.get("GPT_FAQ", APP_DIR / "data" / "faq.jsonl"))
MAX_PROMPT_CHARS = 1000
INSPECT_MAX_TOKENS = 48  # a heatmap wider than this is no longer readable
# Cosine similarity from which the FAQ answers. A question asked as the FAQ words it scores 1; none
# of the other prompts of the default instruct set (capitals, sums, ...) scored above 0.42.
FAQ_THRESHOLD = 0.5


def default_temperature(kind):
    """Instruct models are tuned to give one right answer, which greedy decoding (0) finds. Free
    text reads better with some randomness."""
    return 0.0 if kind == "instruct" else 0.8


# ----------------------------------------------------------------------------------------------------
# 2. Checkpoints


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path  # the real path, inside the out folder
    name: str  # relative to the out folder, e.g. "kjv/ckpt.pt"
    kind: str
    size_bytes: int
    val_loss: float | None
    modified: float  # seconds since the epoch

    def label(self):
        loss = f" · val {self.val_loss:.3f}" if self.val_loss is not None else ""
        date = datetime.fromtimestamp(self.modified).strftime("%Y-%m-%d %H:%M")
        return f"{self.name} · {self.kind} · {self.size_bytes / 1e6:.1f} MB{loss} · {date}"


def inside(root, path):
    """The real path of path if, with every symlink resolved, it lies under root; otherwise None."""
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real if real != real_root and real.is_relative_to(real_root) else None


def checkpoint_files(out_dir):
    """The real paths of the *.pt files under out_dir. A symlink that leads outside out_dir is
    skipped, and linked folders are not entered, so nothing elsewhere on disk can be listed."""
    root = Path(os.path.realpath(out_dir))
    found = set()
    for folder, _, files in os.walk(root):  # followlinks=False by default
        for name in files:
            real = inside(root, Path(folder) / name) if name.endswith(".pt") else None
            if real is not None and real.is_file():
                found.add(real)
    return sorted(found)


def describe_checkpoint(path, out_dir):
    """A CheckpointInfo for the file at path; gpt.CheckpointError if it does not load."""
    ckpt = gpt.load_checkpoint(path)
    stat = path.stat()
    val_loss = ckpt.get("val_loss", ckpt.get("best_val_loss"))
    return CheckpointInfo(path=path, name=path.relative_to(os.path.realpath(out_dir)).as_posix(),
                          kind=str(ckpt["kind"]), size_bytes=stat.st_size,
                          val_loss=float(val_loss) if isinstance(val_loss, (int, float)) else None,
                          modified=stat.st_mtime)


def list_checkpoints(out_dir, describe=describe_checkpoint):
    """(descriptions of the checkpoints under out_dir that load, newest first; one message for each
    file that does not)."""
    infos, problems = [], []
    for path in checkpoint_files(out_dir):
        try:
            infos.append(describe(path, out_dir))
        except gpt.CheckpointError as e:
            problems.append(str(e))
        except OSError as e:  # removed or unreadable since it was listed
            problems.append(f"{path}: {e.strerror}")
    return sorted(infos, key=lambda info: info.modified, reverse=True), problems


def default_checkpoint(infos):
    """The newest instruct run's ckpt.pt, so that finetuning and then opening the app lands in a chat
    with the model just trained (its last.pt, the resume state, is written a moment later and would
    otherwise be the newest); without an instruct checkpoint, the newest of any kind."""
    instruct = [info for info in infos if info.kind == "instruct"]
    if not instruct:
        return infos[0]
    newest_run = instruct[0].path.parent
    return next((info for info in instruct if info.path == newest_run / "ckpt.pt"), instruct[0])


@dataclass
class LoadedModel:
    model: torch.nn.Module  # GPT, or GPTClassifier for classifier checkpoints
    tokenizer: object
    meta: dict  # the checkpoint without its weights: kind, config, labels, ...
    device: torch.device
    lock: threading.Lock  # one step of one session at a time

    @property
    def language_model(self):
        return self.model.gpt if isinstance(self.model, gpt.GPTClassifier) else self.model


def load_shared_model(path, out_dir, device, quantize="none"):
    """Load a listed checkpoint. The path is checked against out_dir again here, at the boundary,
    so that only a file under out/ is ever read, whatever the caller passes."""
    real = inside(out_dir, path)
    if real is None:
        raise gpt.CheckpointError(f"{path}: refused, the app only loads checkpoints under {out_dir}")
    model, tokenizer, ckpt = gpt.load_model(real, device)
    if gpt.use_int8(quantize, getattr(model, "gpt", model).config, device):
        model = gpt.quantize_int8(model)
    del ckpt["model"]  # the weights now live in the model; keep only the metadata
    return LoadedModel(model, tokenizer, ckpt, device, threading.Lock())


# ----------------------------------------------------------------------------------------------------
# 3. The FAQ: answer known questions exactly (data/faq.py reads the file)


def char_ngrams(text, sizes=(3, 4)):
    """Counts of the overlapping character n-grams of text, lower-cased, with each run of characters
    that are not letters or digits turned into one space. Padding with spaces makes word starts and
    ends n-grams too. Sub-word pieces match across inflections and typos ("train", "training")."""
    padded = " " + " ".join(re.findall(r"[^\W_]+", text.lower())) + " "
    return Counter(padded[i:i + n] for n in sizes for i in range(len(padded) - n + 1))


class FaqMatcher:
    """TF-IDF vectors of character n-grams for every question and paraphrase; a new question gets
    the answer of the one closest to it by cosine similarity."""

    def __init__(self, entries):
        self.entries = entries
        grams = [(entry, char_ngrams(text)) for entry in entries for text in (entry.question, *entry.paraphrases)]
        self.n_docs = len(grams)
        self.doc_freq = Counter(g for _, counts in grams for g in counts)
        self.docs = [(entry, self.vector(counts)) for entry, counts in grams]

    def idf(self, gram):
        # Smoothed: an n-gram in every document still weighs 1, one never seen weighs the most, so a
        # question made of unknown words stays far from every document.
        return math.log((1 + self.n_docs) / (1 + self.doc_freq[gram])) + 1

    def vector(self, counts):
        weights = {g: c * self.idf(g) for g, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {g: w / norm for g, w in weights.items()} if norm else {}

    def best_match(self, question):
        """(cosine similarity between 0 and 1, the FaqEntry) of the closest FAQ question, or (0.0, None)."""
        query = self.vector(char_ngrams(question))
        best = (0.0, None)
        for entry, doc in self.docs:
            score = sum(w * doc.get(g, 0.0) for g, w in query.items())
            if score > best[0]:
                best = (score, entry)
        return best


# ----------------------------------------------------------------------------------------------------
# 4. Generation and its trace


def prompt_problem(text, n_tokens, max_tokens):
    """Why a prompt is refused, or None when it is fine."""
    if not text.strip():
        return "The prompt is empty: type something first."
    if len(text) > MAX_PROMPT_CHARS:
        return f"This prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}. Please shorten it."
    if n_tokens > max_tokens:
        return (f"This prompt is {n_tokens} tokens long, but at most {max_tokens} fit here (the model reads "
                f"a window of its last tokens, and what it writes needs room too). Please shorten it.")
    return None


def stream_tokens(loaded, prompt_ids, max_new_tokens, stop_ids=(), **sampling):
    """Yield new token ids. The shared model's lock is held for one step at a time: sessions that
    generate at once take turns token by token, and a stream abandoned by a closed browser tab
    never keeps the lock."""
    idx = torch.tensor([prompt_ids], device=loaded.device)
    steps = loaded.model.generate_stream(idx, max_new_tokens, stop_ids=stop_ids, **sampling)
    while True:
        with loaded.lock:
            token = next(steps, None)
        if token is None:
            return
        yield token


def text_pieces(tokenizer, tokens, new_ids):
    """The text of a stream of token ids, piece by piece, with every id collected into new_ids for the
    trace. <eos> ends the answer and is not shown; gpt.decode_stream keeps multi-byte characters whole."""
    def collect():
        for token in tokens:
            new_ids.append(token)
            if token != gpt.EOS_ID:
                yield token
    return gpt.decode_stream(tokenizer, collect())


def as_markdown(text):
    """Model text shown literally: markdown punctuation escaped, newlines kept as line breaks."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|$<>~])", r"\\\1", text).replace("\n", "  \n")


def trace_report(tokenizer, prompt_ids, new_ids, seconds):
    """What the model saw and wrote: the exact token sequence with its special tokens, and speed."""
    return {"sequence": tokenizer.decode(prompt_ids + new_ids), "ids": prompt_ids + new_ids,
            "prompt_tokens": len(prompt_ids), "new_tokens": len(new_ids), "latency_s": seconds,
            "tokens_per_s": len(new_ids) / seconds if seconds > 0 else 0.0}


def token_labels(tokenizer, ids):
    """One unique, visible label per token for chart axes: position, then the token with spaces and
    newlines made visible."""
    return [f"{i} {tokenizer.decode([t]).replace(' ', '␣').replace(chr(10), '⏎')}" for i, t in enumerate(ids)]


def attention_maps(model, idx):
    """(one (B, n_head, T, T) tensor of attention weights per layer, logits) for idx (B, T). The model
    returns no weights, so a forward pre-hook on each layer's attention takes the input it is given and
    recomputes the weights from that layer's own queries and keys with gpt.explicit_attention. Call it
    holding the model's lock: while the hooks are on, every forward pass records."""
    maps = []

    def record(attention, args, kwargs):
        q, k, v = attention.qkv(args[0], kwargs.get("rotary"))
        maps.append(gpt.explicit_attention(q, k, v)[1])

    hooks = [block.attn.register_forward_pre_hook(record, with_kwargs=True) for block in model.blocks]
    try:
        with torch.no_grad():
            logits, _ = model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    return maps, logits


def top_next_tokens(logits, tokenizer, k=10):
    """[(token text, probability)] of the k likeliest next tokens, from logits (vocab,)."""
    probs = F.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


def loss_curves(records):
    """Long-format rows {"step", "curve", "loss"}: one per numeric field with "loss" in its name, in
    records that say their step (as "step" or "iter"). Train loss comes at every logged step, val
    loss at every eval, so each curve keeps its own steps."""
    rows = []
    for r in records:
        step = r.get("step", r.get("iter"))
        if not isinstance(step, int):
            continue
        for key, value in r.items():
            if "loss" in key and isinstance(value, (int, float)) and math.isfinite(value):
                rows.append({"step": step, "curve": key, "loss": float(value)})
    return rows


# ----------------------------------------------------------------------------------------------------
# 5. The page


# Shared by every session: one description per file version, one model per file version and device.
@st.cache_resource(max_entries=256, show_spinner=False)
def cached_description(path, out_dir, mtime_ns):  # mtime_ns is only part of the key
    return describe_checkpoint(Path(path), out_dir)


@st.cache_resource(max_entries=4, show_spinner="Loading the checkpoint...")
def cached_model(path, out_dir, mtime_ns, device, quantize="none"):
    return load_shared_model(Path(path), out_dir, torch.device(device), quantize)


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_faq(path, mtime_ns):
    return FaqMatcher(load_faq(path))


def describe_cached(path, out_dir):
    return cached_description(str(path), str(out_dir), path.stat().st_mtime_ns)


def no_checkpoint_page(out_dir):
    st.title("No checkpoint yet")
    st.markdown(f"This app lists the checkpoints under `{out_dir}`, and there are none. "
                "Pretrain a small GPT on the King James Bible (about five minutes on a laptop CPU):")
    st.code("python train.py", language="bash")
    st.markdown("then teach it to follow instructions, so that you can chat with it:")
    st.code("python finetune.py --task=instruct", language="bash")
    st.markdown("and reload this page.")


def sidebar(infos):
    """The chosen CheckpointInfo, device name and sampling settings."""
    st.sidebar.title("gpt.py")
    names = [info.name for info in infos]
    by_name = {info.name: info for info in infos}
    name = st.sidebar.selectbox("Checkpoint (under out/)", names, index=names.index(default_checkpoint(infos).name),
                                format_func=lambda n: by_name[n].label(), key="checkpoint")
    info = by_name[name]
    devices = ["auto", "cpu"] + ["cuda"] * torch.cuda.is_available() + ["mps"] * torch.backends.mps.is_available()
    device = st.sidebar.selectbox("Device", devices, key="device")
    st.sidebar.subheader("Sampling")
    sampling = {
        "temperature": st.sidebar.slider("Temperature", 0.0, 2.0, default_temperature(info.kind), 0.05,
                                         key=f"temperature_{info.kind}", help="0 always takes the likeliest token"),
        "top_k": st.sidebar.number_input("Top-k (0 = off)", 0, 100_000, 0, key="top_k") or None,
        "top_p": st.sidebar.slider("Top-p (1 = off)", 0.05, 1.0, 1.0, 0.05, key="top_p"),
        "seed": st.sidebar.number_input("Seed (empty = random)", 0, 2**31 - 1, None, key="seed"),
    }
    max_new_tokens = st.sidebar.slider("Max new tokens", 1, 1000, 200, key="max_new_tokens")
    return info, device, sampling, max_new_tokens


def render_message(message):
    with st.chat_message(message["role"]):
        st.markdown(as_markdown(message["text"]))
        if "source" in message:
            st.caption(message["source"])
        if "trace" in message:
            with st.expander("Raw trace"):
                render_trace(message["trace"])


def render_trace(trace):
    if "faq_question" in trace:
        st.markdown(f"Matched the FAQ question: *{as_markdown(trace['faq_question'])}*")
        return
    st.code(trace["sequence"], language=None, wrap_lines=True)
    st.caption(f"{trace['prompt_tokens']} prompt + {trace['new_tokens']} generated = "
               f"{trace['prompt_tokens'] + trace['new_tokens']} tokens · latency {trace['latency_s']:.2f} s · "
               f"{trace['tokens_per_s']:.1f} tokens/s")
    st.code(" ".join(map(str, trace["ids"])), language=None, wrap_lines=True)


def faq_controls(faq_path):
    """The FaqMatcher and threshold to use, or (None, None) with the fallback off or unavailable."""
    left, right = st.columns(2)
    enabled = left.toggle("Answer from the FAQ when a question matches", value=True, key="faq_on")
    threshold = right.slider("FAQ similarity threshold", 0.0, 1.0, FAQ_THRESHOLD, 0.01, key="faq_threshold")
    if not enabled:
        return None, None
    if not faq_path.is_file():
        st.caption(f"No FAQ at {faq_path}: every answer comes from the model.")
        return None, None
    try:
        return cached_faq(str(faq_path), faq_path.stat().st_mtime_ns), threshold
    except (ValueError, UnicodeDecodeError) as e:
        st.error(f"The FAQ cannot be used: {e}")
        return None, None


def answer_with_model(loaded, info, question, sampling, max_new_tokens):
    """Stream the model's answer into the page; the message to keep in the history."""
    prompt_ids = gpt.instruction_ids(loaded.tokenizer, question)
    new_ids, start = [], time.perf_counter()
    tokens = stream_tokens(loaded, prompt_ids, max_new_tokens, stop_ids=(gpt.EOS_ID,), **sampling)
    st.write_stream(as_markdown(piece) for piece in text_pieces(loaded.tokenizer, tokens, new_ids))
    trace = trace_report(loaded.tokenizer, prompt_ids, new_ids, time.perf_counter() - start)
    text = loaded.tokenizer.decode([i for i in new_ids if i != gpt.EOS_ID])
    source = f"from the model ({info.name})"
    st.caption(source)
    with st.expander("Raw trace"):
        render_trace(trace)
    return {"role": "assistant", "text": text, "source": source, "trace": trace}


def chat_tab(loaded, info, sampling, max_new_tokens, faq_path):
    if info.kind != "instruct":
        st.info(f"Chat needs an instruct checkpoint, and {info.name} is {info.kind}. "
                "Make one with `python finetune.py --task=instruct`, then pick it in the sidebar.")
        return
    st.caption("Each question is answered on its own: the model was tuned on single instructions, "
               "so earlier turns are not part of its prompt.")
    matcher, threshold = faq_controls(faq_path)
    history = st.session_state.setdefault("chat", [])
    messages = st.container()  # above the input box, where new messages go too
    with messages:
        for message in history:
            render_message(message)
    question = st.chat_input("Ask something", key="chat_input")
    if st.button("Clear chat", key="clear_chat"):
        history.clear()
        st.rerun()
    if not question:
        return
    with messages:
        history.append({"role": "user", "text": question})
        render_message(history[-1])
        # The FAQ goes first: it answers questions of any length the model could not read whole.
        score, entry = matcher.best_match(question[:MAX_PROMPT_CHARS]) if matcher else (0.0, None)
        if entry is not None and score >= threshold:
            reply = {"role": "assistant", "text": entry.answer, "source": f"from the FAQ (similarity {score:.2f})",
                     "trace": {"faq_question": entry.question}}
            render_message(reply)
        else:
            problem = prompt_problem(question, len(gpt.instruction_ids(loaded.tokenizer, question)),
                                     loaded.model.config.block_size - 1)
            if problem:
                st.warning(problem)
                return
            with st.chat_message("assistant"):
                reply = answer_with_model(loaded, info, question, sampling, max_new_tokens)
        history.append(reply)


def generate_tab(loaded, info, sampling, max_new_tokens):
    if info.kind == "classifier":
        st.info(f"{info.name} is a classifier: it labels text rather than writing it. Try the Classify tab.")
        return
    prompt = st.text_area("Prompt", "In the beginning", key="generate_prompt")
    if not st.button("Generate", key="generate"):
        return
    prompt_ids = loaded.tokenizer.encode(prompt)
    problem = prompt_problem(prompt, len(prompt_ids), loaded.model.config.block_size - 1)
    if problem:
        st.warning(problem)
        return
    new_ids, start = [], time.perf_counter()
    tokens = stream_tokens(loaded, prompt_ids, max_new_tokens, stop_ids=(gpt.EOS_ID,), **sampling)
    pieces = text_pieces(loaded.tokenizer, tokens, new_ids)
    with st.container(border=True):  # the prompt, then its continuation as it is written
        st.write_stream(as_markdown(piece) for piece in itertools.chain([prompt], pieces))
    trace = trace_report(loaded.tokenizer, prompt_ids, new_ids, time.perf_counter() - start)
    st.caption(f"{trace['new_tokens']} tokens in {trace['latency_s']:.2f} s · {trace['tokens_per_s']:.1f} tokens/s")


def classify_tab(loaded, info):
    if info.kind != "classifier":
        st.info(f"Classify needs a classifier checkpoint, and {info.name} is {info.kind}. "
                "Make one with `python finetune.py --task=classify`.")
        return
    text = st.text_area("Text to classify", key="classify_text")
    if not text:
        return
    ids = loaded.tokenizer.encode(text)
    problem = prompt_problem(text, len(ids), loaded.model.gpt.config.block_size)
    if problem:
        st.warning(problem)
        return
    with loaded.lock, torch.no_grad():
        logits, _ = loaded.model(torch.tensor([ids], device=loaded.device))
    probs = F.softmax(logits[0].float(), dim=-1).tolist()
    labels = [str(label) for label in loaded.meta["labels"]]
    st.subheader(labels[max(range(len(probs)), key=probs.__getitem__)])
    st.bar_chart({"label": labels, "probability": probs}, x="label", y="probability")
    st.dataframe({"label": labels, "probability": probs}, hide_index=True)


def attention_heatmap(weights, labels):
    """An Altair heatmap of (T, T) attention weights: row = the token looking, column = the token looked at."""
    cells = [{"query": labels[i], "key": labels[j], "weight": float(weights[i, j])}
             for i in range(len(labels)) for j in range(i + 1)]  # causal: nothing right of the diagonal
    return alt.Chart(alt.Data(values=cells)).mark_rect().encode(
        x=alt.X("key:O", sort=labels, title="attends to"),
        y=alt.Y("query:O", sort=labels, title="token"),
        color=alt.Color("weight:Q", scale=alt.Scale(domain=[0, 1], scheme="blues")),
        tooltip=["query:O", "key:O", alt.Tooltip("weight:Q", format=".3f")],
    )


def inspect_tab(loaded, info):
    st.caption("Attention: for each token (row), how much each earlier token (column) contributes to what "
               "one head passes on. Below, what the model expects next.")
    default = "What is a cat?" if info.kind == "instruct" else "In the beginning"
    prompt = st.text_input("A short prompt", default, key="inspect_prompt")
    as_instruction = info.kind == "instruct" and st.checkbox("Wrap as an instruction (<inst> ... <resp>)",
                                                             value=True, key="inspect_as_instruction")
    ids = gpt.instruction_ids(loaded.tokenizer, prompt) if as_instruction else loaded.tokenizer.encode(prompt)
    config = loaded.language_model.config
    problem = prompt_problem(prompt, len(ids), min(INSPECT_MAX_TOKENS, config.block_size))
    if problem:
        st.warning(problem)
        return
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(config.n_layer), key="inspect_layer")
    head = right.selectbox("Head", range(config.n_head), key="inspect_head")
    idx = torch.tensor([ids], device=loaded.device)
    with loaded.lock:
        maps, logits = attention_maps(loaded.language_model, idx)  # n_layer x (1, n_head, T, T)
    st.altair_chart(attention_heatmap(maps[layer][0, head].cpu(), token_labels(loaded.tokenizer, ids)))
    if info.kind == "classifier":
        return  # its language-model head was not what finetuning trained
    st.subheader("Most likely next tokens")
    top = top_next_tokens(logits[0, -1], loaded.tokenizer)
    bar = st.column_config.ProgressColumn(format="%.3f", min_value=0, max_value=1)
    st.dataframe({"token": [repr(t) for t, _ in top], "probability": [p for _, p in top]}, hide_index=True,
                 column_config={"probability": bar})


def training_tab(info):
    metrics = info.path.parent / "metrics.jsonl"
    if not metrics.is_file():
        st.info(f"No metrics.jsonl beside {info.name}: training writes one into its run folder.")
        return
    rows, skipped = read_jsonl(metrics, skip_bad=True)  # training may be halfway through writing a line
    records = [record for _, record in rows]
    rows = loss_curves(records)
    if not rows:
        st.info(f"{metrics} holds no loss values yet.")
        return
    bits = [r["val_bits_per_char"] for r in records if isinstance(r.get("val_bits_per_char"), (int, float))]
    if bits:  # per character, so that runs with different tokenizers compare
        st.metric("Whole validation split, bits per character", f"{bits[-1]:.3f}")
    columns = {key: [r[key] for r in rows] for key in ("step", "curve", "loss")}
    st.line_chart(columns, x="step", y="loss", color="curve")
    val = [r["loss"] for r in rows if r["curve"] == "val_loss"]
    best = f", best val loss {min(val):.4f}" if val else ""
    skipped_note = f" ({skipped} unreadable lines skipped)" if skipped else ""
    st.caption(f"{len(records)} records from {Path(info.name).parent / 'metrics.jsonl'}{best}{skipped_note}")


def main():
    st.set_page_config(page_title="gpt.py", page_icon="💬", layout="wide")
    infos, problems = list_checkpoints(OUT_DIR, describe_cached)
    for problem in problems:
        st.sidebar.error(problem)
    if not infos:
        no_checkpoint_page(OUT_DIR)
        return
    info, device_name, sampling, max_new_tokens = sidebar(infos)
    quantize = st.sidebar.selectbox("Int8 (CPU)", ("auto", "none", "int8"), key="quantize", help="Matrix products "
                                    "in int8. auto: where it is faster, on the CPU for models 384 or more wide")
    try:
        device = gpt.pick_device(device_name)
        loaded = cached_model(str(info.path), str(OUT_DIR), info.path.stat().st_mtime_ns, str(device), quantize)
    except (ValueError, FileNotFoundError) as e:  # gpt.CheckpointError is a ValueError
        st.error(f"Cannot load {info.name}: {e}")
        return
    config = loaded.language_model.config
    st.sidebar.caption(f"{loaded.language_model.num_params() / 1e6:.2f}M parameters · {config.n_layer} layers · "
                       f"{config.n_head} heads · {config.n_embd} wide · context {config.block_size} · on {device}"
                       + " · int8" * gpt.use_int8(quantize, config, device))
    chat, generate, classify, look_inside, training = st.tabs(["Chat", "Generate", "Classify", "Inspect", "Training"])
    with chat:
        chat_tab(loaded, info, sampling, max_new_tokens, FAQ_PATH)
    with generate:
        generate_tab(loaded, info, sampling, max_new_tokens)
    with classify:
        classify_tab(loaded, info)
    with look_inside:
        inspect_tab(loaded, info)
    with training:
        training_tab(info)


if __name__ == "__main__":
    main()
