"""Tests for gpt.py: one behaviour per test, each named after what it checks and able to fail.

Models are tiny (1-2 layers, 16-32 wide) so the file runs in seconds on a laptop CPU.
"""
import ast
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gpt
from gpt import (EOS_ID, INST_ID, PAD_ID, RESP_ID, SPECIAL_TOKENS, UNK_ID, BPETokenizer, CharTokenizer,
                 CheckpointError, GPT, GPTClassifier, GPTConfig)

GPT_PY = Path(gpt.__file__)
PRINTABLE_ASCII = "".join(chr(c) for c in range(32, 127)) + "\n\t"


# Both ways of giving the model positions: GPT-2's learned table, and rotary embeddings.
VARIANTS = [{"rope": False}, {"rope": True}]


def use_explicit_attention(monkeypatch):
    """Put explicit_attention in the place of torch's fused kernel, which the model calls. The stand-in
    ignores the mask it is handed and applies explicit_attention's own, so a wrong mask in forward makes
    the two disagree. Returns the list of its calls: a test checks it ran, so it compares two paths."""
    calls = []

    def by_hand(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        assert dropout_p == 0.0  # these tests run without dropout, which no two paths draw alike
        calls.append(tuple(q.shape))
        return gpt.explicit_attention(q, k, v)[0]

    monkeypatch.setattr(gpt.F, "scaled_dot_product_attention", by_hand)
    return calls


@pytest.fixture(params=["fused", "explicit"])
def kernel(request, monkeypatch):
    """Run a test once with torch's fused attention and once with explicit_attention in its place."""
    calls = use_explicit_attention(monkeypatch) if request.param == "explicit" else []
    yield request.param
    assert bool(calls) == (request.param == "explicit")


def random_ids(n, vocab_size, seed):
    return torch.randint(len(SPECIAL_TOKENS), vocab_size, (1, n), generator=torch.Generator().manual_seed(seed))


def random_unicode(n, seed):
    """n characters mixing ASCII, digits, underscores, whitespace of several kinds, accented Latin,
    combining marks, CJK, emoji and, for the rest, any code point at all (surrogates excepted: they
    cannot be encoded to UTF-8 on their own)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x30, 0x39), (0x5F, 0x5F), (0xC0, 0x24F), (0x300, 0x36F), (0x4E00, 0x9FFF),
              (0x1F300, 0x1FAFF), (0x0, 0x10FFFF)]
    whitespace = " \t\n\r\x0b\x0c\u00a0\u2003\u3000"
    chars = []
    while len(chars) < n:
        if rng.random() < 0.15:
            chars.append(rng.choice(whitespace))
            continue
        c = rng.randint(*rng.choice(ranges))
        if not 0xD800 <= c <= 0xDFFF:
            chars.append(chr(c))
    return "".join(chars)


# ----------------------------------------------------------------------------------------------------
# 1. Tokenizers


def test_char_tokenizer_round_trips_all_printable_ascii_newline_and_tab():
    tok = CharTokenizer.from_text("")
    ids = tok.encode(PRINTABLE_ASCII)
    assert tok.vocab_size == len(SPECIAL_TOKENS) + len(PRINTABLE_ASCII)
    assert len(ids) == len(set(ids)) == len(PRINTABLE_ASCII)
    assert min(ids) >= len(SPECIAL_TOKENS)
    assert tok.decode(ids) == PRINTABLE_ASCII


def test_char_tokenizer_gives_ascii_the_same_ids_whatever_the_corpus():
    a, b = CharTokenizer.from_text("plain"), CharTokenizer.from_text("ünïcödé 世界")
    assert a.encode(PRINTABLE_ASCII) == b.encode(PRINTABLE_ASCII)


def test_char_tokenizer_round_trips_corpus_characters_beyond_ascii():
    text = "ünïcödé 世界 🙂"
    tok = CharTokenizer.from_text(text)
    assert UNK_ID not in tok.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_maps_characters_outside_its_vocabulary_to_unk():
    tok = CharTokenizer.from_text("abc")
    assert tok.encode("a世b🙂\r") == [tok.encode("a")[0], UNK_ID, tok.encode("b")[0], UNK_ID, UNK_ID]
    assert tok.decode(tok.encode("a世")) == "a<unk>"


@pytest.mark.parametrize("make", [CharTokenizer.from_text, lambda text: BPETokenizer.train(text, 300)])
def test_special_token_names_in_plain_text_encode_as_ordinary_text(make):
    text = "say <eos> or <pad><unk><inst><resp> and stop"
    tok = make(text * 20)
    for plain in (text, *SPECIAL_TOKENS):
        ids = tok.encode(plain)
        assert all(i >= len(SPECIAL_TOKENS) for i in ids), plain
        assert tok.decode(ids) == plain


def test_instruction_ids_add_special_tokens_only_at_the_ends():
    tok = CharTokenizer.from_text("")
    ids = gpt.instruction_ids(tok, "ignore <resp> this", "and <eos>")
    assert ids[0] == INST_ID and ids[-1] == RESP_ID
    assert ids[1:-1] == tok.encode("ignore <resp> this\nand <eos>")
    assert gpt.instruction_ids(tok, "hi") == [INST_ID] + tok.encode("hi") + [RESP_ID]


def test_char_tokenizer_survives_to_dict_and_back_through_json():
    tok = CharTokenizer.from_text("ünïcödé 世界")
    restored = gpt.tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    text = "Hello, ünïcödé 世界!\n"
    assert restored.vocab_size == tok.vocab_size
    assert restored.encode(text) == tok.encode(text)


def test_tokenizers_saved_before_the_chat_roles_keep_their_five_specials_and_their_ids():
    new = CharTokenizer.from_text("abc")
    old = gpt.tokenizer_from_dict({"type": "char", "chars": new.chars})  # as saved before the roles existed
    assert old.vocab_size == new.vocab_size - 3 and old.encode("abc") == [i - 3 for i in new.encode("abc")]
    assert old.decode([gpt.EOS_ID, *old.encode("abc")]) == "<eos>abc"
    assert gpt.tokenizer_from_dict(old.to_dict()).encode("abc") == old.encode("abc")
    a, b = 5 + ord("a"), 5 + ord("b")  # byte b was token 5 + b when there were five specials
    old_bpe = gpt.tokenizer_from_dict({"type": "bpe", "merges": [[a, b]]})
    assert old_bpe.encode("abc") == [261, 5 + ord("c")] and old_bpe.decode([gpt.INST_ID, 261]) == "<inst>ab"
    with pytest.raises(ValueError, match="'specials' must be the first 5 or all of"):
        gpt.tokenizer_from_dict({"type": "char", "chars": ["a"], "specials": ["<pad>"]})


@pytest.fixture(scope="module")
def unicode_bpe():
    return BPETokenizer.train(random_unicode(20_000, seed=1), vocab_size=400)


def test_bpe_round_trips_random_unicode(unicode_bpe):
    for seed in range(2, 7):
        text = random_unicode(3_000, seed)
        ids = unicode_bpe.encode(text)
        assert unicode_bpe.decode(ids) == text


def test_bpe_training_learns_the_requested_vocabulary(unicode_bpe):
    assert unicode_bpe.vocab_size == 400
    assert len(unicode_bpe.merges) == 400 - len(SPECIAL_TOKENS) - 256


def test_bpe_merges_compress_text():
    source = GPT_PY.read_text()
    tok = BPETokenizer.train(source, vocab_size=512)
    unseen = Path(__file__).read_text()  # same language, text it was not trained on
    for text in (source, unseen):
        assert len(tok.encode(text)) < 0.6 * len(text.encode("utf-8"))
    assert len(BPETokenizer([]).encode(source)) == len(source.encode("utf-8"))  # no merges: one token a byte


def test_bpe_decodes_special_ids_as_their_names(unicode_bpe):
    ids = unicode_bpe.encode("héllo") + [EOS_ID] + unicode_bpe.encode("世界") + [PAD_ID]
    assert unicode_bpe.decode(ids) == "héllo<eos>世界<pad>"
    assert unicode_bpe.decode([INST_ID, RESP_ID]) == "<inst><resp>"


def test_bpe_survives_to_dict_and_back_through_json(unicode_bpe):
    restored = gpt.tokenizer_from_dict(json.loads(json.dumps(unicode_bpe.to_dict())))
    text = random_unicode(2_000, seed=9)
    assert restored.vocab_size == unicode_bpe.vocab_size
    assert restored.encode(text) == unicode_bpe.encode(text)


def test_tokenizer_from_dict_rejects_unknown_types():
    with pytest.raises(ValueError, match="unknown tokenizer type 'wordpiece'"):
        gpt.tokenizer_from_dict({"type": "wordpiece"})


BAD_TOKENIZERS = [
    ({"type": "wordpiece"}, "unknown tokenizer type 'wordpiece': expected 'char' or 'bpe'"),
    ({"chars": ["a"]}, "unknown tokenizer type None"),
    ("char", "unknown tokenizer type None"),
    ({"type": "char"}, "a char tokenizer needs 'chars', a list, not None"),
    ({"type": "char", "chars": "abc"}, "a char tokenizer needs 'chars', a list, not 'abc'"),
    ({"type": "char", "chars": ["a", "bc"]}, "'chars' must be distinct single characters, not ['bc']"),
    ({"type": "char", "chars": ["a", 7, ""]}, "'chars' must be distinct single characters, not [7, '']"),
    ({"type": "char", "chars": ["a", "b", "a"]}, "'chars' must be distinct single characters, not ['a']"),
    ({"type": "bpe"}, "a bpe tokenizer needs 'merges', a list, not None"),
    ({"type": "bpe", "merges": [[5, 6], [7]]}, "merge [7] makes id 262, so it must pair two ids from 5 to 261"),
    ({"type": "bpe", "merges": [5]}, "merge 5 makes id 261"),
    ({"type": "bpe", "merges": [[5, 261]]}, "merge [5, 261] makes id 261, so it must pair two ids from 5 to 260"),
    ({"type": "bpe", "merges": [[0, 5]]}, "merge [0, 5] makes id 261"),  # <pad> is no byte sequence
    ({"type": "bpe", "merges": [[-1, 6]]}, "merge [-1, 6] makes id 261"),
    ({"type": "bpe", "merges": [[5.0, 6]]}, "merge [5.0, 6] makes id 261"),
    ({"type": "bpe", "merges": [[True, 6]]}, "merge [True, 6] makes id 261"),
]


@pytest.mark.parametrize("d, message", BAD_TOKENIZERS)
def test_tokenizer_from_dict_names_what_is_wrong_with_a_hand_made_dict(d, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        gpt.tokenizer_from_dict(d)


def test_bpe_training_is_deterministic_across_processes():
    # Each process hashes strings with its own random seed; merges must not depend on hash order.
    script = ("import json, sys, gpt; text = open(sys.argv[1], encoding='utf-8').read(); "
              "print(json.dumps(gpt.BPETokenizer.train(text, 400).to_dict()))")
    other = subprocess.run([sys.executable, "-c", script, str(GPT_PY)], cwd=GPT_PY.parent, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.returncode == 0, other.stderr
    here = BPETokenizer.train(GPT_PY.read_text(), 400).to_dict()
    assert json.loads(other.stdout) == here
    assert BPETokenizer.train(GPT_PY.read_text(), 400).to_dict() == here


# ----------------------------------------------------------------------------------------------------
# 2. Attention and the model


@pytest.mark.parametrize("options", VARIANTS)
def test_logits_never_depend_on_later_tokens(tiny_gpt, kernel, options):
    model = tiny_gpt(weight_std=0.3, **options)
    idx = random_ids(16, 32, seed=0)
    logits, _ = model(idx)
    for t in range(15):
        changed = idx.clone()
        changed[0, t + 1:] = random_ids(15 - t, 32, seed=t + 1)[0]
        changed[0, t + 1] = 5 + (idx[0, t + 1] - 5 + 1) % 27  # make sure position t+1 really differs
        changed_logits, _ = model(changed)
        assert torch.allclose(changed_logits[0, :t + 1], logits[0, :t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(changed_logits[0, t + 1], logits[0, t + 1], atol=1e-3)  # the change shows


@pytest.mark.parametrize("options", VARIANTS)
def test_explicit_attention_matches_fused_forward_and_gradients(tiny_gpt, options, monkeypatch):
    model = tiny_gpt(weight_std=0.3, **options).train()  # train mode, dropout 0: the same path training takes
    idx, targets = random_ids(16, 32, seed=0).repeat(3, 1), random_ids(48, 32, seed=1).view(3, 16)

    def logits_loss_grads():
        model.zero_grad()
        logits, loss = model(idx, targets)
        loss.backward()
        return logits, loss, {name: p.grad.clone() for name, p in model.named_parameters()}

    fused_logits, fused_loss, fused_grads = logits_loss_grads()
    calls = use_explicit_attention(monkeypatch)
    explicit_logits, explicit_loss, explicit_grads = logits_loss_grads()
    assert calls == [(3, 2, 16, 16)] * 2  # one call per layer: the second pass really ran by hand
    assert torch.allclose(explicit_logits, fused_logits, atol=1e-5, rtol=0)
    assert torch.allclose(explicit_loss, fused_loss, atol=1e-5, rtol=0)
    assert fused_grads.keys() == explicit_grads.keys()
    for name, grad in fused_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(explicit_grads[name], grad, atol=1e-5, rtol=0), name


@pytest.mark.parametrize("options", VARIANTS)
def test_fused_attention_after_cached_keys_matches_explicit_attention(tiny_gpt, options, monkeypatch):
    """Queries that follow cached keys take the fused kernel's attn_mask path; its chunks must give what
    explicit_attention gives for the whole sequence at once."""
    model = tiny_gpt(weight_std=0.3, **options)
    idx, cache = random_ids(16, 32, seed=0), [{} for _ in model.blocks]
    chunks = [model(idx[:, start:end], cache=cache)[0] for start, end in [(0, 6), (6, 7), (7, 11), (11, 16)]]
    calls = use_explicit_attention(monkeypatch)
    explicit, _ = model(idx)
    assert calls and torch.allclose(torch.cat(chunks, dim=1), explicit, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", VARIANTS)
def test_attention_weights_from_a_layers_projections_are_causal_distributions(tiny_gpt, options):
    model = tiny_gpt(weight_std=0.3, block_size=10, **options)
    rotary = (model.rope_cos, model.rope_sin) if options["rope"] else None
    q, k, v = model.blocks[0].attn.qkv(torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(0)), rotary)
    assert q.shape == k.shape == v.shape == (2, 2, 10, 16)
    y, weights = gpt.explicit_attention(q, k, v)
    assert y.shape == (2, 2, 10, 16) and weights.shape == (2, 2, 10, 10)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 10))
    allowed = torch.ones(10, 10, dtype=torch.bool).tril()
    assert torch.all(weights[..., ~allowed] == 0) and torch.all(weights[..., allowed] > 0)
    _, last_rows = gpt.explicit_attention(q[:, :, 7:], k, v)  # queries after cached keys: the same rows
    assert torch.allclose(last_rows, weights[:, :, 7:])


def test_rotary_attention_scores_depend_only_on_relative_position():
    cos, sin = gpt.rotary_tables(block_size=32, head_size=8)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(query_pos, key_pos):
        return (gpt.rotate(q, cos[query_pos], sin[query_pos]) * gpt.rotate(k, cos[key_pos], sin[key_pos])).sum()

    assert torch.allclose(score(9, 4), score(5, 0), atol=1e-5)  # the same distance, 5
    assert torch.allclose(score(30, 25), score(5, 0), atol=1e-5)
    assert not torch.allclose(score(9, 4), score(9, 5), atol=1e-3)  # another distance, another score
    rotated = gpt.rotate(q, cos[7], sin[7])
    assert torch.allclose(rotated.norm(), q.norm(), atol=1e-6)  # a rotation: lengths are kept


def test_rotary_model_learns_no_position_table_and_still_sees_order(tiny_gpt):
    model = tiny_gpt(weight_std=0.3, rope=True)
    assert not hasattr(model, "wpe") and "rope_cos" not in model.state_dict()
    forward, _ = model(torch.tensor([[3, 4, 5, 6]]))
    backward, _ = model(torch.tensor([[5, 4, 3, 6]]))  # the same tokens in another order
    assert not torch.allclose(forward[0, -1], backward[0, -1], atol=1e-3)


def test_hidden_states_are_what_the_lm_head_reads(tiny_gpt):
    model = tiny_gpt()
    idx = random_ids(8, 32, seed=0)
    h = model.hidden_states(idx)
    assert h.shape == (1, 8, 32)
    assert torch.allclose(model.lm_head(h), model(idx)[0])


def test_forward_rejects_sequences_longer_than_block_size(tiny_gpt):
    with pytest.raises(ValueError, match="17 tokens exceed block_size 16"):
        tiny_gpt()(random_ids(17, 32, seed=0))


BAD_CONFIGS = [
    ({"n_layer": "2"}, "n_layer='2': expected a positive int"),
    ({"n_layer": 2.0}, "n_layer=2.0: expected a positive int"),
    ({"n_head": True}, "n_head=True: expected a positive int"),
    ({"vocab_size": None}, "vocab_size=None: expected a positive int"),
    ({"block_size": 0}, "block_size=0: expected a positive int"),
    ({"n_embd": -32}, "n_embd=-32: expected a positive int"),
    ({"dropout": "0.1"}, "dropout='0.1': expected float"),
    ({"dropout": 1.0}, "dropout=1.0: expected 0 <= dropout < 1"),
    ({"dropout": -0.1}, "dropout=-0.1: expected 0 <= dropout < 1"),
    ({"dropout": float("nan")}, "dropout=nan: expected 0 <= dropout < 1"),
    ({"bias": 1}, "bias=1: expected bool"),
    ({"rope": "yes"}, "rope='yes': expected bool"),
    ({"n_embd": 33}, "n_embd=33 is not divisible by n_head=2"),
    ({"n_head": 32, "rope": True}, "rope turns pairs, so needs an even head size, not 1"),
]
TINY_CONFIG = {"vocab_size": 102, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}


@pytest.mark.parametrize("change, message", BAD_CONFIGS)
def test_gpt_config_names_a_bad_field(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GPTConfig(**{**TINY_CONFIG, **change})


def test_gpt_config_takes_a_whole_number_dropout():
    assert GPTConfig(**TINY_CONFIG, dropout=0).dropout == 0


def test_small_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=2, n_head=2, n_embd=32)).train()
    batch = torch.randint(0, 16, (4, 17))
    idx, targets = batch[:, :-1], batch[:, 1:]  # slices, not contiguous: the way training makes them
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model(idx, targets)[1].item() < 0.05


def test_masked_targets_change_neither_loss_nor_gradients(tiny_gpt):
    """Loss over targets with -100 at some positions must be exactly the mean cross-entropy over the
    other positions alone: what those masked positions would have predicted counts for nothing."""
    model = tiny_gpt(weight_std=0.3).train()
    idx, targets = random_ids(16, 32, seed=0).repeat(2, 1), random_ids(32, 32, seed=1).view(2, 16)
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[0, :10], masked[1, 3:7], masked[1, -1] = True, True, True  # a prompt, a gap, trailing padding

    model.zero_grad()
    _, loss = model(idx, targets.masked_fill(masked, -100))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad()
    logits, full_loss = model(idx, targets)
    kept_loss = F.cross_entropy(logits[~masked], targets[~masked])
    kept_loss.backward()

    assert not torch.allclose(loss, full_loss)  # the mask matters...
    assert torch.allclose(loss, kept_loss, atol=1e-6, rtol=0)  # ...and only the kept positions count
    for name, p in model.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-6, rtol=0), name


# ----------------------------------------------------------------------------------------------------
# 3. Heads


def classifier(tiny_gpt, n_layer=2, n_classes=3):
    return GPTClassifier(tiny_gpt(n_layer=n_layer, weight_std=0.3), n_classes).eval()


def test_classifier_gives_one_row_of_class_logits_per_sequence(tiny_gpt):
    idx = random_ids(24, 32, seed=0).view(4, 6)
    logits, loss = classifier(tiny_gpt)(idx, torch.tensor([0, 1, 2, 1]))
    assert logits.shape == (4, 3)
    assert loss.dim() == 0 and loss.item() > 0


def test_classifier_pools_the_last_real_token_whatever_the_padding(tiny_gpt):
    model = classifier(tiny_gpt)
    short, long = random_ids(4, 32, seed=0)[0], random_ids(9, 32, seed=1)[0]
    alone = [model(seq[None])[0][0] for seq in (short, long)]
    pad = lambda seq, n: torch.cat([seq, torch.full((n - len(seq),), PAD_ID)])
    for width in (9, 12, 16):
        batch = torch.stack([pad(short, width), pad(long, width)])
        logits, _ = model(batch)
        assert torch.allclose(logits[0], alone[0], atol=1e-5) and torch.allclose(logits[1], alone[1], atol=1e-5)
    last_hidden = model.gpt.hidden_states(short[None])[0, -1]
    assert torch.allclose(alone[0], model.head(last_hidden))


@pytest.mark.parametrize("strategy, n, trainable", [
    ("none", 0, ("gpt.", "head.")),
    ("head", 0, ("head.",)),
    ("last_n", 1, ("head.", "gpt.ln_f.", "gpt.blocks.1.")),
    ("last_n", 2, ("head.", "gpt.ln_f.", "gpt.blocks.0.", "gpt.blocks.1.")),
])
def test_frozen_parameters_receive_no_gradient(tiny_gpt, strategy, n, trainable):
    model = classifier(tiny_gpt).train()
    gpt.freeze(model, strategy, n)
    _, loss = model(random_ids(24, 32, seed=0).view(4, 6), torch.tensor([0, 1, 2, 1]))
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(trainable):
            assert p.requires_grad and p.grad is not None and p.grad.abs().max() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_classifier_reads_a_text_longer_than_the_context_in_windows(tiny_gpt, pool):
    model = GPTClassifier(tiny_gpt(weight_std=0.3), 3, pool=pool).eval()  # block_size 16
    idx = random_ids(40, 32, seed=3)  # windows of 16, 16 and 8 tokens
    windows = [model.gpt.hidden_states(idx[:, i:i + 16]) for i in (0, 16, 32)]
    expected = torch.cat(windows, 1).mean(1) if pool == "mean" else windows[-1][:, -1]
    assert torch.allclose(model(idx)[0], model.head(expected), atol=1e-6)


def test_mean_pooling_ignores_padding(tiny_gpt):
    model = GPTClassifier(tiny_gpt(weight_std=0.3), 3, pool="mean").eval()
    idx = random_ids(10, 32, seed=4)
    padded = torch.cat([idx, torch.full((1, 5), PAD_ID)], 1)
    assert torch.allclose(model(idx)[0], model(padded)[0], atol=1e-6)


def test_freeze_rejects_unknown_strategies(tiny_gpt):
    with pytest.raises(ValueError, match="unknown freeze strategy 'all'"):
        gpt.freeze(classifier(tiny_gpt), "all")


# ----------------------------------------------------------------------------------------------------
# 4. Sampling


@pytest.mark.parametrize("options", VARIANTS)
@pytest.mark.parametrize("prompt_len, new_tokens", [(3, 40), (16, 20), (25, 40)])
def test_kv_cache_greedy_generation_matches_full_recompute(tiny_gpt, kernel, prompt_len, new_tokens, options):
    """Prompts shorter than, equal to and longer than block_size 16, generating well past it so the
    context window moves (and the cache refills) several times."""
    model = tiny_gpt(weight_std=0.3, seed=2, **options)  # seed 2: no variant gets stuck repeating a token
    prompt = random_ids(prompt_len, 32, seed=prompt_len)
    cached = model.generate(prompt, new_tokens, temperature=0)
    recomputed = model.generate(prompt, new_tokens, temperature=0, use_cache=False)
    assert cached.shape == (1, prompt_len + new_tokens)
    assert torch.equal(cached[:, :prompt_len], prompt)
    assert cached[0].tolist() == recomputed[0].tolist()
    assert len(set(cached[0, prompt_len:].tolist())) > 2  # the model is not stuck on one token


@pytest.mark.parametrize("options", VARIANTS)
def test_cached_chunks_give_the_same_logits_as_a_full_forward(tiny_gpt, kernel, options):
    model = tiny_gpt(weight_std=0.3, **options)
    idx = random_ids(16, 32, seed=0)
    full, _ = model(idx)
    cache = [{} for _ in model.blocks]
    for start, end in [(0, 6), (6, 7), (7, 11), (11, 16)]:  # queries after cached keys, one or several
        chunk, _ = model(idx[:, start:end], cache=cache)
        assert torch.allclose(chunk, full[:, start:end], atol=1e-5, rtol=0)


def test_generate_stream_stops_after_a_stop_id(tiny_gpt):
    model = tiny_gpt(weight_std=0.3)
    prompt = random_ids(4, 32, seed=0)
    free = model.generate(prompt, 20, temperature=0)[0, 4:].tolist()
    stop = free[5]
    streamed = list(model.generate_stream(prompt, 20, temperature=0, stop_ids=(stop,)))
    assert streamed == free[:free.index(stop) + 1]


def sample_many(logits, n=400, **sampling):
    return [gpt.sample_next(logits, generator=torch.Generator().manual_seed(s), **sampling) for s in range(n)]


def test_top_k_samples_only_the_k_likeliest_tokens():
    logits = torch.tensor([0.5, 3.0, -1.0, 2.5, 0.0, 2.0, 1.0, -2.0])
    assert set(sample_many(logits, top_k=3)) == {1, 3, 5}
    assert set(sample_many(logits, top_k=1)) == {1}


def test_top_p_samples_only_the_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.3, 0.02, 0.5, 0.1, 0.03])
    logits = probs.log()
    assert set(sample_many(logits, top_p=0.75)) == {3, 1}  # 0.5 < 0.75 <= 0.5 + 0.3
    assert set(sample_many(logits, top_p=0.85)) == {3, 1, 4}
    assert set(sample_many(logits, top_p=0.85, top_k=2)) == {3, 1}
    assert set(sample_many(logits, top_p=0.4)) == {3}


def test_sampling_without_limits_can_reach_every_token():
    logits = torch.tensor([0.5, 1.0, 0.0, 0.8])
    assert set(sample_many(logits, n=200)) == {0, 1, 2, 3}


def test_temperature_zero_is_greedy_and_deterministic(tiny_gpt):
    logits = torch.tensor([0.5, 3.0, -1.0, 2.9])
    assert set(sample_many(logits, n=20, temperature=0)) == {1}
    model = tiny_gpt()
    prompt = random_ids(5, 32, seed=0)
    first = model.generate(prompt, 10, temperature=0, seed=1)
    assert torch.equal(model.generate(prompt, 10, temperature=0, seed=2), first)
    greedy = model(first[:, :-1])[0][0, 4:].argmax(-1)  # each new token is the argmax after its prefix
    assert first[0, 5:].tolist() == greedy.tolist()


def test_same_seed_gives_same_text_and_another_seed_other_text(tiny_gpt):
    model = tiny_gpt()  # near-uniform logits: sampling is very random
    prompt = random_ids(5, 32, seed=0)
    a, b = (model.generate(prompt, 20, seed=7, top_k=20, top_p=0.9) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, model.generate(prompt, 20, seed=8, top_k=20, top_p=0.9))


@pytest.mark.parametrize("shape", [(5,), (2, 5), (1, 0), (1, 2, 3)])
def test_generate_rejects_prompts_that_are_not_one_row(tiny_gpt, shape):
    with pytest.raises(ValueError, match=re.escape(f"prompt shape {shape}: expected (1, T>0)")):
        tiny_gpt().generate(torch.ones(shape, dtype=torch.long), 3)


BAD_SAMPLING = [
    ({"temperature": -1}, "temperature=-1: expected a finite number >= 0 (0 is greedy)"),
    ({"temperature": float("nan")}, "temperature=nan: expected a finite number >= 0"),
    ({"temperature": float("inf")}, "temperature=inf: expected a finite number >= 0"),
    ({"temperature": "hot"}, "temperature='hot': expected a finite number >= 0"),
    ({"top_k": 0}, "top_k=0: expected an int >= 1 (None: off)"),
    ({"top_k": -5}, "top_k=-5: expected an int >= 1 (None: off)"),
    ({"top_k": 2.5}, "top_k=2.5: expected an int >= 1"),
    ({"top_p": 0}, "top_p=0: expected (0, 1]"),
    ({"top_p": 2}, "top_p=2: expected (0, 1]"),
    ({"top_p": -0.5}, "top_p=-0.5: expected (0, 1]"),
    ({"top_p": float("nan")}, "top_p=nan: expected (0, 1]"),
]


@pytest.mark.parametrize("setting, message", BAD_SAMPLING)
def test_sample_next_names_a_bad_setting(setting, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        gpt.sample_next(torch.zeros(4), **setting)


@pytest.mark.parametrize("setting, message", BAD_SAMPLING + [({"max_new_tokens": -1}, "max_new_tokens=-1: expected >= 0"),
                                                             ({"max_new_tokens": 2.0}, "max_new_tokens=2.0")])
def test_generate_names_a_bad_setting_before_any_forward_pass(tiny_gpt, setting, message, monkeypatch):
    model = tiny_gpt()
    monkeypatch.setattr(GPT, "forward", lambda *args, **kwargs: pytest.fail("a forward pass ran"))
    with pytest.raises(ValueError, match=re.escape(message)):
        model.generate(random_ids(3, 32, seed=0), **{"max_new_tokens": 5, **setting})


def test_generate_checks_its_settings_once_not_at_every_token(tiny_gpt, monkeypatch):
    calls, check = [], gpt.check_sampling
    monkeypatch.setattr(gpt, "check_sampling", lambda *args: calls.append(args) or check(*args))
    out = tiny_gpt().generate(random_ids(3, 32, seed=0), 10, temperature=0.5, top_k=5, top_p=0.9, seed=0)
    assert out.shape == (1, 13) and calls == [(0.5, 5, 0.9, 10)]
    gpt.sample_next(torch.zeros(4), 0.5)
    assert len(calls) == 2  # called alone, sample_next checks for itself


def test_max_new_tokens_zero_generates_nothing(tiny_gpt):
    prompt = random_ids(3, 32, seed=0)
    assert torch.equal(tiny_gpt().generate(prompt, 0), prompt)


def test_shorten_prompt_keeps_the_last_tokens_and_room_for_one_more():
    ids = list(range(5, 25))  # 20 tokens
    assert gpt.shorten_prompt(ids, 21) == ids  # 20 + 1 new token fit
    assert gpt.shorten_prompt(ids, 20) == ids[1:]
    assert gpt.shorten_prompt(ids, 8) == ids[-7:]


def test_shorten_prompt_keeps_an_instructions_markers_around_the_end_of_its_text():
    tok = CharTokenizer.from_text("")
    ids = gpt.instruction_ids(tok, "abcdefghij")
    assert gpt.shorten_prompt(ids, 13) == ids
    assert gpt.shorten_prompt(ids, 8) == [INST_ID] + tok.encode("fghij") + [RESP_ID]


def test_decode_stream_emits_a_character_split_across_tokens_once_and_whole():
    tok = BPETokenizer([])  # bytes only: é takes two tokens, 世 three, 🙂 four
    text = "é世a🙂!"
    pieces = gpt.decode_stream(tok, iter(tok.encode(text)))
    assert next(pieces) == "é"  # streamed: the first character comes before the stream ends
    assert list(pieces) == ["世", "a", "🙂", "!"]


def test_decode_stream_shows_a_character_the_stream_stopped_inside():
    tok = BPETokenizer([])
    ids = tok.encode("a世")[:-1]
    assert list(gpt.decode_stream(tok, ids)) == ["a", "\ufffd"]


# ----------------------------------------------------------------------------------------------------
# 5. Checkpoints


def logits_of(model, idx):
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("options", VARIANTS)
def test_pretrained_checkpoint_round_trip_gives_identical_logits(tiny_gpt, tmp_path, options):
    tok = CharTokenizer.from_text("ünïcödé")
    model = tiny_gpt(vocab_size=tok.vocab_size, weight_std=0.3, **options)
    path = tmp_path / "run" / "ckpt.pt"
    gpt.save_checkpoint(path, model, tok, step=7, optimizer={"lr": 1e-3})
    loaded, loaded_tok, ckpt = gpt.load_model(path)
    idx = torch.tensor([tok.encode("Hello ünïcödé")])
    assert isinstance(loaded, GPT) and not loaded.training
    assert torch.equal(logits_of(loaded, idx), logits_of(model, idx))
    assert loaded_tok.to_dict() == tok.to_dict()
    assert ckpt["kind"] == "pretrained" and ckpt["step"] == 7 and ckpt["optimizer"] == {"lr": 1e-3}
    assert GPTConfig(**ckpt["config"]) == model.config


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_classifier_checkpoint_round_trip_gives_identical_logits(tiny_gpt, tmp_path, unicode_bpe, pool):
    model = GPTClassifier(tiny_gpt(vocab_size=unicode_bpe.vocab_size, weight_std=0.3), 2, pool).eval()
    path = tmp_path / "clf.pt"
    gpt.save_checkpoint(path, model, unicode_bpe, kind="classifier", labels=["ham", "spam"], pool=pool)
    loaded, loaded_tok, ckpt = gpt.load_model(path)
    idx = torch.tensor([unicode_bpe.encode("héllo 世界 and more")[:20]])  # longer than the context: two windows
    assert isinstance(loaded, GPTClassifier) and loaded.pool == pool
    assert torch.equal(logits_of(loaded, idx), logits_of(model, idx))
    assert loaded_tok.to_dict() == unicode_bpe.to_dict()
    assert ckpt["labels"] == ["ham", "spam"]


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'"{sys.executable}" -c "open(r\'{self.marker}\', \'w\').close()"',)


def test_loading_refuses_a_pickle_that_would_run_code(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": gpt.CHECKPOINT_FORMAT, "kind": "pretrained", "config": {}, "model": {},
                "tokenizer": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="not plain data"):
        gpt.load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proof the file is armed: an unsafe load does run its code
    assert marker.exists()


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.99])
def test_truncated_checkpoint_raises_a_clear_error(tiny_gpt, tmp_path, keep):
    path = tmp_path / "ckpt.pt"
    gpt.save_checkpoint(path, tiny_gpt(), CharTokenizer.from_text(""))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated") as error:
        gpt.load_checkpoint(path)
    assert str(path) in str(error.value)


def test_files_that_are_not_checkpoints_raise_clear_errors(tmp_path):
    text, other = tmp_path / "notes.txt", tmp_path / "other.pt"
    text.write_text("just some notes\n")
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="notes.txt"):
        gpt.load_checkpoint(text)
    with pytest.raises(CheckpointError, match="not a gpt.py checkpoint"):
        gpt.load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        gpt.load_checkpoint(tmp_path / "missing.pt")


def test_config_that_does_not_match_the_weights_raises_a_clear_error(tiny_gpt, tmp_path):
    tok, path = CharTokenizer.from_text(""), tmp_path / "ckpt.pt"
    gpt.save_checkpoint(path, tiny_gpt(vocab_size=tok.vocab_size), tok)
    ckpt = gpt.load_checkpoint(path)
    for change in ({"n_embd": 64}, {"n_layer": 3}, {"vocab_size": 110}, {"rope": True}):
        broken = {**ckpt, "config": {**ckpt["config"], **change}}
        with pytest.raises(CheckpointError, match="does not match"):
            gpt.model_from_checkpoint(broken)
    torch.save({**ckpt, "config": {**ckpt["config"], "n_embd": 64}}, path)
    with pytest.raises(CheckpointError, match="config does not match its weights") as error:
        gpt.load_model(path)
    assert str(error.value).startswith(f"{path}: ")


def checkpoint_dict(tiny_gpt, tmp_path, classifier=False):
    """A valid checkpoint's dict, to change by hand, and where to write it."""
    tok, path = CharTokenizer.from_text(""), tmp_path / "ckpt.pt"
    model = GPTClassifier(tiny_gpt(vocab_size=tok.vocab_size), 3) if classifier else tiny_gpt(vocab_size=tok.vocab_size)
    gpt.save_checkpoint(path, model, tok, **({"kind": "classifier", "labels": ["a", "b", "c"]} if classifier else {}))
    return torch.load(path, weights_only=True), path


def refusal(path, ckpt):
    """The message of the CheckpointError that loading ckpt, saved at path, raises."""
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as error:
        gpt.load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ")
    return str(error.value)


@pytest.mark.parametrize("tokenizer, message", BAD_TOKENIZERS)
def test_loading_names_what_is_wrong_with_the_tokenizer(tiny_gpt, tmp_path, tokenizer, message):
    ckpt, path = checkpoint_dict(tiny_gpt, tmp_path)
    assert message in refusal(path, {**ckpt, "tokenizer": tokenizer})


@pytest.mark.parametrize("change, message", BAD_CONFIGS + [
    ({"no_such_field": 1, "n_layers": 2}, "unknown config keys ['n_layers', 'no_such_field']: GPTConfig has ['vocab_size',"),
])
def test_loading_names_what_is_wrong_with_the_config(tiny_gpt, tmp_path, change, message):
    ckpt, path = checkpoint_dict(tiny_gpt, tmp_path)
    assert message in refusal(path, {**ckpt, "config": {**ckpt["config"], **change}})


@pytest.mark.parametrize("change, message", [
    ({"format": "gpt.py/0"}, "format 'gpt.py/0': this reads 'gpt.py/1'"),
    ({"kind": "base"}, "kind 'base': expected pretrained, classifier or instruct"),
    ({"config": [102, 16]}, "config and model must be dicts"),
    ({"model": None}, "config and model must be dicts"),
    ({"tokenizer": CharTokenizer.from_text("ünï世").to_dict()},
     "the tokenizer has 108 tokens but the model's embedding has 105 rows"),
    ({"tokenizer": BPETokenizer([]).to_dict()}, "the tokenizer has 264 tokens but the model's embedding has 105 rows"),
])
def test_loading_names_what_is_wrong_with_a_checkpoint(tiny_gpt, tmp_path, change, message):
    ckpt, path = checkpoint_dict(tiny_gpt, tmp_path)
    assert message in refusal(path, {**ckpt, **change})


@pytest.mark.parametrize("labels, message", [
    (None, "a classifier needs 'labels', a non-empty list of strings, not None"),
    ([], "a classifier needs 'labels', a non-empty list of strings, not []"),
    ("abc", "a classifier needs 'labels', a non-empty list of strings, not 'abc'"),
    (["a", 2, "c"], "a classifier needs 'labels', a non-empty list of strings, not ['a', 2, 'c']"),
    (["a", "b"], "2 labels, but the classifier head has 3 rows"),
])
def test_loading_names_what_is_wrong_with_a_classifiers_labels(tiny_gpt, tmp_path, labels, message):
    ckpt, path = checkpoint_dict(tiny_gpt, tmp_path, classifier=True)
    assert message in refusal(path, {**ckpt, "labels": labels})


def test_load_model_and_the_cli_report_a_hand_made_checkpoint_in_one_line(tiny_gpt, tmp_path, capsys):
    ckpt, path = checkpoint_dict(tiny_gpt, tmp_path)
    message = refusal(path, {**ckpt, "config": {**ckpt["config"], "dropout": 2.0}})
    with pytest.raises(CheckpointError, match=re.escape(message)):
        gpt.load_model(path)
    with pytest.raises(SystemExit) as exit:
        gpt.main(["--ckpt", str(path), "--device", "cpu"])
    assert exit.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"


def test_a_checkpoint_from_before_rotary_embeddings_still_loads(tiny_gpt, tmp_path):
    ckpt, path = checkpoint_dict(tiny_gpt, tmp_path)
    del ckpt["config"]["rope"]
    torch.save(ckpt, path)
    model, _, _ = gpt.load_model(path)
    assert not model.config.rope


def test_saves_into_one_folder_at_once_write_separate_temporary_files(tiny_gpt, tmp_path, monkeypatch):
    """A second save starts while the first is writing (as two processes sharing out/ may): with one
    shared temporary name the second would write into the first's file and take it away from under it."""
    tok, path = CharTokenizer.from_text(""), tmp_path / "ckpt.pt"
    first, second = tiny_gpt(vocab_size=tok.vocab_size, seed=0), tiny_gpt(vocab_size=tok.vocab_size, seed=1)
    real_save, temp_files = torch.save, []

    def save_while_another_saves(obj, f):
        temp_files.append(Path(f.name))
        if len(temp_files) == 1:
            gpt.save_checkpoint(path, second, tok)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_while_another_saves)
    gpt.save_checkpoint(path, first, tok)
    monkeypatch.undo()
    assert len(set(temp_files)) == 2 and all(f.parent == tmp_path and str(os.getpid()) in f.name for f in temp_files)
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind
    idx = random_ids(8, tok.vocab_size, seed=0)
    assert torch.equal(logits_of(gpt.load_model(path)[0], idx), logits_of(first, idx))  # the last to finish


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tiny_gpt, tmp_path, monkeypatch):
    tok, path = CharTokenizer.from_text(""), tmp_path / "ckpt.pt"
    old, new = tiny_gpt(vocab_size=tok.vocab_size, seed=0), tiny_gpt(vocab_size=tok.vocab_size, seed=1)
    gpt.save_checkpoint(path, old, tok)
    real_save = torch.save

    def save_then_crash(obj, f):
        real_save(obj, f)
        f.seek(f.tell() // 2)
        f.truncate()  # half the bytes are on disk when the crash comes
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(OSError, match="No space left"):
        gpt.save_checkpoint(path, new, tok)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # the half-written temporary file is gone
    idx = random_ids(8, tok.vocab_size, seed=0)
    assert torch.equal(logits_of(gpt.load_model(path)[0], idx), logits_of(old, idx))


# ----------------------------------------------------------------------------------------------------
# 6. Devices and the command line


def test_pick_device_cpu_is_always_available():
    assert gpt.pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["nonsense", "cuda:x", "meta", "CPU", "cuda:-1"])
