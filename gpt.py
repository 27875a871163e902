"""gpt.py: a GPT you can read in one sitting, from raw text to sampled text.

Reading order, which is also the order the ideas build on each other:
  1. tokenizers    text <-> integer ids (characters, then byte-level BPE)
  2. attention     causal self-attention, first by hand, then the fused kernel; rotary positions
  3. the model     MLP, Block, GPT (the GPT-2 architecture, scaled down, rotary positions optional)
  4. heads         a classifier on the GPT's hidden states, how to freeze the backbone, LoRA adapters
  5. sampling      temperature, top-k, top-p, a KV cache so each new token costs one step, streamed text
  6. checkpoints   one file with config, weights and tokenizer, written atomically, checked on load
     int8          a smaller, faster model for CPU inference: int8 weights and products
  7. GPT-2         OpenAI's pretrained weights and tokenizer from a Hugging Face folder: load_gpt2("gpt2")
  8. devices, CLI  `python gpt.py --ckpt out/kjv/ckpt.pt --prompt "In the beginning"`

Depends on torch and the standard library only, so it can be copied into any project.
"""
import argparse
import functools
import itertools
import json
import math
import os
import re
import struct
import sys
import unicodedata
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


def require(ok, message):
    """Every error for people in this file: one ValueError naming the input and what was expected."""
    if not ok:
        raise ValueError(message)


# ----------------------------------------------------------------------------------------------------
# 1. Tokenizers

# Every tokenizer puts the special tokens first, so their ids are the same everywhere. The last three
# mark the roles of a conversation; checkpoints from before they existed have only the first five.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>", "<inst>", "<resp>", "<system>", "<user>", "<assistant>")
PAD_ID, UNK_ID, EOS_ID, INST_ID, RESP_ID, SYSTEM_ID, USER_ID, ASSISTANT_ID = range(len(SPECIAL_TOKENS))
LEGACY_SPECIALS = 5


class CharTokenizer:
    """One token per character: no word is ever unknown; sequences are long. Vocabulary: the specials, every
    printable ASCII character, newline and tab (any English prompt encodes), then the corpus's other characters."""

    def __init__(self, chars, n_special=len(SPECIAL_TOKENS)):
        self.chars, self.n_special = list(chars), n_special
        self.stoi = {c: i for i, c in enumerate(self.chars, start=n_special)}
        self.vocab_size = n_special + len(self.chars)

    @classmethod
    def from_text(cls, text):
        base = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
        return cls(base + sorted(set(text) - set(base)))

    def encode(self, text):
        # Plain text never yields a special id: a user typing "<eos>" gets five characters.
        return [self.stoi.get(c, UNK_ID) for c in text]

    def decode(self, ids):
        n = self.n_special
        return "".join(SPECIAL_TOKENS[i] if i < n else self.chars[i - n] for i in ids)

    def to_dict(self):
        return {"type": "char", "chars": self.chars, "specials": list(SPECIAL_TOKENS[:self.n_special])}


# Pre-split text into words so merges never cross a word boundary: contractions, letters with one leading
# space, up to three digits, runs of punctuation, whitespace. Every character falls in one: lossless.
BPE_SPLIT = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


