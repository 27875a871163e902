"""Tests for GPT-2 in gpt.py (section 7: load_gpt2, GPT2Tokenizer), LoRA (section 4) and both in finetune.py.

Parity is checked against Hugging Face transformers, a test-only dependency (requirements-test.txt), on a small
random GPT-2 that transformers builds and saves here, with a tokenizer trained here by the tokenizers library on
our own text: nothing is downloaded."""
import contextlib
import json
import random
import re
import shutil
import sys
import unicodedata

import pytest
import torch

import chat_app
import finetune
import gpt

# Without the test-only packages these tests are skipped, so that `pip install -r requirements.txt` still runs
# the rest; CI installs them.
for package in ("regex", "tokenizers", "transformers"):
    pytest.importorskip(package, reason="a test-only dependency: pip install -r requirements-test.txt")
import regex  # noqa: E402
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, GPT2TokenizerFast  # noqa: E402
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode  # noqa: E402

N = len(gpt.SPECIAL_TOKENS)  # our id = GPT-2's id + N

# GPT-2's pattern as its reference tokenizer writes it, for the regex module (which has \p{...})
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# What the test tokenizer learns from: our own sentences, in many scripts, with emoji, digits, contractions and
# runs of spaces, tabs and newlines, so that it learns merges for all of them.
TRAINING_TEXT = """The model reads text as tokens; it doesn't see letters. We'll train it, and they've said it's fine.
Numbers: 7, 42, 1234567, 3.14159, 2026-11-25, ½ and ² and Ⅻ and ٣٤٥ and ४२.
Français : déjà vu, naïve, garçon. Deutsch: Grüße, Straße. Español: ¿qué tal? ¡Olé!
Русский: привет, как дела? Ελληνικά: καλημέρα. 中文：你好，世界。日本語：こんにちは、世界。한국어: 안녕하세요.
हिन्दी: नमस्ते दुनिया। العربية: مرحبا بالعالم. עברית: שלום עולם. ไทย: สวัสดีชาวโลก.
Emoji: 👍 👍🏽 👨‍👩‍👧 🇫🇷 🎉🎉 ❤️ 🙂
Spaces:   three,    four,	tab,		two tabs, trailing   
newlines


and blank lines
"""

# What the tokenizers are compared on: partly new words, so that unmerged bytes and rare pieces show up too.
TEST_TEXT = """Hello, World! I'm sure you're right; she'd say we'd've... DON'T SHOUT, it'S odd.
Prices: $1,299.99 (was 1499) — 50% off!! 2^10=1024; x₁ + x² = ⅔; ⑦ and Ⅻ and ٣٤٥٦ and ४२०.
Zürich, Kraków, Ærøskøbing, İstanbul; ﬁne ligatures; e\u0301 combining accent.
Юникод, Ωμέγα, 漢字かなカナ, 조선말, देवनागरी लिपि, اللغة العربية, ภาษาไทย.
Emoji: 🤖🧠 👩🏾‍💻 🏳️‍🌈 🇯🇵🇰🇷 1️⃣ ✨
Whitespace:  two   three    four\t\ttabs \n\n\n three newlines\r\n crlf \u00a0nbsp \u3000ideographic \x1c sep
 leading space and trailing spaces   """