def test_pick_device_rejects_names_that_are_not_devices(name):
    with pytest.raises(ValueError, match=f"unknown device '{name}': use auto, cpu, cuda"):
        gpt.pick_device(name)


def pretend_hardware(monkeypatch, cuda_gpus, mps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_gpus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda_gpus, mps, expected", [(1, True, "cuda"), (0, True, "mps"), (0, False, "cpu")])
def test_pick_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda_gpus, mps, expected):
    pretend_hardware(monkeypatch, cuda_gpus, mps)
    assert gpt.pick_device("auto").type == expected


@pytest.mark.parametrize("name, message", [("cuda", "sees no CUDA GPU"), ("cuda:0", "sees no CUDA GPU"),
                                           ("mps", "MPS was asked for, but is not available")])
def test_pick_device_refuses_an_explicit_device_that_is_missing(monkeypatch, name, message):
    pretend_hardware(monkeypatch, cuda_gpus=0, mps=False)
    with pytest.raises(ValueError, match=message) as error:
        gpt.pick_device(name)
    assert "--" not in str(error.value)  # a library function: its callers, not it, know their flags


def test_pick_device_checks_the_cuda_index(monkeypatch):
    pretend_hardware(monkeypatch, cuda_gpus=2, mps=False)
    assert gpt.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="'cuda:2' was asked for, but this torch build sees 2 CUDA GPU"):
        gpt.pick_device("cuda:2")