class BPETokenizer:
    """Byte-level byte-pair encoding, trained from scratch: from the 256 byte values (so any string encodes),
    merge the most frequent adjacent pair into a new token, again and again. Ids: specials, bytes, merges."""

    def __init__(self, merges, n_special=len(SPECIAL_TOKENS)):
        self.merges = [tuple(pair) for pair in merges]
        self.n_special = self.byte0 = n_special  # byte b is token byte0 + b
        first_merge = self.byte0 + 256
        self.rank = {pair: first_merge + i for i, pair in enumerate(self.merges)}
        self.vocab_size = first_merge + len(self.merges)
        # A special token's bytes are its name, so decode shows it; no merge ever contains one.
        self.token_bytes = [name.encode() for name in SPECIAL_TOKENS[:n_special]] + [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        self.cache = {}

    @classmethod
    def train(cls, text, vocab_size):
        """Learn vocab_size - len(SPECIAL_TOKENS) - 256 merges. Counts run over unique words weighted by
        frequency, and after each merge only the words containing the merged pair are updated."""
        byte0 = len(SPECIAL_TOKENS)
        word_counts = Counter(BPE_SPLIT.findall(text))
        words = [[byte0 + b for b in w.encode("utf-8")] for w in word_counts]
        freqs = list(word_counts.values())
        pair_counts, words_with = Counter(), defaultdict(set)
        for i, (w, f) in enumerate(zip(words, freqs)):
            for pair in zip(w, w[1:]):
                pair_counts[pair] += f
                words_with[pair].add(i)
        merges = []
        for new_id in range(byte0 + 256, vocab_size):
            if not pair_counts:
                break
            pair = max(pair_counts, key=pair_counts.get)
            merges.append(pair)
            for i in words_with.pop(pair):
                w, f = words[i], freqs[i]
                for old in zip(w, w[1:]):
                    pair_counts[old] -= f
                    if pair_counts[old] <= 0:
                        del pair_counts[old]
                words[i] = w = _merge(w, pair, new_id)
                for new in zip(w, w[1:]):
                    pair_counts[new] += f
                    words_with[new].add(i)
        return cls(merges)

    def _encode_word(self, word):
        if word not in self.cache:
            ids = [self.byte0 + b for b in word.encode("utf-8")]
            # Apply the earliest-learned merge first, exactly as training did, until no pair has been learned.
            while (pair := min(zip(ids, ids[1:]), key=lambda p: self.rank.get(p, math.inf), default=None)) in self.rank:
                ids = _merge(ids, pair, self.rank[pair])
            self.cache[word] = ids
        return self.cache[word]

    def encode(self, text):
        return [i for word in BPE_SPLIT.findall(text) for i in self._encode_word(word)]

    def decode(self, ids):
        # Bytes are joined before decoding, so a character whose bytes span tokens comes out whole.
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def to_dict(self):
        return {"type": "bpe", "merges": [list(p) for p in self.merges], "specials": list(SPECIAL_TOKENS[:self.n_special])}


def _merge(ids, pair, new_id):
    """Replace every non-overlapping occurrence of pair in ids by new_id, left to right."""
    out = []
    for i in ids:
        if out and (out[-1], i) == pair:  # a just-made new_id never matches: pair holds older ids
            out[-1] = new_id
        else:
            out.append(i)
    return out


def tokenizer_from_dict(d):
    """The tokenizer to_dict described, checked first: a hand-edited dict fails here, by name, not as a bad id."""
    kind = d.get("type") if isinstance(d, dict) else None
    require(kind in ("char", "bpe", "gpt2"), f"unknown tokenizer type {kind!r}: expected 'char', 'bpe' or 'gpt2'")
    key = "chars" if kind == "char" else "merges"
    require(isinstance(d.get(key), list), f"a {kind} tokenizer needs {key!r}, a list, not {d.get(key)!r:.40}")
    specials = d.get("specials", list(SPECIAL_TOKENS[:LEGACY_SPECIALS]))  # saved before the roles: the first five
    require(specials in (list(SPECIAL_TOKENS[:LEGACY_SPECIALS]), list(SPECIAL_TOKENS)),
            f"{kind} tokenizer: 'specials' must be the first {LEGACY_SPECIALS} or all of {list(SPECIAL_TOKENS)}")
    if kind == "gpt2":  # section 7; the tokenizer checks its vocabulary and merges itself
        return GPT2Tokenizer(d.get("vocab"), d["merges"], len(specials))
    if kind == "char":  # Counter only runs once every entry is a string, so hashable
        bad = [c for c in d["chars"] if not isinstance(c, str) or len(c) != 1] or \
            [c for c, n in Counter(d["chars"]).items() if n > 1]
        require(not bad, f"char tokenizer: 'chars' must be distinct single characters, not {bad[:3]!r:.60}")
        return CharTokenizer(d["chars"], len(specials))
    byte0 = len(specials)
    for i, pair in enumerate(d["merges"], start=byte0 + 256):  # i: the id this merge makes
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(type(t) is int and byte0 <= t < i for t in pair)
        require(ok, f"bpe tokenizer: merge {pair!r:.40} makes id {i}, so it must pair two ids from {byte0} to {i - 1}")
    return BPETokenizer(d["merges"], byte0)


def instruction_ids(tokenizer, instruction, input=""):
    """The prompt protocol of instruction tuning: <inst>instruction[\\ninput]<resp>. The model's
    answer follows and ends with <eos>. Special ids are added here, never parsed from user text."""
    text = instruction + ("\n" + input if input else "")
    return [INST_ID] + tokenizer.encode(text) + [RESP_ID]


# ----------------------------------------------------------------------------------------------------
# 2. Attention


def causal_mask(t_query, t_key, device):
    """(t_query, t_key) booleans, True where attending is allowed. Queries are the last t_query of
    the t_key positions (with a KV cache t_query < t_key), so query i sits at t_key - t_query + i."""
    return torch.ones(t_query, t_key, dtype=torch.bool, device=device).tril(diagonal=t_key - t_query)


def explicit_attention(q, k, v):
    """Attention written out: softmax(q k^T / sqrt(d) + causal mask) v. Returns (output (B, nh, Tq, hs),
    weights (B, nh, Tq, Tk)) for q: (B, nh, Tq, hs), k and v: (B, nh, Tk, hs)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, Tq, Tk)
    weights = F.softmax(scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf")), dim=-1)
    return weights @ v, weights


def rotary_tables(block_size, head_size, base=10000.0):
    """cos and sin, each (block_size, head_size // 2), for rotary position embeddings (RoPE, Su et al.,
    2021): position p turns the i-th pair of a query or key by the angle p * base^(-2i / head_size)."""
    freqs = base ** (-torch.arange(0, head_size, 2).float() / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(block_size).float(), freqs)  # (block_size, hs/2)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotate pairs (x[..., i], x[..., i + hs/2]) of x (B, nh, T, hs) by angles with cos, sin (T, hs/2). A query
    at p and a key at s meet at an angle set by p - s alone: attention sees relative positions."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def qkv(self, x, rotary=None):
        """x (B, T, C) -> q, k, v, each (B, nh, T, hs); q and k rotated when rotary (cos, sin) is given."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:  # rotate before caching: a cached key keeps the position it was made at
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        return q, k, v

    def forward(self, x, cache=None, rotary=None):
        """x (B, T, C) -> (B, T, C). cache: a dict holding this layer's past keys and values, extended
        in place. rotary: (cos, sin) for these T positions when the model uses rotary embeddings."""
        B, T, C = x.size()
        q, k, v = self.qkv(x, rotary)
        if cache is not None:  # keys and values grow to (B, nh, T_past + T, hs)
            k = cache["k"] = torch.cat([cache["k"], k], dim=2) if "k" in cache else k
            v = cache["v"] = torch.cat([cache["v"], v], dim=2) if "v" in cache else v
        # torch's fused kernel computes explicit_attention without keeping the weights. Its is_causal aligns
        # the mask top-left, which is wrong when queries follow cached keys: those get causal_mask instead.
        mask = None if T == k.size(2) else causal_mask(T, k.size(2), x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


# ----------------------------------------------------------------------------------------------------
# 3. The model


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU, project back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.gelu = config.gelu

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.gelu)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, rotary=None):
        x = x + self.attn(self.ln_1(x), cache=cache, rotary=rotary)  # by keyword, so hooks see them
        return x + self.mlp(self.ln_2(x))