def hf_bpe_files(folder):
    """vocab.json and merges.txt of a byte-level BPE trained on TRAINING_TEXT by the tokenizers library."""
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator([TRAINING_TEXT], vocab_size=500, min_frequency=1, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    trainer.save_model(str(folder))
    return folder / "vocab.json", folder / "merges.txt"


def random_gpt2(vocab_size, seed=0):
    """A small GPT2LMHeadModel with every weight drawn wide (norm gains about 1): at GPT-2's 0.02 a fresh model is
    almost uniform, and a mistake (a missing transpose, the exact GELU) would move the logits by less than 1e-4."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(mean=1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0, std=0.3)
    return model


@pytest.fixture(scope="module")
def gpt2_folders(tmp_path_factory):
    """(the transformers model, {"safetensors": folder, "bin": folder}): the same random GPT-2 saved by
    save_pretrained both ways, each folder with the test tokenizer's vocab.json and merges.txt."""
    root = tmp_path_factory.mktemp("gpt2")
    vocab_file, merges_file = hf_bpe_files(root)
    model = random_gpt2(len(json.loads(vocab_file.read_text(encoding="utf-8"))))
    folders = {}
    for kind in ("safetensors", "bin"):
        folders[kind] = root / kind
        model.save_pretrained(folders[kind], safe_serialization=kind == "safetensors")
        for f in (vocab_file, merges_file):
            shutil.copy(f, folders[kind])
    return model, folders


# ----------------------------------------------------------------------------------------------------
# The tokenizer: byte characters, character classes, pre-tokenizer, then whole encodings


def test_byte_characters_are_gpt2s():
    assert gpt.gpt2_byte_chars() == [bytes_to_unicode()[b] for b in range(256)]


@pytest.fixture(scope="module")
def assigned():
    """Every code point that Python's unicodedata assigns: the regex module may know a newer Unicode."""
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) not in ("Cn", "Cs"))


def test_letter_number_and_space_classes_equal_the_unicode_properties_gpt2_uses(assigned):
    classes = gpt.unicode_classes()
    for ours, theirs in [(classes["L"], r"\p{L}"), (classes["N"], r"\p{N}"), (gpt.WHITE_SPACE, r"\s")]:
        assert set(re.findall(f"[{ours}]", assigned)) == set(regex.findall(theirs, assigned)), theirs


def test_pre_tokenizer_splits_like_gpt2s_pattern(assigned):
    rng = random.Random(0)
    pieces = list(" \t\n\r\x1c\xa0'sdtlmvreST0123.!") + rng.choices(assigned, k=3000)
    for text in [TEST_TEXT, TRAINING_TEXT] + ["".join(rng.choices(pieces, k=40)) for _ in range(300)]:
        assert gpt.gpt2_split().findall(text) == regex.findall(GPT2_PATTERN, text), repr(text)


def test_tokenizer_matches_transformers_on_multilingual_emoji_and_whitespace_text(tmp_path):
    vocab_file, merges_file = hf_bpe_files(tmp_path)
    ours = gpt.GPT2Tokenizer(json.loads(vocab_file.read_text(encoding="utf-8")), gpt.read_gpt2_merges(merges_file))
    fast = GPT2TokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file))
    slow = GPT2Tokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file))
    for text in (TEST_TEXT, TRAINING_TEXT):
        ids = ours.encode(text)
        assert [i - N for i in ids] == fast(text)["input_ids"] == slow(text)["input_ids"]
        assert ours.decode(ids) == text
    assert len(ours.encode(TEST_TEXT)) < len(TEST_TEXT.encode("utf-8"))  # merges did apply


def test_special_names_in_text_stay_text_and_special_ids_decode_to_their_names(tmp_path):
    vocab_file, merges_file = hf_bpe_files(tmp_path)
    tokenizer = gpt.GPT2Tokenizer(json.loads(vocab_file.read_text(encoding="utf-8")), gpt.read_gpt2_merges(merges_file))
    assert all(i >= N for i in tokenizer.encode("<eos> <|endoftext|>"))
    assert tokenizer.decode([gpt.INST_ID] + tokenizer.encode("hi") + [gpt.RESP_ID]) == "<inst>hi<resp>"


# ----------------------------------------------------------------------------------------------------
# The weights: logits and greedy generation equal transformers', from safetensors and from .bin


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_loaded_gpt2_gives_transformers_logits(gpt2_folders, kind):
    hf, folders = gpt2_folders
    model, tokenizer = gpt.load_gpt2(str(folders[kind]))
    assert model.config.gelu == "tanh" and tokenizer.vocab_size == model.config.vocab_size == hf.config.vocab_size + N
    ids = torch.randint(0, hf.config.vocab_size, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids + N)[0], hf(ids).logits
    assert torch.allclose(ours[..., N:], theirs, atol=1e-4, rtol=0)
    assert theirs.std() > 1  # the logits are far from uniform: a mistake would show


