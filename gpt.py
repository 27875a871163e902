"""
gpt.py: a GPT you can read in one sitting, from raw text to sampled text.

Reading order, which is also the order the ideas build on each other:
  1. tokenizers    text <-> integer ids (characters, then byte-level BPE)
  2. attention     causal self-attention, first by hand, then the fused kernel; rotary positions
  3. the model     MLP, Block, GPT (the GPT-2 architecture, scaled down, rotary positions optional)
  4. heads         a classifier on the GPT's hidden states, and how to freeze the backbone
  5. sampling      temperature, top-k, top-p, and a KV cache so each new token costs one step
  6. checkpoints   one file with config, weights and tokenizer, written atomically, loaded safely
  7. devices, CLI  `python gpt.py --ckpt out/kjv/ckpt.pt --prompt "In the beginning"`

Depends on torch and the standard library only, so it can be copied into any project.
"""
import argparse
import json
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# 1. Tokenizers

# Both tokenizers put the special tokens first, so their ids are the same everywhere.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>", "<inst>", "<resp>")
PAD_ID, UNK_ID, EOS_ID, INST_ID, RESP_ID = range(len(SPECIAL_TOKENS))


class CharTokenizer:
    """One token per character. No word is ever unknown; sequences are long.

    Vocabulary: the special tokens, then every printable ASCII character, newline and tab (so any
    English prompt encodes), then whatever other characters the training corpus holds.
    """

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars, start=len(SPECIAL_TOKENS))}
        self.vocab_size = len(SPECIAL_TOKENS) + len(self.chars)

    @classmethod
    def from_text(cls, text):
        base = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
        return cls(base + sorted(set(text) - set(base)))

    def encode(self, text):
        # Plain text never yields a special id: a user typing "<eos>" gets five characters.
        return [self.stoi.get(c, UNK_ID) for c in text]

    def decode(self, ids):
        n = len(SPECIAL_TOKENS)
        return "".join(SPECIAL_TOKENS[i] if i < n else self.chars[i - n] for i in ids)

    def to_dict(self):
        return {"type": "char", "chars": self.chars}


# Pre-split text into words before BPE, so merges never cross a word boundary: contractions, letters
# with one leading space, up to three digits, runs of punctuation, and whitespace. Every character
# falls into one of these, which keeps encoding lossless.
BPE_SPLIT = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


class BPETokenizer:
    """Byte-level byte-pair encoding, trained from scratch.

    Start from the 256 byte values (so any Unicode string encodes), then repeatedly merge the most
    frequent adjacent pair into a new token. Ids: specials, then bytes, then merges in learned order.
    """

    def __init__(self, merges):
        self.merges = [tuple(pair) for pair in merges]
        self.byte0 = len(SPECIAL_TOKENS)
        first_merge = self.byte0 + 256
        self.rank = {pair: first_merge + i for i, pair in enumerate(self.merges)}
        self.vocab_size = first_merge + len(self.merges)
        self.token_bytes = [b""] * self.byte0 + [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        self.cache = {}

    @classmethod
    def train(cls, text, vocab_size):
        """Learn vocab_size - 261 merges. Counts run over unique words weighted by frequency, and
        after each merge only the words containing the merged pair are updated."""
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
            while len(ids) > 1:
                # Apply the earliest-learned merge first, exactly as training did.
                pair = min(zip(ids, ids[1:]), key=lambda p: self.rank.get(p, math.inf))
                if pair not in self.rank:
                    break
                ids = _merge(ids, pair, self.rank[pair])
            self.cache[word] = ids
        return self.cache[word]

    def encode(self, text):
        return [i for word in BPE_SPLIT.findall(text) for i in self._encode_word(word)]

    def decode(self, ids):
        out, pending = [], b""
        for i in ids:
            if i < self.byte0:
                out += [pending.decode("utf-8", errors="replace"), SPECIAL_TOKENS[i]]
                pending = b""
            else:
                pending += self.token_bytes[i]
        return "".join(out) + pending.decode("utf-8", errors="replace")

    def to_dict(self):
        return {"type": "bpe", "merges": [list(p) for p in self.merges]}


def _merge(ids, pair, new_id):
    """Replace every non-overlapping occurrence of pair in ids by new_id, left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def tokenizer_from_dict(d):
    if d.get("type") == "char":
        return CharTokenizer(d["chars"])
    if d.get("type") == "bpe":
        return BPETokenizer(d["merges"])
    raise ValueError(f"unknown tokenizer type {d.get('type')!r}: expected 'char' or 'bpe'")


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


def explicit_attention(q, k, v, dropout_p=0.0):
    """Attention written out: softmax(q k^T / sqrt(d) + causal mask) v. Returns (output, weights).
    q: (B, nh, Tq, hs), k and v: (B, nh, Tk, hs)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, Tq, Tk)
    scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    weights = F.softmax(scores, dim=-1)
    y = F.dropout(weights, dropout_p) @ v  # (B, nh, Tq, hs)
    return y, weights