@dataclass
class GPTConfig:
    vocab_size: int = 105  # the smallest CharTokenizer: 8 special tokens, 95 printable ASCII, newline, tab
    block_size: int = 128  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    rope: bool = False  # rotary position embeddings in attention instead of learned absolute ones
    gelu: str = "none"  # F.gelu's approximate: "none", the exact GELU, or "tanh", the form GPT-2 was trained with

    def __post_init__(self):
        """Check every field, so a bad config fails here, by name, rather than deep inside torch."""
        for f in fields(self):
            value = getattr(self, f.name)
            ok = isinstance(value, (int, float) if f.type is float else f.type)  # a dropout of 0 is fine, True is not
            ok = ok and isinstance(value, bool) == (f.type is bool) and (f.type is not int or value > 0)
            require(ok, f"{f.name}={value!r}: expected " + ("a positive int" if f.type is int else f.type.__name__))
        require(0 <= self.dropout < 1, f"dropout={self.dropout}: expected 0 <= dropout < 1")
        require(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        head_size = self.n_embd // self.n_head
        require(not self.rope or head_size % 2 == 0, f"rope turns pairs, so needs an even head size, not {head_size}")
        require(self.gelu in ("none", "tanh"), f"gelu={self.gelu!r}: expected 'none' (exact) or 'tanh'")


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        if config.rope:  # positions enter inside attention; persistent=False keeps them out of checkpoints
            cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embeddings
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: one matrix maps ids to vectors and vectors back to logits (Press & Wolf, 2017).
        self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # GPT-2: scale each residual branch's output projection so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_params(self):
        """Parameters, less position embeddings (they do no compute); tied token embeddings count once."""
        return sum(p.numel() for p in self.parameters()) - (0 if self.config.rope else self.wpe.weight.numel())

    def hidden_states(self, idx, cache=None):
        """idx (B, T) token ids -> (B, T, C) after the final norm. cache: one dict per layer, or None."""
        past = cache[0]["k"].size(2) if cache and "k" in cache[0] else 0
        T = idx.size(1)
        require(past + T <= self.config.block_size, f"{past + T} tokens exceed block_size {self.config.block_size}")
        x = self.wte(idx)  # (B, T, C)
        if not self.config.rope:
            x = x + self.wpe(torch.arange(past, past + T, device=idx.device))
        rotary = (self.rope_cos[past:past + T], self.rope_sin[past:past + T]) if self.config.rope else None  # (T, hs/2)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache else None, rotary)
        return self.ln_f(x)

    def forward(self, idx, targets=None, cache=None):
        """Returns (logits (B, T, vocab), mean cross-entropy over targets that are not -100, or None)."""
        logits = self.lm_head(self.hidden_states(idx, cache))
        if targets is None:
            return logits, None
        # ignore_index=-100: prompt and padding positions in finetuning contribute nothing.
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)

    # Sampling lives on the model, as in nanoGPT; the pieces it uses are in section 5.
    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                        stop_ids=(), seed=None, use_cache=True):
        """Yield up to max_new_tokens new token ids (ints), one at a time, after the prompt idx (1, T).
        Stops after yielding an id in stop_ids. With use_cache, each step feeds only the newest token."""
        require(idx.dim() == 2 and len(idx) == 1 and idx.numel(), f"prompt shape {tuple(idx.shape)}: expected (1, T>0)")
        check_sampling(temperature, top_k, top_p, max_new_tokens)  # once, not at every token
        tokens = idx[0].tolist()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        block, cache = self.config.block_size, None
        start = max(0, len(tokens) - block)  # a long prompt keeps its tail
        for _ in range(max_new_tokens):
            # The window stays put while the text fits, then jumps to keep the newest half block: sliding by
            # one token would shift every position and void the KV cache. Recomputing uses the same windows.
            new_start = start if len(tokens) - start <= block else len(tokens) - (block + 1) // 2
            refill = cache is None or new_start != start  # the first step, or the window moved: positions changed
            cache = [{} for _ in self.blocks] if refill else cache
            x = tokens[-1:] if use_cache and not refill else tokens[new_start:]
            start = new_start
            logits, _ = self(torch.tensor([x], device=idx.device), cache=cache if use_cache else None)
            next_id = sample_next(logits[0, -1], temperature, top_k, top_p, generator, check=False)
            tokens.append(next_id)
            yield next_id
            if next_id in stop_ids:
                return

    def generate(self, idx, max_new_tokens, **sampling):
        """The prompt idx (1, T) followed by the generated ids: (1, T + n)."""
        new = list(self.generate_stream(idx, max_new_tokens, **sampling))
        return torch.cat([idx, torch.tensor([new], dtype=idx.dtype, device=idx.device)], dim=1)


# ----------------------------------------------------------------------------------------------------
# 4. Heads: classification on the pretrained backbone