def test_greedy_generation_matches_transformers_token_for_token(gpt2_folders):
    hf, folders = gpt2_folders
    model, _ = gpt.load_gpt2(str(folders["safetensors"]))
    for seed in range(3):
        prompt = torch.randint(0, hf.config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(seed))
        ours = model.generate(prompt + N, 40, temperature=0)
        theirs = hf.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=0)
        assert (ours - N).tolist() == theirs.tolist()


def test_special_token_rows_are_the_mean_of_gpt2s_and_the_embedding_stays_tied(gpt2_folders):
    hf, folders = gpt2_folders
    model, _ = gpt.load_gpt2(str(folders["safetensors"]))
    wte = hf.transformer.wte.weight
    assert torch.allclose(model.wte.weight[:N], wte.mean(dim=0).expand(N, -1))
    assert torch.equal(model.wte.weight[N:], wte)
    assert model.lm_head.weight is model.wte.weight


def test_the_hubs_older_layout_loads_the_same(gpt2_folders, tmp_path):
    """openai-community/gpt2's files name weights without "transformer." and keep the causal mask as buffers."""
    hf, folders = gpt2_folders
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    shutil.copytree(folders["bin"], tmp_path / "hub")
    torch.save(state, tmp_path / "hub" / "pytorch_model.bin")
    old, _ = gpt.load_gpt2(str(tmp_path / "hub"))
    new, _ = gpt.load_gpt2(str(folders["bin"]))
    assert all(torch.equal(old.state_dict()[k], v) for k, v in new.state_dict().items())


