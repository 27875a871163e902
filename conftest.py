"""Fixtures shared by the test files: one thread for tiny models, tiny GPTs, a tiny corpus, tiny run settings."""
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt import GPT, GPTConfig


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread: with more, each small op waits on the others, and on a
    busy 2-core machine that wait costs ten times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small text with structure a tiny model can start to learn: short sentences from a few words."""
    rng = np.random.default_rng(0)
    words = "the lord said unto moses and aaron go in to the land of egypt and speak".split()
    lines = [" ".join(rng.choice(words, size=8)).capitalize() + "." for _ in range(500)]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pretrain_args(corpus):
    """pretrain_args(out_dir, **overrides): train.py flags for a tiny run on the tiny corpus, exactly
    max_iters steps (no time budget), whatever the machine's speed."""
    def args(out_dir, **overrides):
        settings = dict(data=corpus, data_dir=Path(corpus).parent / "cache", out_dir=out_dir, n_layer=1, n_head=2,
                        n_embd=16, block_size=16, batch_size=4, max_iters=20, eval_interval=10, eval_iters=2,
                        log_interval=1, sample_tokens=20, warmup_iters=2, lr=1e-2, dtype="float32", device="cpu",
                        max_minutes=0, patience=0, tokenizer="char", optimizer="adamw")
        settings.update(overrides)
        return [f"--{key}={value}" for key, value in settings.items()]
    return args


@pytest.fixture(scope="session")
def tiny_gpt():
    """tiny_gpt(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, weight_std=None, seed=0, **options):
    a small random GPT in eval mode. weight_std, when given, redraws every weight matrix with that
    spread: GPT-2's 0.02 makes a fresh model almost uniform, so a bug would move the logits by less
    than a float tolerance; wider weights make every token and position matter. options: more
    GPTConfig fields (rope)."""
    def make(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, weight_std=None, seed=0, **options):
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                              n_embd=n_embd, **options))
        if weight_std is not None:
            for p in model.parameters():
                if p.dim() >= 2:
                    torch.nn.init.normal_(p, std=weight_std)
        return model.eval()
    return make


class StopAfter:
    """Stands in for Ctrl-C: reports a stop request from the n-th time the training loop asks."""

    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n <= 0


@pytest.fixture(scope="session")
def stop_after():
    """stop_after(n): a stand-in for the training loop's stop Event, set from the n-th step on."""
    return StopAfter