class GPTClassifier(nn.Module):
    """A linear head on a pooled hidden state. pool="last": the last real token's, the only one that has
    seen the whole text in a causal model; pool="mean": the mean over all real tokens. A text longer than
    the context is read in windows of block_size tokens, pooled together. Inputs are right-padded with PAD_ID."""

    def __init__(self, gpt, n_classes, pool="last"):
        super().__init__()
        require(pool in ("last", "mean"), f"unknown pooling {pool!r}: use last or mean")
        self.gpt, self.pool = gpt, pool
        self.head = nn.Linear(gpt.config.n_embd, n_classes)

    def forward(self, idx, targets=None):
        block = self.gpt.config.block_size
        h = torch.cat([self.gpt.hidden_states(idx[:, i:i + block]) for i in range(0, idx.size(1), block)], 1)  # (B, T, C)
        real = idx != PAD_ID  # (B, T)
        if self.pool == "mean":
            pooled = (h * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # (B, C)
        else:
            pooled = h[torch.arange(idx.size(0), device=idx.device), (real.sum(1) - 1).clamp(min=0)]  # (B, C)
        logits = self.head(pooled)  # (B, n_classes)
        return logits, F.cross_entropy(logits.float(), targets) if targets is not None else None


def freeze(classifier, strategy, n=0):
    """Choose what finetuning may change. "none": everything trains. "head": only the head.
    "last_n": the head, the final norm and the last n blocks."""
    require(strategy in ("none", "head", "last_n"), f"unknown freeze strategy {strategy!r}: use none, head or last_n")
    classifier.requires_grad_(strategy == "none")
    classifier.head.requires_grad_(True)
    if strategy == "last_n":
        for module in [classifier.gpt.ln_f, *classifier.gpt.blocks[max(0, len(classifier.gpt.blocks) - n):]]:
            module.requires_grad_(True)


# LoRA (Hu et al., 2021): rather than change a pretrained weight W (out, in), learn a low-rank change to it,
# W + (alpha / r) B A with B (out, r) and A (r, in), W frozen. A projection of GPT-2 124M then trains r * (in + out)
# numbers instead of in * out (at r = 8, 1.4% of them), and only those need gradients and optimizer state. Folded
# into W when saved, the adapters cost nothing at inference, and the weights load into a plain GPT.


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: x -> base(x) + (alpha / rank) (x A^T) B^T."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.scale = base.requires_grad_(False), alpha / rank
        # A starts random (std 1/sqrt(in): x A^T keeps the scale of x), B at zero: the update B A starts at zero.
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features, device=device) / math.sqrt(base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale  # (B, T, in) -> (B, T, r) -> (B, T, out)

    def merged_weight(self):
        """W + (alpha / rank) B A, (out, in): the weight of a plain Linear that computes the same."""
        return (self.base.weight + self.scale * self.lora_B @ self.lora_A).detach()


def add_lora(model, rank, alpha):
    """Freeze model and wrap every attention and MLP projection in it (c_attn, c_proj, c_fc) in a LoRALinear:
    then only the adapters train. rank 0 is LoRA off: model is left as it is. Returns model."""
    if rank == 0:
        return model
    model.requires_grad_(False)
    for module in list(model.modules()):
        if isinstance(module, (CausalSelfAttention, MLP)):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, name, LoRALinear(child, rank, alpha))
    return model


def merged_state_dict(model):
    """model's state dict with each LoRALinear folded into a plain Linear's weight and bias: the same model
    without adapters, which loads into a GPT (or GPTClassifier) with no LoRA code. Without adapters: state_dict()."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            for key in ("base.weight", "base.bias", "lora_A", "lora_B"):
                state.pop(f"{name}.{key}", None)
            state[f"{name}.weight"] = module.merged_weight()
            if module.base.bias is not None:
                state[f"{name}.bias"] = module.base.bias.detach()
    return state


def lora_adapters(model):
    """{name: tensor} of model's adapters, empty without LoRA: with the merged weights, all a run needs to resume."""
    return {name: p.detach() for name, p in model.named_parameters() if name.endswith(("lora_A", "lora_B"))}


@torch.no_grad()
def load_lora(model, adapters):
    """Put saved adapters (lora_adapters) back on a model that holds the merged weights they were saved with and
    was then given adapters by add_lora: each frozen weight becomes merged - (alpha / r) B A, W again up to rounding."""
    own = lora_adapters(model)
    require(isinstance(adapters, dict) and adapters.keys() == own.keys() and
            all(torch.is_tensor(adapters[k]) and adapters[k].shape == own[k].shape for k in own),
            f"the saved adapters do not fit this model's: expected {len(own)} tensors like {next(iter(own), None)!r}")
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            module.lora_A.copy_(adapters[f"{name}.lora_A"])
            module.lora_B.copy_(adapters[f"{name}.lora_B"])
            module.base.weight -= module.scale * module.lora_B @ module.lora_A


# ----------------------------------------------------------------------------------------------------
# 5. Sampling