def broken_folder(source, tmp_path, name, text=None, change=None):
    """A copy of the GPT-2 folder source with file name rewritten (text), changed as JSON (change), or removed."""
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    path = folder / name
    if change is not None:
        path.write_text(json.dumps(change(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    elif text is not None:
        path.write_bytes(text)
    else:
        path.unlink()
    return folder


def truncated(data):
    return data[:len(data) // 2]


BAD_FOLDERS = [
    ("config.json", None, None, "a GPT-2 folder needs config.json"),
    ("merges.txt", None, None, "a GPT-2 folder needs merges.txt"),
    ("model.safetensors", None, None, "a GPT-2 folder needs model.safetensors or pytorch_model.bin"),
    ("config.json", None, lambda c: {**c, "model_type": "llama"}, "model_type 'llama': this loads GPT-2"),
    ("config.json", None, lambda c: {**c, "activation_function": "relu"}, "activation_function 'relu': expected"),
    ("config.json", None, lambda c: {**c, "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ("config.json", None, lambda c: {**c, "n_layer": 3}, "the weights do not fit config.json"),
    ("config.json", None, lambda c: {**c, "vocab_size": 10}, "vocab.json has 500 tokens, but config.json's vocab_size"),
    ("config.json", b"{not json", None, "config.json: not a JSON file"),
    ("vocab.json", None, lambda v: {**v, "extra": 0}, "ids 0 to n - 1"),
    ("merges.txt", b"#version: 0.2\nq z\n", None, "merge 0 (('q', 'z')) must join two tokens into one of the"),
    ("merges.txt", b"a b c\n", None, "a merge is two tokens and one space"),
    ("model.safetensors", b"\x01\x00", None, "not a safetensors file"),
    ("model.safetensors", b"\xff" * 8 + b"{}", None, "not a safetensors file (its header is longer than the file)"),
    ("model.safetensors", b"\x02" + b"\x00" * 7 + b"[]", None, "not a safetensors file (the header is not a JSON"),
    ("model.safetensors", truncated, None, "has a bad header entry"),
]


@pytest.mark.parametrize("name, text, change, message", BAD_FOLDERS)
def test_a_broken_gpt2_folder_is_one_clear_error(gpt2_folders, tmp_path, name, text, change, message):
    source = gpt2_folders[1]["safetensors"]
    if callable(text):
        text = text((source / name).read_bytes())
    with pytest.raises(ValueError, match=regex.escape(message)):
        gpt.load_gpt2(str(broken_folder(source, tmp_path, name, text, change)))


def test_a_missing_folder_says_where_to_get_one(tmp_path):
    with pytest.raises(ValueError, match="no such folder; the README's GPT-2 section"):
        gpt.load_gpt2(str(tmp_path / "gpt2"))


def test_a_pickled_bin_is_refused(gpt2_folders, tmp_path):
    folder = broken_folder(gpt2_folders[1]["bin"], tmp_path, "pytorch_model.bin", text=b"")
    torch.save({"weights": contextlib.nullcontext()}, folder / "pytorch_model.bin")  # an object that is not data
    with pytest.raises(ValueError, match="not a plain-data torch file"):
        gpt.load_gpt2(str(folder))


# ----------------------------------------------------------------------------------------------------
# Our checkpoints keep the GPT-2 tokenizer


def test_a_checkpoint_stores_the_gpt2_tokenizer_and_loads_the_same_model(gpt2_folders, tmp_path):
    model, tokenizer = gpt.load_gpt2(str(gpt2_folders[1]["safetensors"]))
    gpt.save_checkpoint(str(tmp_path / "ckpt.pt"), model, tokenizer)
    loaded, loaded_tokenizer, ckpt = gpt.load_model(str(tmp_path / "ckpt.pt"))
    assert ckpt["tokenizer"]["type"] == "gpt2" and loaded_tokenizer.encode(TEST_TEXT) == tokenizer.encode(TEST_TEXT)
    ids = torch.tensor([tokenizer.encode("Hello, World!")])
    assert torch.equal(loaded(ids)[0], model(ids)[0])


@pytest.mark.parametrize("change, message", [
    (lambda d: {**d, "vocab": None}, "the vocabulary must map token texts to the ids 0 to n - 1"),
    (lambda d: {**d, "vocab": {**d["vocab"], "Ġ": 7}}, "the ids 0 to n - 1, each once"),
    (lambda d: {**d, "vocab": {k: v for k, v in d["vocab"].items() if k != "a"}}, "ids 0 to n - 1"),
    (lambda d: {**d, "merges": d["merges"] + [["a", 5]]}, "must join two tokens into one of the vocabulary"),
    (lambda d: {**d, "merges": None}, "a gpt2 tokenizer needs 'merges', a list"),
])
def test_a_bad_gpt2_tokenizer_dict_fails_by_name(gpt2_folders, change, message):
    _, tokenizer = gpt.load_gpt2(str(gpt2_folders[1]["safetensors"]))
    with pytest.raises(ValueError, match=regex.escape(message)):
        gpt.tokenizer_from_dict(change(tokenizer.to_dict()))


# ----------------------------------------------------------------------------------------------------
# LoRA


def lora_gpt(tiny_gpt, rank=4):
    """A tiny GPT with adapters whose B is random (a fresh B is zero, which would hide a wrong merge)."""
    model = gpt.add_lora(tiny_gpt(weight_std=0.3), rank, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.3)
    return model


def test_merged_weights_load_into_a_plain_gpt_and_give_the_same_logits(tiny_gpt):
    model = lora_gpt(tiny_gpt)
    plain = tiny_gpt(seed=1)
    plain.load_state_dict(gpt.merged_state_dict(model))  # strict: exactly a plain GPT's keys
    ids = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(plain(ids)[0], model(ids)[0], atol=1e-5)
        assert not torch.allclose(tiny_gpt(weight_std=0.3)(ids)[0], model(ids)[0], atol=1e-2)  # the adapters matter


def test_only_the_adapters_train(tiny_gpt):
    model = lora_gpt(tiny_gpt)
    ids = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    model(ids, ids)[1].backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {name for name, _ in model.named_parameters() if name.endswith(("lora_A", "lora_B"))}
    assert len(trained) == 2 * 4 * 2  # c_attn, c_proj, c_fc, c_proj in each of 2 blocks, A and B each
    wrapped = [m.base for m in model.modules() if isinstance(m, gpt.LoRALinear)]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        4 * (m.in_features + m.out_features) for m in wrapped)


def test_rank_zero_is_lora_off(tiny_gpt):
    model = tiny_gpt()
    before = model.state_dict()
    assert gpt.add_lora(model, 0, alpha=16) is model and gpt.lora_adapters(model) == {}
    assert all(p.requires_grad for p in model.parameters()) and gpt.merged_state_dict(model).keys() == before.keys()


def test_a_checkpoint_of_a_lora_model_loads_plainly_and_its_adapters_come_back(tiny_gpt, tmp_path):
    model = lora_gpt(tiny_gpt)
    tokenizer = gpt.CharTokenizer([chr(c) for c in range(97, 97 + 24)])
    gpt.save_checkpoint(str(tmp_path / "ckpt.pt"), model, tokenizer)
    plain, _, ckpt = gpt.load_model(str(tmp_path / "ckpt.pt"))
    resumed = gpt.add_lora(plain, 4, alpha=8)
    gpt.load_lora(resumed, ckpt["lora"])
    for name, value in model.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6), name
    with pytest.raises(ValueError, match="the saved adapters do not fit this model's"):
        gpt.load_lora(gpt.add_lora(tiny_gpt(), 2, alpha=8), ckpt["lora"])


# ----------------------------------------------------------------------------------------------------
# finetune.py from GPT-2, in full and with LoRA; the results load in gpt.py's command line and in the app


def finetune_gpt2(folder, out_dir, tmp_path, task, *flags):
    if task == "classify":
        rows = [("pos", f"good {w} happy") for w in "abcdefghij"] + [("neg", f"bad {w} sad") for w in "abcdefghij"]
        data = tmp_path / "d.tsv"
        data.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    else:
        data = tmp_path / "d.jsonl"
        data.write_text("".join(json.dumps({"instruction": f"Echo {w}.", "output": w}) + "\n" for w in
                                ["cat", "dog", "sun", "sea", "sky", "hat", "pen", "cup"]), encoding="utf-8")
    return finetune.main([f"--task={task}", f"--init=hf:{folder}", f"--data={data}", f"--out_dir={out_dir}",
                          "--device=cpu", "--dtype=float32", "--batch_size=4", "--eval_interval=5", "--max_iters=10",
                          "--warmup_iters=2", "--lr=3e-3", "--max_minutes=0", *flags])


@pytest.mark.parametrize("task, lora", [("classify", 0), ("instruct", 0), ("classify", 4), ("instruct", 4)])
def test_finetuning_gpt2_writes_plain_checkpoints_that_gpt_py_and_the_app_load(gpt2_folders, tmp_path, capsys, task,
                                                                               lora):
    report = finetune_gpt2(gpt2_folders[1]["safetensors"], tmp_path / "run", tmp_path, task, f"--lora_rank={lora}")
    assert report["status"] == "done"
    ckpt_path = tmp_path / "run" / "ckpt.pt"
    model, tokenizer, ckpt = gpt.load_model(str(ckpt_path))  # plain: no adapter in the model
    assert ckpt["tokenizer"]["type"] == "gpt2" and not any(isinstance(m, gpt.LoRALinear) for m in model.modules())
    assert ("lora" in ckpt) == bool(lora)
    if task == "classify":
        return
    capsys.readouterr()  # finetune's log
    gpt.main(["--ckpt", str(ckpt_path), "--prompt", "Echo cat.", "--max_new_tokens=5", "--temperature=0"])
    assert capsys.readouterr().out.startswith("<inst>Echo cat.<resp>")
    loaded = chat_app.load_shared_model(ckpt_path, tmp_path, torch.device("cpu"))
    prompt = gpt.instruction_ids(loaded.tokenizer, "Echo dog.")
    new_ids = []
    text = "".join(chat_app.text_pieces(loaded.tokenizer, chat_app.stream_tokens(loaded, prompt, 5, temperature=0),
                                        new_ids))
    assert len(new_ids) >= 1 and text == loaded.tokenizer.decode([i for i in new_ids if i != gpt.EOS_ID])


def test_lora_keeps_gpt2s_weights_except_the_embedding_for_instruct(gpt2_folders, tmp_path):
    """ckpt.pt holds merged weights; less its adapters' change they are GPT-2's, but for instruct's embedding."""
    folder = gpt2_folders[1]["safetensors"]
    start, _ = gpt.load_gpt2(str(folder))
    for task in ("classify", "instruct"):
        finetune_gpt2(folder, tmp_path / task, tmp_path, task, "--lora_rank=4", "--lora_alpha=8")
        ckpt = gpt.load_checkpoint(tmp_path / task / "ckpt.pt")
        model = gpt.add_lora(gpt.model_from_checkpoint(ckpt), 4, alpha=8)
        gpt.load_lora(model, ckpt["lora"])
        trained = (model.gpt if task == "classify" else model).state_dict()
        for name, p in start.state_dict().items():
            frozen = re.sub(r"(c_attn|c_proj|c_fc)\.", r"\1.base.", name)  # a wrapped layer's base
            changed = not torch.allclose(trained[frozen], p, atol=1e-6)
            assert changed == (task == "instruct" and name in ("wte.weight", "lm_head.weight")), (task, name)


def test_an_interrupted_lora_run_resumes_to_the_same_losses(gpt2_folders, tmp_path, monkeypatch, stop_after):
    folder = gpt2_folders[1]["safetensors"]
    flags = ["--lora_rank=4", "--log_interval=1", "--max_epochs=100"]
    finetune_gpt2(folder, tmp_path / "straight", tmp_path, "instruct", *flags)
    real_start_run = finetune.start_run

    @contextlib.contextmanager
    def stopping_run(cfg, launched):  # Ctrl-C on the seventh step
        with real_start_run(cfg, launched) as run:
            run.stop = stop_after(7)
            yield run

    monkeypatch.setattr(finetune, "start_run", stopping_run)
    assert finetune_gpt2(folder, tmp_path / "run", tmp_path, "instruct", *flags)["status"] == "interrupted"
    monkeypatch.undo()
    assert finetune_gpt2(folder, tmp_path / "run", tmp_path, "instruct", *flags, "--resume")["status"] == "done"

    def train_losses(run_dir):
        records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        return [(m["step"], m["train_loss"]) for m in records if "train_loss" in m]
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "run")
    assert [step for step, _ in resumed] == [step for step, _ in straight] == list(range(1, 11))
    # Equal to rounding: last.pt holds merged weights, and load_lora takes the adapters' change back out.
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in straight], rel=1e-5)
    with pytest.raises(finetune.ConfigError, match=r"cannot change lora_rank \(4 -> 2\)"):
        finetune_gpt2(folder, tmp_path / "run", tmp_path, "instruct", "--lora_rank=2", "--resume")


def test_gpt2_and_lora_settings_are_checked(tmp_path):
    cfg = finetune.finetune_config(["--task=classify", "--init=hf:models/gpt2", "--lora_rank=8"])
    assert cfg.out_dir == "out/gpt2_classify_lora8"
    with pytest.raises(finetune.ConfigError, match="--freeze and --lora_rank both choose what trains"):
        finetune.finetune_config(["--task=classify", "--freeze=head", "--lora_rank=8"])
    with pytest.raises(finetune.ConfigError, match="--lora_alpha must be above 0"):
        finetune.finetune_config(["--task=classify", "--lora_rank=8", "--lora_alpha=0"])
    with pytest.raises(finetune.ConfigError, match="--init=hf:.*: no such folder"):
        finetune.initial_model(finetune.finetune_config(["--task=instruct", f"--init=hf:{tmp_path / 'none'}"]))