def rotary_tables(block_size, head_size, base=10000.0):
    """cos and sin, each (block_size, head_size // 2), for rotary position embeddings (RoPE, Su et al.,
    2021): position p turns the i-th pair of a query or key by the angle p * base^(-2i / head_size)."""
    freqs = base ** (-torch.arange(0, head_size, 2).float() / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(block_size).float(), freqs)  # (block_size, hs/2)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotate pairs (x[..., i], x[..., i + hs/2]) of x (B, nh, T, hs) by angles whose cos and sin are
    (T, hs/2). A query at p and a key at s then meet at an angle that depends only on p - s, so
    attention sees relative positions, and nothing is added to the token embeddings."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.fused = True  # torch's scaled_dot_product_attention; False runs explicit_attention

    def forward(self, x, cache=None, need_weights=False, rotary=None):
        """x: (B, T, C). cache: a dict holding this layer's past keys and values, extended in place.
        rotary: (cos, sin) for these T positions when the model uses rotary embeddings.
        Returns (y, attention weights or None)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rotary is not None:  # rotate before caching: a cached key keeps the position it was made at
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)  # (B, nh, T_past + T, hs)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights or not self.fused:
            y, weights = explicit_attention(q, k, v, dropout_p)
        elif T == k.size(2):
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:  # is_causal aligns the mask top-left, which is wrong when queries follow cached keys
            mask = causal_mask(T, k.size(2), x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), weights


# ----------------------------------------------------------------------------------------------------
# 3. The model


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU, project back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, need_weights=False, rotary=None):
        a, weights = self.attn(self.ln_1(x), cache, need_weights, rotary)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


@dataclass
class GPTConfig:
    vocab_size: int = 102
    block_size: int = 128  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    # Rotary position embeddings in attention instead of learned absolute ones: the one "Version 2"
    # idea of the seed that lowered the default run's val loss here (README, performance section).
    rope: bool = False


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
        self.apply(self._init_weights)
        # GPT-2: each residual branch adds to the stream, so scale its output projection by
        # 1/sqrt(2 * n_layer) to keep the stream's variance from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding=True):
        """Parameter count; position embeddings are left out by default, as they do no compute.
        Token embeddings count once, as the LM head, because they are tied."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding and not self.config.rope else n

    def _run(self, idx, cache=None, need_weights=False):
        """idx: (B, T) token ids. cache: list of one dict per layer, or None.
        Returns (hidden states (B, T, C) after the final norm, per-layer attention weights)."""
        past = cache[0]["k"].size(2) if cache and "k" in cache[0] else 0
        T = idx.size(1)
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.config.block_size}")
        x = self.wte(idx)  # (B, T, C)
        rotary = None
        if self.config.rope:
            rotary = self.rope_cos[past:past + T], self.rope_sin[past:past + T]  # each (T, hs/2)
        else:
            x = x + self.wpe(torch.arange(past, past + T, device=idx.device))
        x = self.drop(x)
        maps = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, cache[i] if cache else None, need_weights, rotary)
            maps.append(weights)
        return self.ln_f(x), maps

    def forward(self, idx, targets=None, cache=None):
        """Returns (logits (B, T, vocab), mean cross-entropy over targets that are not -100, or None)."""
        h, _ = self._run(idx, cache)
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            # ignore_index=-100: prompt and padding positions in finetuning contribute nothing.
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def hidden_states(self, idx):
        return self._run(idx)[0]

    @torch.no_grad()
    def attention_maps(self, idx):
        """One (B, n_head, T, T) tensor of attention weights per layer, for looking inside."""
        return self._run(idx, need_weights=True)[1]

    # Sampling lives on the model, as in nanoGPT; the pieces it uses are in section 5.
    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                        stop_ids=(), seed=None, use_cache=True):
        """Yield up to max_new_tokens new token ids (ints), one at a time, after the prompt idx (1, T).
        Stops after yielding an id in stop_ids. With use_cache, each step feeds only the newest token."""
        if idx.dim() != 2 or idx.size(0) != 1 or idx.size(1) == 0:
            raise ValueError(f"generate expects a non-empty prompt of shape (1, T), got {tuple(idx.shape)}")
        tokens = idx[0].tolist()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        start, cache = max(0, len(tokens) - self.config.block_size), None  # a long prompt keeps its tail
        for _ in range(max_new_tokens):
            new_start = context_start(len(tokens), start, self.config.block_size)
            if not use_cache:
                x = tokens[new_start:]
            elif cache is None or new_start != start:  # the window moved: positions changed, refill
                cache = [{} for _ in self.blocks]
                x = tokens[new_start:]
            else:
                x = tokens[-1:]
            start = new_start
            logits, _ = self(torch.tensor([x], device=idx.device), cache=cache if use_cache else None)
            next_id = sample_next(logits[0, -1], temperature, top_k, top_p, generator)
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
    """A linear head on the hidden state of each sequence's last real token. With a causal model
    that token is the only one that has seen the whole text. Inputs are right-padded with PAD_ID."""

    def __init__(self, gpt, n_classes):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes)

    def forward(self, idx, targets=None):
        h = self.gpt.hidden_states(idx)  # (B, T, C)
        last = ((idx != PAD_ID).sum(dim=1) - 1).clamp(min=0)  # (B,) index of the last real token
        logits = self.head(h[torch.arange(idx.size(0), device=idx.device), last])  # (B, n_classes)
        loss = F.cross_entropy(logits.float(), targets) if targets is not None else None
        return logits, loss