def check_sampling(temperature=1.0, top_k=None, top_p=None, max_new_tokens=0):
    """A bad setting fails here by name, not as NaN probabilities or an index error deep in torch."""
    require(isinstance(temperature, (int, float)) and 0 <= temperature < math.inf, f"temperature={temperature!r}: "
            "expected a finite number >= 0 (0 is greedy)")
    require(top_k is None or type(top_k) is int and top_k >= 1, f"top_k={top_k!r}: expected an int >= 1 (None: off)")
    require(top_p is None or isinstance(top_p, (int, float)) and 0 < top_p <= 1, f"top_p={top_p!r}: expected (0, 1]")
    require(type(max_new_tokens) is int and max_new_tokens >= 0, f"max_new_tokens={max_new_tokens!r}: expected >= 0")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None, check=True):
    """Pick the next id from logits (vocab,). temperature 0 is greedy; top_k keeps the k likeliest
    tokens; top_p keeps the smallest set whose probability reaches p (nucleus sampling)."""
    if check:  # generate_stream checks once and passes False
        check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float().cpu() / temperature  # sample on the CPU so a seed gives the same text anywhere
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = torch.sort(F.softmax(logits, dim=-1), descending=True)
        outside = probs.cumsum(0) - probs >= top_p  # the mass before this token already reached p
        logits[order[outside]] = float("-inf")
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator))


def shorten_prompt(ids, block_size):
    """The prompt ids cut so that they and at least one new token fit in block_size: its last tokens,
    which the next token follows. An instruction keeps <inst> and <resp> around the end of its text."""
    room = block_size - 1
    if len(ids) > room >= 3 and ids[0] == INST_ID and ids[-1] == RESP_ID:
        return [INST_ID, *ids[len(ids) - room + 1:-1], RESP_ID]
    return list(ids[max(0, len(ids) - room):])


def decode_stream(tokenizer, ids):
    """Text pieces for a stream of token ids, each yielded once whole: a character can span several BPE
    tokens, and until all its bytes are in, decode ends with U+FFFD, its mark for an unfinished one."""
    pending = []
    for i in ids:
        pending.append(i)
        text = tokenizer.decode(pending)
        if not text.endswith("\ufffd"):
            yield text
            pending = []
    if pending:  # the stream ended inside a character: show what there is
        yield tokenizer.decode(pending)


# ----------------------------------------------------------------------------------------------------
# 6. Checkpoints

