"""
train.py: pretrain a GPT (gpt.py) on a text corpus, on cuda, mps or cpu, resumable and distributed.

  python train.py                                   # char-level KJV on the CPU, about 5 minutes
  python train.py --config config/gpu.toml          # a larger model for one GPU
  python train.py --device=mps                      # Apple GPUs
  torchrun --nproc_per_node=8 train.py --config config/gpu.toml
  python train.py --resume                          # continue out/kjv exactly where it stopped

Writes out/RUN/: ckpt.pt (best validation loss, the one to sample from and finetune), last.pt (full
training state, for --resume), metrics.jsonl and loss.png. A run started in a folder that already
holds one moves the earlier run aside first (out/RUN.DATE_TIME), so nothing trained is overwritten.

The script reads top to bottom: configuration, batches, then main(): data, model, the loop (shared
with finetune.py, in trainer.py), and the final evaluation.
"""
import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from data.prepare import prepare
from gpt import GPT, GPTConfig
from trainer import (ConfigError, RunConfig, Task, append_metrics, cli, evaluate, log, parse_config,
                     plot_losses, refuse_changes, resume_checkpoint, start_run, train_loop)

# ----------------------------------------------------------------------------------------------------
# Configuration: the fields below, plus the run settings every script shares (trainer.RunConfig)


@dataclass
class TrainConfig(RunConfig):
    """Pretrain a GPT on a text corpus."""

    # data
    data: str = "kjv"  # kjv, shakespeare, or a path to a UTF-8 text file
    tokenizer: str = "bpe"  # bpe (byte-level BPE trained on the corpus) or char (one token per character)
    bpe_vocab_size: int = 2048  # with --tokenizer=bpe: 8 special tokens, 256 bytes, then learned merges
    data_dir: str = "data"  # where prepared token files are cached
    # model (gpt.GPTConfig)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128  # the context: how many tokens the model sees at once
    dropout: float = 0.0
    bias: bool = True
    rope: bool = True  # rotary position embeddings instead of learned absolute ones
    gelu: str = "none"  # the exact GELU, or "tanh": the approximation GPT-2 used
    # evaluation
    eval_iters: int = 20  # batches in the fixed validation sample evaluated every eval_interval steps
    sample_tokens: int = 200  # length of the text sample printed at each evaluation
    sample_prompt: str = "\n"
    # shared settings whose pretraining default differs (docs/results.md says how each was chosen)
    optimizer: str = "muon"  # Muon for the blocks' weight matrices, AdamW for the rest (trainer.build_optimizers)
    lr: float = 5e-3  # AdamW's peak: embeddings, head, biases and gains
    muon_lr: float = 0.01

    RANGES = RunConfig.RANGES | {"bpe_vocab_size": "[265, 4294967295]", "n_layer": "[1, inf)", "n_head": "[1, inf)",
                                 "n_embd": "[1, inf)", "block_size": "[1, inf)", "dropout": "[0, 1)",
                                 "eval_iters": "[1, inf)", "sample_tokens": "[0, inf)"}
    CHOICES = RunConfig.CHOICES | {"tokenizer": ("char", "bpe"), "gelu": ("none", "tanh")}

    def __post_init__(self):
        super().__post_init__()
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.rope and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"rotary embeddings turn pairs of numbers: the head size n_embd / n_head "
                              f"({self.n_embd // self.n_head}) must be even (or use --no-rope)")
        if not self.out_dir:
            name = Path(self.data).stem if self.data not in ("kjv", "shakespeare") else self.data
            self.out_dir = f"out/{name}" + ("_char" if self.tokenizer == "char" else "")