@pytest.fixture
def char_checkpoint(tiny_gpt, tmp_path):
    tok = CharTokenizer.from_text("")
    model = tiny_gpt(vocab_size=tok.vocab_size, block_size=32, weight_std=0.3)
    path = tmp_path / "ckpt.pt"
    gpt.save_checkpoint(path, model, tok)
    return path, model, tok


def test_cli_prints_the_prompt_and_its_greedy_continuation(char_checkpoint, capsys):
    path, model, tok = char_checkpoint
    gpt.main(["--ckpt", str(path), "--prompt", "Hello", "--max_new_tokens", "5", "--temperature", "0",
              "--device", "cpu"])
    prompt = torch.tensor([tok.encode("Hello")])
    new = list(model.generate_stream(prompt, 5, temperature=0, stop_ids=(EOS_ID,)))
    assert capsys.readouterr().out == "Hello" + tok.decode(new) + "\n"


def test_cli_prints_characters_that_span_several_bpe_tokens(tiny_gpt, tmp_path, capsys, monkeypatch):
    tok = BPETokenizer([])  # bytes only: every non-ASCII character takes 2-4 tokens
    path = tmp_path / "ckpt.pt"
    gpt.save_checkpoint(path, tiny_gpt(vocab_size=tok.vocab_size), tok)
    text = "é世🙂!"
    monkeypatch.setattr(GPT, "generate_stream", lambda self, idx, n, **sampling: iter(tok.encode(text)))
    gpt.main(["--ckpt", str(path), "--prompt", "a", "--max_new_tokens", "5", "--device", "cpu"])
    assert capsys.readouterr().out == "a" + text + "\n"