def freeze(classifier, strategy, n=0):
    """Choose what finetuning may change. "none": everything trains. "head": only the head.
    "last_n": the head, the final norm and the last n blocks."""
    if strategy not in ("none", "head", "last_n"):
        raise ValueError(f"unknown freeze strategy {strategy!r}: expected none, head or last_n")
    for p in classifier.parameters():
        p.requires_grad = strategy == "none"
    blocks = classifier.gpt.blocks
    trainable = [classifier.head]
    if strategy == "last_n":
        trainable += [classifier.gpt.ln_f, *blocks[max(0, len(blocks) - n):]]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad = True


# ----------------------------------------------------------------------------------------------------
# 5. Sampling


def context_start(n_tokens, start, block_size):
    """Where the context window begins for the next prediction, given where it began before. While
    the text fits, it stays put; when it overflows, it jumps so that only the newest half block is
    kept. Jumping (rather than sliding one token at a time) is what lets the KV cache pay off past
    block_size: with learned absolute positions, every slide would shift every position and so
    invalidate the whole cache. Full recomputation uses the same windows, so both give equal text."""
    return start if n_tokens - start <= block_size else n_tokens - (block_size + 1) // 2


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next id from logits (vocab,). temperature 0 is greedy; top_k keeps the k likeliest
    tokens; top_p keeps the smallest set whose probability reaches p (nucleus sampling)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float().cpu() / temperature  # sample on the CPU so a seed gives the same text anywhere
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        probs, order = torch.sort(F.softmax(logits, dim=-1), descending=True)
        outside = probs.cumsum(0) - probs >= top_p  # the mass before this token already reached p
        logits[order[outside]] = float("-inf")
    probs = F.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