CHECKPOINT_FORMAT = "gpt.py/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path, model, tokenizer, kind="pretrained", **extra):
    """Write config, weights, tokenizer and any extras to path atomically: a crash while writing leaves the
    previous file intact, as the new one, written to a temporary file of its own, only replaces it once complete.
    LoRA adapters are folded into the weights, so the file loads without them."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    gpt = model.gpt if isinstance(model, GPTClassifier) else model
    payload = {"format": CHECKPOINT_FORMAT, "kind": kind, "config": asdict(gpt.config),
               "model": merged_state_dict(model), "tokenizer": tokenizer.to_dict(), **extra}
    if adapters := lora_adapters(model):  # unmerged too, so that a run can resume training them (gpt.load_lora)
        payload["lora"] = adapters
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint and check all but its weights, so a hand-made or mismatched file fails here, by
    name. weights_only=True refuses pickled objects that are not plain data: no crafted code runs on load."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt, truncated or unsafe files
        reason = "it holds objects that are not plain data, refused for safety" if "unsupported global" in str(e).lower() \
            else "the file is truncated or not a torch checkpoint"
        raise CheckpointError(f"{path}: cannot load checkpoint: {reason} ({type(e).__name__})") from None
    required, names = {"format", "kind", "config", "model", "tokenizer"}, [f.name for f in fields(GPTConfig)]
    try:
        require(isinstance(ckpt, dict) and required <= set(ckpt), f"not a gpt.py checkpoint (it needs the keys "
                f"{sorted(required)})")
        require(ckpt["format"] == CHECKPOINT_FORMAT, f"format {ckpt['format']!r}: this reads {CHECKPOINT_FORMAT!r}")
        require(ckpt["kind"] in ("pretrained", "classifier", "instruct"),
                f"kind {ckpt['kind']!r}: expected pretrained, classifier or instruct")
        require(isinstance(ckpt["config"], dict) and isinstance(ckpt["model"], dict), "config and model must be dicts")
        unknown = sorted(set(ckpt["config"]) - set(names))
        require(not unknown, f"unknown config keys {unknown}: GPTConfig has {names}")
        config, tokenizer = GPTConfig(**ckpt["config"]), tokenizer_from_dict(ckpt["tokenizer"])
        require(tokenizer.vocab_size <= config.vocab_size, f"the tokenizer has {tokenizer.vocab_size} tokens but the "
                f"model's embedding has {config.vocab_size} rows")
        if ckpt["kind"] == "classifier":
            labels, head = ckpt.get("labels"), ckpt["model"].get("head.weight", [])
            require(isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels),
                    f"a classifier needs 'labels', a non-empty list of strings, not {labels!r:.60}")
            require(len(head) == len(labels), f"{len(labels)} labels, but the classifier head has {len(head)} rows")
    except (TypeError, ValueError) as e:  # TypeError: a value of a type no check above foresaw
        raise CheckpointError(f"{path}: {e}") from None
    return ckpt


def model_from_checkpoint(ckpt, source="checkpoint"):
    """The GPT, or GPTClassifier, of a checkpoint that load_checkpoint read, with its weights."""
    try:
        model = GPT(GPTConfig(**ckpt["config"]))
        if ckpt["kind"] == "classifier":
            model = GPTClassifier(model, len(ckpt["labels"]), ckpt.get("pool", "last"))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{source}: config does not match its weights: {str(e)[:300]}") from None
    return model


def load_model(path, device="cpu"):
    """(model in eval mode on device, tokenizer, raw checkpoint dict)."""
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, path).to(device).eval(), tokenizer_from_dict(ckpt["tokenizer"]), ckpt


# ----------------------------------------------------------------------------------------------------
# Int8 inference on the CPU

INT8_MIN_WIDTH = 384  # int8 generated 1.6x faster than float32 at 6 x 384, 0.8x at the default 4 x 128 (README)


def use_int8(quantize, config, device):
    """Whether to run a model in int8, for quantize "none", "int8" or "auto". auto: on the CPU from INT8_MIN_WIDTH
    wide, where int8 measured faster with the validation loss unchanged to 0.001 nats; narrower models spend their
    time outside the matrix products, and quantizing each input then costs more than the int8 products save."""
    require(quantize in ("auto", "none", "int8"), f"quantize={quantize!r}: expected auto, none or int8")
    return quantize == "int8" or quantize == "auto" and device.type == "cpu" and config.n_embd >= INT8_MIN_WIDTH


def quantize_int8(model):
    """The model, changed in place, with each nn.Linear swapped for torch's dynamically quantized one: weights
    stored as int8 with one scale per output row (a quarter of the bytes), each input quantized to int8 as it
    arrives, products summed in int32, outputs back in float32. Embeddings, norms, attention's own products and
    sampling stay float32. Faster only where matrix products dominate: wide models (README, Serving)."""
    require(all(p.device.type == "cpu" for p in model.parameters()), "int8 runs on the CPU only: use device cpu")
    # torch.ao.quantization is deprecated in favour of the separate torchao package, yet works in the torch this
    # project pins (2.13) and needs nothing more. We use it knowingly, so its warnings are silenced; imported
    # here, so that a torch without it fails only when int8 is asked for.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


# ----------------------------------------------------------------------------------------------------
# 7. GPT-2: OpenAI's pretrained weights and tokenizer, from a Hugging Face folder
#
# GPT-2 124M is the GPT of section 3 at full size: n_layer=12, n_head=12, n_embd=768, block_size=1024, learned
# positions and the tanh form of GELU. A folder as Hugging Face publishes it loads into it with no other library:
#     model, tokenizer = load_gpt2("gpt2")  # config.json, model.safetensors, vocab.json, merges.txt (README)
# Our special tokens come first in every vocabulary here, so GPT-2's token i is our token i + len(SPECIAL_TOKENS),
# and the token embedding gains len(SPECIAL_TOKENS) rows at its start, each the mean of GPT-2's rows. As the
# embedding is also the output layer, a special token's logit is then the mean logit: never above the largest, so
# GPT-2 writes what it always wrote until finetuning teaches it <eos> and the rest. GPT-2's own <|endoftext|> is
# an ordinary token here (its id plus 8).


def gpt2_byte_chars():
    """GPT-2's files spell tokens as text, one character per byte: byte b is chr(b) where that character is
    printable and not a space, else chr(256 + n) for the n-th byte that is not. A list of 256 characters."""
    visible = [chr(b).isprintable() and b != 32 for b in range(256)]
    hidden = iter(range(256, 512))
    return [chr(b) if visible[b] else chr(next(hidden)) for b in range(256)]


# Unicode's White_Space characters: what \s means in GPT-2's pattern. Python's \s also takes U+001C to U+001F.
WHITE_SPACE = r"\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def unicode_classes():
    """For each first letter of a Unicode category (L: letters, N: numbers, ...), the code points in it as the inside
    of an re character class, "A-Za-z...", as Python's unicodedata knows them. Half a second."""
    classes = defaultdict(str)
    for kind, run in itertools.groupby(range(sys.maxunicode + 1), key=lambda c: unicodedata.category(chr(c))[0]):
        run = list(run)  # consecutive code points of one kind: one range
        classes[kind] += f"{re.escape(chr(run[0]))}-{re.escape(chr(run[-1]))}"
    return classes