def test_cli_samples_text_as_a_script(char_checkpoint):
    path, _, _ = char_checkpoint
    result = subprocess.run([sys.executable, str(GPT_PY), "--ckpt", str(path), "--prompt", "Once upon",
                             "--max_new_tokens", "5", "--seed", "0", "--device", "cpu"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon") and len(result.stdout) > len("Once upon\n")


def test_cli_rejects_an_empty_prompt_without_a_traceback(char_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit:
        gpt.main(["--ckpt", str(char_checkpoint[0]), "--prompt", "", "--device", "cpu"])
    assert exit.value.code == 2
    assert "--prompt is empty" in capsys.readouterr().err


def test_cli_reports_a_missing_checkpoint_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        gpt.main(["--ckpt", str(tmp_path / "nope.pt"), "--device", "cpu"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "nope.pt: no such checkpoint file" in err and "Traceback" not in err


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "temperature=-1.0: expected a finite number >= 0 (0 is greedy)"),
    (["--temperature", "nan"], "temperature=nan: expected a finite number >= 0 (0 is greedy)"),
    (["--top_p", "2"], "top_p=2.0: expected (0, 1]"),
    (["--top_k", "0"], "top_k=0: expected an int >= 1 (None: off)"),
    (["--top_k", "-5"], "top_k=-5: expected an int >= 1 (None: off)"),
    (["--max_new_tokens", "-1"], "max_new_tokens=-1: expected >= 0"),
])
def test_cli_rejects_bad_sampling_values_in_one_line(char_checkpoint, capsys, flags, message):
    with pytest.raises(SystemExit) as exit:
        gpt.main(["--ckpt", str(char_checkpoint[0]), "--device", "cpu", *flags])
    assert exit.value.code == 2
    assert capsys.readouterr() == ("", f"error: {message}\n")


def test_cli_shortens_a_long_instruction_keeping_its_markers_and_says_so(tiny_gpt, tmp_path, capsys):
    tok, path = CharTokenizer.from_text(""), tmp_path / "instruct.pt"
    model = tiny_gpt(vocab_size=tok.vocab_size, block_size=16, weight_std=0.3)
    gpt.save_checkpoint(path, model, tok, kind="instruct")
    gpt.main(["--ckpt", str(path), "--prompt", "abcdefghijklmnopqrstuvwxyz", "--max_new_tokens", "3",
              "--temperature", "0", "--device", "cpu"])
    out, err = capsys.readouterr()
    kept = [INST_ID] + tok.encode("nopqrstuvwxyz") + [RESP_ID]  # 15 tokens: one new token still fits in 16
    new = list(model.generate_stream(torch.tensor([kept]), 3, temperature=0, stop_ids=(EOS_ID,)))
    assert out == "<inst>nopqrstuvwxyz<resp>" + tok.decode(new) + "\n"
    assert err == ("note: the prompt has 28 tokens; kept 15 to leave room for an answer in the context of 16 "
                   "(the last ones, and any <inst> and <resp>)\n")


def test_cli_shortens_a_long_plain_prompt_to_its_end(char_checkpoint, capsys):
    path, _, _ = char_checkpoint  # block_size 32
    gpt.main(["--ckpt", str(path), "--prompt", "x" * 20 + "abcdefghijklmnopqrstuvwxyz", "--max_new_tokens", "1",
              "--device", "cpu"])
    out, err = capsys.readouterr()
    _, _, tok = char_checkpoint
    assert out.startswith("x" * 5 + "abcdefghijklmnopqrstuvwxyz") and out.endswith("\n")
    assert out[31:-1] in {tok.decode([i]) for i in range(tok.vocab_size)}  # one new token, whatever it is
    assert err.startswith("note: the prompt has 46 tokens; kept 31 ")


def test_cli_refuses_to_sample_from_a_classifier(tiny_gpt, tmp_path, capsys):
    tok, path = CharTokenizer.from_text(""), tmp_path / "clf.pt"
    model = GPTClassifier(tiny_gpt(vocab_size=tok.vocab_size), 3)
    gpt.save_checkpoint(path, model, tok, kind="classifier", labels=["a", "b", "c"])
    with pytest.raises(SystemExit) as exit:
        gpt.main(["--ckpt", str(path), "--device", "cpu"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"error: {path} is a classifier; it labels text rather than writing it\n"


# ----------------------------------------------------------------------------------------------------
# 7. Dependencies


def test_gpt_py_imports_only_torch_and_the_standard_library():
    imported = set()
    for node in ast.walk(ast.parse(GPT_PY.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "gpt.py must not import from a package it sits in"
            imported.add(node.module.split(".")[0])
    assert "torch" in imported
    assert imported <= set(sys.stdlib_module_names) | {"torch"}, imported - set(sys.stdlib_module_names)