# ----------------------------------------------------------------------------------------------------
# 6. Checkpoints

CHECKPOINT_FORMAT = "gpt.py/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path, model, tokenizer, kind="pretrained", **extra):
    """Write config, weights, tokenizer and any extras to path atomically: a crash while writing
    leaves the previous file intact, because the new one only replaces it once complete."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    gpt = model.gpt if isinstance(model, GPTClassifier) else model
    payload = {"format": CHECKPOINT_FORMAT, "kind": kind, "config": asdict(gpt.config),
               "model": model.state_dict(), "tokenizer": tokenizer.to_dict(), **extra}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
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
    """Read a checkpoint. weights_only=True refuses any pickled object that is not plain data, so a
    crafted file cannot run code on load."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt, truncated or unsafe files
        reason = "it holds objects that are not plain data, refused for safety" if "unsupported global" in str(e).lower() \
            else "the file is truncated or not a torch checkpoint"
        raise CheckpointError(f"{path}: cannot load checkpoint: {reason} ({type(e).__name__})") from None
    required = {"format", "kind", "config", "model", "tokenizer"}
    if not isinstance(ckpt, dict) or not required <= set(ckpt):
        raise CheckpointError(f"{path}: not a gpt.py checkpoint (it needs the keys {sorted(required)})")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format']!r}, this gpt.py reads {CHECKPOINT_FORMAT!r}")
    return ckpt


def model_from_checkpoint(ckpt):
    try:
        model = GPT(GPTConfig(**ckpt["config"]))
        if ckpt["kind"] == "classifier":
            model = GPTClassifier(model, len(ckpt["labels"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"checkpoint config does not match its weights: {str(e)[:300]}") from None
    return model


def load_model(path, device="cpu"):
    """(model in eval mode on device, tokenizer, raw checkpoint dict)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt).to(device).eval()
    return model, tokenizer_from_dict(ckpt["tokenizer"]), ckpt


# ----------------------------------------------------------------------------------------------------
# 7. Devices and the command line


def pick_device(name="auto"):
    """"auto" prefers cuda, then mps (Apple GPUs), then cpu. An explicit device that is not
    available is an error rather than a silent fallback, so a run never lands on the wrong device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but this torch sees no CUDA GPU: use --device=cpu or auto")
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device 'mps' asked for, but MPS is not available here: use --device=cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def main(argv=None):
    parser = argparse.ArgumentParser(description="Sample text from a gpt.py checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint file, e.g. out/kjv/ckpt.pt")
    parser.add_argument("--prompt", default="\n", help="text to continue (an instruction, for instruct checkpoints)")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
        model, tokenizer, ckpt = load_model(args.ckpt, device)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    if ckpt["kind"] == "classifier":
        parser.exit(2, f"error: {args.ckpt} is a classifier; it labels text rather than writing it\n")
    prompt = instruction_ids(tokenizer, args.prompt) if ckpt["kind"] == "instruct" else tokenizer.encode(args.prompt)
    if not prompt:
        parser.exit(2, "error: --prompt is empty: the model needs at least one character to continue\n")
    idx = torch.tensor([prompt], device=device)
    print(tokenizer.decode(prompt), end="", flush=True)
    unprinted = []  # one character can span several BPE tokens: print it once all its bytes are in
    for token in model.generate_stream(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                       top_p=args.top_p, seed=args.seed, stop_ids=(EOS_ID,)):
        unprinted.append(token)
        text = tokenizer.decode(unprinted)
        if not text.endswith("\ufffd"):  # U+FFFD: decode's mark for bytes of an unfinished character
            print(text, end="", flush=True)
            unprinted = []
    print(tokenizer.decode(unprinted))


if __name__ == "__main__":
    main()