@functools.cache
def gpt2_split():
    r"""GPT-2's pre-tokenizer, the model of BPE_SPLIT, built on first use:
        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    Python's re has no \p{L} (letters) or \p{N} (numbers), so they are spelled out from unicode_classes()."""
    classes = unicode_classes()
    L, N, S = classes["L"], classes["N"], WHITE_SPACE
    return re.compile(rf"'(?:[sdmt]|ll|ve|re)| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


NEVER = (math.inf,)  # the rank of a pair never merged


class GPT2Tokenizer:
    """GPT-2's byte-level BPE, from its vocab.json (token text -> id) and merges.txt (pairs in the order they were
    learned): BPETokenizer's algorithm with GPT-2's pre-tokenizer, vocabulary and merges. Our ids: the specials,
    then GPT-2's ids shifted by n_special. Like every tokenizer here, it reads special names in text as text."""

    def __init__(self, vocab, merges, n_special=len(SPECIAL_TOKENS)):
        ok = isinstance(vocab, dict) and all(isinstance(t, str) and type(i) is int for t, i in vocab.items())
        require(ok and sorted(vocab.values()) == list(range(len(vocab))),
                "gpt2 tokenizer: the vocabulary must map token texts to the ids 0 to n - 1, each once")
        chars = gpt2_byte_chars()
        byte_of = {c: b for b, c in enumerate(chars)}
        odd = [t for t in vocab if not t or any(c not in byte_of for c in t)] + [c for c in chars if c not in vocab]
        require(not odd, f"gpt2 tokenizer: each byte needs a token, and tokens are GPT-2 byte text: not {odd[:3]!r:.50}")
        self.merges = [tuple(pair) if isinstance(pair, (list, tuple)) else (pair,) for pair in merges]
        self.vocab, self.n_special = vocab, n_special
        self.vocab_size = n_special + len(vocab)
        self.byte_ids = [n_special + vocab[c] for c in chars]  # byte b -> our id
        self.rank = {}  # (id, id) -> (rank, id of the merged token): the lowest rank merges first
        for rank, pair in enumerate(self.merges):
            ok = len(pair) == 2 and all(isinstance(t, str) and t in vocab for t in pair) and pair[0] + pair[1] in vocab
            require(ok, f"gpt2 tokenizer: merge {rank} ({pair!r:.40}) must join two tokens into one of the vocabulary")
            left, right, joined = (n_special + vocab[t] for t in (pair[0], pair[1], pair[0] + pair[1]))
            self.rank.setdefault((left, right), (rank, joined))
        by_id = sorted(vocab, key=vocab.get)
        self.token_bytes = [name.encode() for name in SPECIAL_TOKENS[:n_special]] + \
            [bytes(byte_of[c] for c in token) for token in by_id]
        self.split, self.cache = gpt2_split(), {}

    def _encode_word(self, word):
        if word not in self.cache:
            ids = [self.byte_ids[b] for b in word.encode("utf-8")]
            # As BPETokenizer: the earliest-learned merge first, until no pair has been learned.
            while (pair := min(zip(ids, ids[1:]), key=lambda p: self.rank.get(p, NEVER), default=None)) in self.rank:
                ids = _merge(ids, pair, self.rank[pair][1])
            self.cache[word] = ids
        return self.cache[word]

    def encode(self, text):
        return [i for word in self.split.findall(text) for i in self._encode_word(word)]

    def decode(self, ids):
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def to_dict(self):
        return {"type": "gpt2", "vocab": self.vocab, "merges": [list(p) for p in self.merges],
                "specials": list(SPECIAL_TOKENS[:self.n_special])}


# safetensors' names for the dtypes it stores
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


def read_safetensors(path):
    """{name: tensor} from a .safetensors file: 8 bytes giving n, the length of a JSON header that names each tensor's
    dtype, shape and [begin, end) byte offsets, then those bytes, little-endian. Plain data: nothing in it can run."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            require(n <= os.path.getsize(path) - 8, "its header is longer than the file")
            header, data = json.loads(f.read(n)), bytearray(f.read())  # writable, as torch.frombuffer wants
        require(isinstance(header, dict), "the header is not a JSON object")
    except (struct.error, ValueError) as e:  # struct.error: under 8 bytes; ValueError: no JSON object after them
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = SAFETENSORS_DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
            ok = 0 <= begin <= end <= len(data) and end - begin == math.prod(shape) * dtype.itemsize
        except (KeyError, TypeError, ValueError):  # a missing key, or a value of the wrong type
            ok = False
        require(ok, f"{path}: tensor {name!r} has a bad header entry {info!r:.80}")
        tensors[name] = torch.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=begin).reshape(shape) \
            if begin < end else torch.zeros(shape, dtype=dtype)
    return tensors


# GPT-2's activation_function names for the GELUs of GPTConfig.gelu
GPT2_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def gpt2_config(hf):
    """Our GPTConfig for a Hugging Face GPT-2 config.json (a dict), or an error naming what this GPT lacks."""
    require(isinstance(hf, dict), "expected a JSON object of settings")
    require(hf.get("model_type") == "gpt2", f"model_type {hf.get('model_type')!r}: this loads GPT-2 ('gpt2') only")
    gelu = GPT2_GELU.get(hf.get("activation_function", "gelu_new"))
    require(gelu, f"activation_function {hf.get('activation_function')!r}: expected one of {sorted(GPT2_GELU)}")
    missing = [k for k in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd") if type(hf.get(k)) is not int]
    require(not missing, f"config.json needs {missing} as integers")
    for key, ours in [("n_inner", (None, 4 * hf["n_embd"])), ("layer_norm_epsilon", (1e-5,)),
                      ("tie_word_embeddings", (True,)), ("scale_attn_weights", (True,)),
                      ("scale_attn_by_inverse_layer_idx", (False,)), ("add_cross_attention", (False,))]:
        require(hf.get(key, ours[0]) in ours, f"{key}={hf.get(key)!r}: this GPT has {ours[-1]!r} (section 3)")
    return GPTConfig(vocab_size=len(SPECIAL_TOKENS) + hf["vocab_size"], block_size=hf["n_positions"],
                     n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, gelu=gelu)


# GPT-2 stores these as Conv1D weights, (in, out); nn.Linear keeps (out, in)
GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_state_dict(hf_state):
    """Hugging Face GPT-2 weights as our GPT's state dict: names without "transformer.", blocks for h, Conv1D
    weights transposed, the token embedding led by one row per special token (the mean of its rows), float32."""
    state = {}
    for name, tensor in hf_state.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # the causal mask, in files from older versions; the output layer, which is the embedding
        tensor = tensor.float().t() if name.endswith(GPT2_CONV1D) else tensor.float()
        if name == "wte.weight":  # (vocab, C) -> (8 + vocab, C)
            tensor = torch.cat([tensor.mean(dim=0, keepdim=True).expand(len(SPECIAL_TOKENS), -1), tensor])
        state[re.sub(r"^h\.", "blocks.", name)] = tensor
    if "wte.weight" in state:
        state["lm_head.weight"] = state["wte.weight"]  # tied
    return state


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:  # not UTF-8, or not JSON
        raise ValueError(f"{path}: not a JSON file ({e})") from None


def read_gpt2_merges(path):
    """[[left, right], ...] from merges.txt: an optional "#version" line, then one merge per line, "left right"."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line and not line.startswith("#version")]
    pairs = [line.split(" ") for line in lines]
    bad = [line for line, pair in zip(lines, pairs) if len(pair) != 2]
    require(not bad, f"{path}: a merge is two tokens and one space, not {bad[:1]!r:.60}")
    return pairs


GPT2_FILES = ("config.json", "vocab.json", "merges.txt")
GPT2_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def load_gpt2(folder):
    """(GPT in eval mode, GPT2Tokenizer) from a Hugging Face GPT-2 folder: config.json, vocab.json, merges.txt, and
    model.safetensors or else pytorch_model.bin (read with weights_only=True). Nothing is downloaded: the README
    gives the one command that fetches the folder. The larger GPT-2s (gpt2-medium, -large, -xl) come the same way."""
    require(os.path.isdir(folder), f"{folder}: no such folder; the README's GPT-2 section shows how to get one")
    weights = next((os.path.join(folder, w) for w in GPT2_WEIGHTS if os.path.isfile(os.path.join(folder, w))), None)
    missing = [name for name in GPT2_FILES if not os.path.isfile(os.path.join(folder, name))] + \
        ([] if weights else [" or ".join(GPT2_WEIGHTS)])
    require(not missing, f"{folder}: a GPT-2 folder needs {', '.join(missing)}")
    try:
        config = gpt2_config(read_json(os.path.join(folder, "config.json")))
    except ValueError as e:
        raise ValueError(f"{folder}/config.json: {e}") from None
    try:
        vocab, merges = read_json(os.path.join(folder, "vocab.json")), read_gpt2_merges(os.path.join(folder, "merges.txt"))
        tokenizer = GPT2Tokenizer(vocab, merges)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    require(tokenizer.vocab_size <= config.vocab_size, f"{folder}: vocab.json has {len(tokenizer.vocab)} tokens, "
            f"but config.json's vocab_size is {config.vocab_size - len(SPECIAL_TOKENS)}")
    if weights.endswith(".safetensors"):
        hf_state = read_safetensors(weights)
    else:
        try:
            hf_state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # as in load_checkpoint: torch raises several types
            raise ValueError(f"{weights}: cannot load: not a plain-data torch file ({type(e).__name__})") from None
    model = GPT(config)
    try:
        model.load_state_dict(gpt2_state_dict(hf_state))
    except (RuntimeError, AttributeError) as e:  # AttributeError: a .bin that holds no dict of tensors
        raise ValueError(f"{weights}: the weights do not fit config.json: {str(e)[:300]}") from None
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------------
# 8. Devices and the command line


def pick_device(name="auto"):
    """"auto" prefers cuda, then mps (Apple GPUs), then cpu. An explicit device that is not
    available is an error rather than a silent fallback, so a run never lands on the wrong device."""
    if name == "auto":
        mps = torch.backends.mps.is_available()
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    require(re.fullmatch(r"(cpu|cuda|mps)(:\d+)?", name), f"unknown device {name!r}: use auto, cpu, cuda[:N] or mps")
    device, gpus = torch.device(name), torch.cuda.device_count() if torch.cuda.is_available() else 0
    require(device.type != "cuda" or (device.index or 0) < gpus, f"{name!r} was asked for, but this torch build "
            f"sees {gpus or 'no'} CUDA GPU(s)")
    require(device.type != "mps" or torch.backends.mps.is_available(), "MPS was asked for, but is not available here")
    return device


def main(argv=None):
    parser = argparse.ArgumentParser(description="Sample text from a gpt.py checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint file, e.g. out/kjv/ckpt.pt")
    parser.add_argument("--prompt", default="\n", help="text to continue (an instruction, for instruct checkpoints)")
    for flag, kind, default in [("max_new_tokens", int, 200), ("temperature", float, 0.8), ("top_k", int, None),
                                ("top_p", float, None), ("seed", int, None), ("device", str, "auto")]:
        parser.add_argument(f"--{flag}", type=kind, default=default)
    parser.add_argument("--quantize", choices=("auto", "none", "int8"), default="auto",
                        help="int8: CPU inference in int8; auto: int8 where it is faster (on the CPU, wide models)")
    args = parser.parse_args(argv)
    try:  # a mistake in the arguments or the checkpoint is one line and exit code 2
        check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
        device = pick_device(args.device)
        model, tokenizer, ckpt = load_model(args.ckpt, device)
        require(ckpt["kind"] != "classifier", f"{args.ckpt} is a classifier; it labels text rather than writing it")
        if use_int8(args.quantize, model.config, device):
            model = quantize_int8(model)
        instruct = ckpt["kind"] == "instruct"
        prompt = instruction_ids(tokenizer, args.prompt) if instruct else tokenizer.encode(args.prompt)
        require(prompt, "--prompt is empty: the model needs at least one character to continue")
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    kept = shorten_prompt(prompt, model.config.block_size)
    if len(kept) < len(prompt):
        print(f"note: the prompt has {len(prompt)} tokens; kept {len(kept)} to leave room for an answer in the "
              f"context of {model.config.block_size} (the last ones, and any <inst> and <resp>)", file=sys.stderr)
    new_ids = model.generate_stream(torch.tensor([kept], device=device), args.max_new_tokens, stop_ids=(EOS_ID,),
                                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    print(tokenizer.decode(kept), end="", flush=True)
    for piece in decode_stream(tokenizer, new_ids):
        print(piece, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