def model_config(cfg, vocab_size):
    """The gpt.GPTConfig that a TrainConfig describes."""
    fields = {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
    return GPTConfig(vocab_size=vocab_size, **{name: getattr(cfg, name) for name in fields})


# Settings a resumed run cannot change: the weights and token files depend on them.
FIXED_ON_RESUME = ("data", "tokenizer", "bpe_vocab_size", "n_layer", "n_head", "n_embd", "block_size", "bias", "rope",
                   "gelu")


def resume_config(cfg, argv):
    """The settings of the run in cfg.out_dir/last.pt, overridden by anything given now; and its checkpoint."""
    ckpt = resume_checkpoint(cfg.out_dir, "train_config", "python train.py")
    # The model's own config says how its weights are laid out; runs from before rotary embeddings
    # existed have no rope setting and learned positions.
    saved = {**ckpt["train_config"], "rope": ckpt["config"].get("rope", False)}
    resumed = parse_config(TrainConfig, argv, base=saved, base_source=f"{cfg.out_dir}/last.pt")
    refuse_changes(resumed, saved, FIXED_ON_RESUME)
    return resumed, ckpt


# ----------------------------------------------------------------------------------------------------
# Batches: a function of (seed, step, shard) only, so a resumed run reads exactly the same data


def train_batch(data, block_size, batch_size, seed, step, shard, device):
    """(x, y), each (batch_size, block_size): random windows of data and the same shifted by one.
    shard numbers the micro-batches of one step across processes (rank * grad_accum + micro)."""
    offsets = np.random.default_rng([seed, step, shard]).integers(0, len(data) - block_size, size=batch_size)
    return windows(data, offsets, block_size, device)


def train_batches(data, cfg, device):
    """batches(start_step, rank, world_size) for trainer.Task: every micro-batch from start_step on."""
    def batches(start_step, rank, world_size):
        for step in range(start_step, cfg.max_iters):
            for micro in range(cfg.grad_accum):
                yield train_batch(data, cfg.block_size, cfg.batch_size, cfg.seed, step, rank * cfg.grad_accum + micro, device)
    return batches


def windows(data, offsets, block_size, device):
    x = torch.from_numpy(np.stack([data[o:o + block_size] for o in offsets]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[o + 1:o + 1 + block_size] for o in offsets]).astype(np.int64))
    if device.type == "cuda":  # page-locked memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def fixed_val_batches(data, block_size, batch_size, n_batches, seed, device):
    """The same n_batches random windows of the validation split at every evaluation."""
    offsets = np.random.default_rng([seed, 2**31]).integers(0, len(data) - block_size, size=(n_batches, batch_size))
    return [windows(data, row, block_size, device) for row in offsets]


def whole_split_batches(data, block_size, batch_size, device):
    """Batches that predict every token of data (after the first) exactly once: back-to-back windows,
    plus one window aligned to the end whose already-scored targets are masked with -100."""
    starts = list(range(0, len(data) - block_size, block_size))
    scored_until = starts[-1] + block_size  # the last target index the back-to-back windows predict
    end_aligned = scored_until < len(data) - 1
    if end_aligned:
        starts.append(len(data) - block_size - 1)
    for i in range(0, len(starts), batch_size):
        x, y = windows(data, starts[i:i + batch_size], block_size, device)
        if end_aligned and i + batch_size >= len(starts):
            y[-1, :scored_until - starts[-1]] = -100
        yield x, y


def bits_per_char(mean_loss, tokens, tokenizer):
    """Bits per character of a split whose tokens (after the first, which is never predicted) scored
    mean_loss nats each: comparable between tokenizers, since a BPE token may hold many characters."""
    n_chars = len(tokenizer.decode(tokens.tolist())) - len(tokenizer.decode(tokens[:1].tolist()))
    return mean_loss * (len(tokens) - 1) / n_chars / math.log(2)


# ----------------------------------------------------------------------------------------------------
# The run


def main(argv=None):
    """Train; returns a summary dict (also printed). Raises ConfigError, DataError or CheckpointError
    for bad settings or inputs; cli() turns those into a one-line message."""
    launched = time.time()  # the time budget counts from here: data preparation and setup included
    cfg = parse_config(TrainConfig, argv)
    resumed = None
    if cfg.resume:
        cfg, resumed = resume_config(cfg, argv)
    with start_run(cfg, launched) as run:
        data = prepared_data(cfg, run)
        torch.manual_seed(cfg.seed + run.rank)  # DDP copies rank 0's initial weights to every process
        model = GPT(model_config(cfg, data.tokenizer.vocab_size))
        if resumed is not None:
            model.load_state_dict(resumed["model"])
        log(f"{data.name} ({cfg.tokenizer}, vocab {data.tokenizer.vocab_size}): {len(data.train):,} train / "
            f"{len(data.val):,} val tokens; model: {model.num_params() / 1e6:.2f}M parameters, {cfg.n_layer} layers x "
            f"{cfg.n_embd} wide, context {cfg.block_size}; {cfg.batch_size * cfg.grad_accum * run.world_size * cfg.block_size:,} tokens per step")
        task = Task(kind="pretrained", model=model, tokenizer=data.tokenizer, command="python train.py",
                    batches=train_batches(data.train, cfg, run.device),
                    val_batches=fixed_val_batches(data.val, cfg.block_size, cfg.batch_size, cfg.eval_iters, cfg.seed,
                                                  run.device),
                    extras={"train_config": asdict(cfg)},
                    after_loop_batches=math.ceil(len(data.val) / (cfg.block_size * cfg.batch_size * run.world_size)),
                    sample=lambda m: sample_text(m, data.tokenizer, cfg, run.device))
        result = train_loop(cfg, task, run, resumed)
        return finish(cfg, data, model, run, result)


def prepared_data(cfg, run):
    """The token files for cfg.data: the first process prepares them while the others wait, then reads."""
    def load():
        return prepare(cfg.data, cfg.tokenizer, cfg.bpe_vocab_size, cfg.block_size, cache_root=cfg.data_dir)

    data = load() if run.rank == 0 else None
    if run.world_size > 1:
        dist.barrier()
    return data or load()


def sample_text(model, tokenizer, cfg, device):
    prompt = tokenizer.encode(cfg.sample_prompt) or [0]
    model.eval()
    ids = model.generate(torch.tensor([prompt], device=device), cfg.sample_tokens, temperature=0.8, seed=cfg.seed)
    model.train()
    return tokenizer.decode(ids[0].tolist())


def finish(cfg, data, model, run, result):
    """The whole validation split on the best model, then a one-screen summary."""
    out, tokens_per_step = Path(cfg.out_dir), cfg.batch_size * cfg.grad_accum * run.world_size * cfg.block_size
    summary = {"status": result.status, "out_dir": str(out), "steps": result.steps, "parameters": model.num_params(),
               "tokens_seen": result.steps * tokens_per_step, "tokens_per_s": round(result.tokens_per_s),
               "best_val_loss": result.best_val, "checkpoint": str(out / "ckpt.pt"),
               "precision": result.precision.reason}
    if result.status == "done":
        batches = whole_split_batches(data.val, cfg.block_size, cfg.batch_size, run.device)
        summary["val_loss_whole"] = evaluate(model, batches, result.precision, run.device, run.rank, run.world_size)
        summary["val_bits_per_char"] = bits_per_char(summary["val_loss_whole"], data.val, data.tokenizer)
    summary["minutes"] = round((time.time() - run.launched) / 60, 2)  # everything, from data preparation on
    if run.rank != 0:
        return summary
    if "val_loss_whole" in summary:
        append_metrics(out / "metrics.jsonl", step=result.steps, val_loss_whole=summary["val_loss_whole"],
                       val_bits_per_char=summary["val_bits_per_char"])
        plot_losses(out / "metrics.jsonl", out / "loss.png")
    lines = [f"{result.status}: {result.steps} steps, {summary['tokens_seen'] / 1e6:.1f}M tokens in "
             f"{summary['minutes']:.1f} min ({summary['tokens_per_s']:,} tokens/s while training), "
             f"{summary['parameters'] / 1e6:.2f}M parameters"]
    if result.note:
        lines.append(result.note)
    elif result.status == "done" and result.steps < cfg.max_iters:
        lines.append(f"the {cfg.max_minutes}-minute budget (--max_minutes) fitted {result.steps} of {cfg.max_iters} "
                     "steps; --max_minutes=0 runs them all")
    lines.append(f"best val loss {result.best_val:.4f} (fixed sample of {cfg.eval_iters} batches)")
    if "val_loss_whole" in summary:
        lines.append(f"whole validation split: {summary['val_loss_whole']:.4f} nats per token, "
                     f"{summary['val_bits_per_char']:.3f} bits per character")
    lines.append(f"checkpoint {out}/ckpt.pt; sample it: python gpt.py --ckpt {out}/ckpt.pt --prompt \"And\"")
    log("\n".join(lines))
    return summary


if __name__ == "__main__":
    cli(main)
