"""
train.py: pretrain a GPT (gpt.py) on a text corpus, on cuda, mps or cpu, resumable and distributed.

  python train.py                                   # char-level KJV on the CPU, about 5 minutes
  python train.py --config config/gpu.toml          # a larger model for one GPU
  python train.py --device=mps                      # Apple GPUs
  torchrun --nproc_per_node=8 train.py --config config/gpu.toml
  python train.py --resume                          # continue out/kjv exactly where it stopped

Writes out/RUN/: ckpt.pt (best validation loss, the one to sample from and finetune), last.pt (full
training state, for --resume), metrics.jsonl and loss.png.

The machinery above the training loop (configuration, precision policy, optimizer, schedule,
batches, logging, resume state) is shared with finetune.py, which imports it.
"""
import argparse
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
import threading
import time
import tomllib
import typing
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data.prepare import DataError, prepare  # noqa: E402
from gpt import GPT, CheckpointError, GPTConfig, load_checkpoint, pick_device, save_checkpoint  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Configuration: one dataclass; flags, config files and defaults all come from its fields


class ConfigError(ValueError):
    """A setting that cannot work; the scripts print it and exit without a traceback."""


@dataclass
class TrainConfig:
    """Pretrain a GPT on a text corpus."""

    # data
    data: str = "kjv"  # kjv, shakespeare, or a path to a UTF-8 text file
    tokenizer: str = "char"  # char or bpe
    bpe_vocab_size: int = 2048
    data_dir: str = "data"  # where prepared token files are cached
    out_dir: str = ""  # default: out/<data name>, with _bpe for the bpe tokenizer
    # model (gpt.GPTConfig)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = True
    rope: bool = True  # rotary position embeddings instead of learned absolute ones
    # optimization
    batch_size: int = 16  # sequences per micro-batch, per process
    grad_accum: int = 1  # micro-batches per step, per process; global batch = batch_size * grad_accum * processes
    max_iters: int = 3000  # the most steps; the time budget below usually ends the run first on a CPU
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 200
    lr_decay_iters: int = 0  # where the cosine reaches min_lr; 0 means max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    # evaluation and logging
    eval_interval: int = 300
    eval_iters: int = 20  # batches in the fixed validation sample
    log_interval: int = 10
    sample_tokens: int = 200  # length of the text sample printed at each evaluation
    sample_prompt: str = "\n"
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto, float32, bfloat16 or float16
    compile: typing.Optional[bool] = None  # None: on for CUDA only
    seed: int = 1337
    resume: bool = False  # continue from out_dir/last.pt
    max_minutes: float = 4.5  # time budget, start to summary: the run ends sooner than max_iters if it must,
    # with the learning rate fully decayed (see fitted_horizon); 0: exactly max_iters steps, however long

    def __post_init__(self):
        choices = {"tokenizer": ("char", "bpe"), "dtype": ("auto", "float32", "bfloat16", "float16")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "max_iters",
                    "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not self.out_dir:
            name = Path(self.data).stem if self.data not in ("kjv", "shakespeare") else self.data
            self.out_dir = f"out/{name}" + ("_bpe" if self.tokenizer == "bpe" else "")


def model_config(cfg, vocab_size):
    """The gpt.GPTConfig that a TrainConfig describes."""
    fields = {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
    return GPTConfig(vocab_size=vocab_size, **{name: getattr(cfg, name) for name in fields})


def parse_config(config_cls, argv=None, base=None, base_source="base settings"):
    """Build a config_cls dataclass from defaults < base (a dict, e.g. a resumed run's settings, named
    base_source in errors) < --config FILE (TOML or JSON) < command-line flags.

    Every field becomes a flag: `--n_layer=6` or `--lr 3e-4`; booleans as --compile / --no-compile.
    Unknown keys and wrong types raise ConfigError naming the key, its source and the closest valid key.
    """
    types = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    parser = argparse.ArgumentParser(description=config_cls.__doc__, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--config", metavar="FILE", help="a TOML or JSON file of key = value settings")
    for f in dataclasses.fields(config_cls):
        kind = _value_type(types[f.name])
        help = f"{kind.__name__}, default {f.default!r}".replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)
        else:
            parser.add_argument(f"--{f.name}", metavar=kind.__name__.upper(), default=argparse.SUPPRESS, help=help)
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(f"command line: {e}") from None
    if unknown:
        word = unknown[0]
        if not word.startswith("--"):
            raise ConfigError(f"command line: unexpected argument {word!r}; settings look like --key=value")
        raise ConfigError(_unknown_key(word[2:].split("=")[0], names, "command line"))
    flags = vars(args)
    config_file = flags.pop("config", None)
    values = {}
    sources = [(base_source, base or {}), (config_file, _read_config_file(config_file) if config_file else {}),
               ("command line", flags)]
    for source, settings in sources:
        for key, value in settings.items():
            if key not in types:
                raise ConfigError(_unknown_key(key, names, source))
            values[key] = _typed(value, types[key], key, source, from_text=source == "command line")
    return config_cls(**values)


def _value_type(annotation):
    """int, float, str or bool, from a field's annotation (Optional[X] gives X)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
    if kind not in (int, float, str, bool):
        raise TypeError(f"config fields must be int, float, str, bool or Optional of one, not {annotation}")
    return kind


def _typed(value, annotation, key, source, from_text):
    """value as the field's type, or a ConfigError naming the key and where the value came from."""
    kind, optional = _value_type(annotation), type(None) in typing.get_args(annotation)
    if optional and (value is None or (from_text and str(value).lower() == "none")):
        return None
    if from_text and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    elif kind is float and type(value) is int:  # TOML and JSON may write 1 for 1.0
        return float(value)
    elif type(value) is kind:  # exactly: True is not an int here
        return value
    flag = f"--{key}" if from_text else key
    raise ConfigError(f"{source}: {flag} must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")


def _unknown_key(key, names, source):
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "see --help for the valid keys"
    return f"{source}: unknown key {key!r}; {hint}"


def _read_config_file(path):
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: config files must end in .toml or .json")
    try:
        with open(path, "rb") as f:
            settings = tomllib.load(f) if path.suffix == ".toml" else json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse: {e}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: expected key = value settings at the top level")
    for key, value in settings.items():
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: {key!r} is a table or list; config files are flat key = value settings")
    return settings


# ----------------------------------------------------------------------------------------------------
# Precision: one pure policy, decided from facts about the device, so it can be tested anywhere


@dataclass(frozen=True)
class Precision:
    autocast_dtype: typing.Optional[torch.dtype]  # None: plain float32, no autocast
    grad_scaler: bool  # float16 gradients need loss scaling to avoid underflow
    compile: bool
    reason: str


def precision_policy(device_type, dtype="auto", compile=None, bf16_supported=True, cpu_bf16_faster=False):
    """Choose the autocast dtype, loss scaling and torch.compile for a device type (cuda, mps, cpu).

    bf16_supported: the CUDA GPU has bfloat16 (Ampere or newer). cpu_bf16_faster: a measurement
    (cpu_bf16_speedup) found bfloat16 autocast faster than float32 for this model on this CPU.
    MPS defaults to float32 and no compile: float16 there gives NaNs in training and torch.compile fails.
    """
    if device_type not in ("cuda", "mps", "cpu"):
        raise ConfigError(f"unknown device type {device_type!r}: expected cuda, mps or cpu")
    if dtype == "auto":
        if device_type == "cuda":
            dtype = "bfloat16" if bf16_supported else "float16"
            why = "bfloat16 on a GPU that has it" if bf16_supported else "float16: this GPU has no bfloat16"
        elif device_type == "cpu" and cpu_bf16_faster:
            dtype, why = "bfloat16", "bfloat16: measured faster than float32 for this model on this CPU"
        else:
            dtype = "float32"
            why = "float32: bfloat16 was not measured faster on this CPU" if device_type == "cpu" else "float32, safe on MPS"
    else:
        why = f"{dtype} as asked"
    if dtype == "bfloat16" and device_type == "cuda" and not bf16_supported:
        raise ConfigError("this GPU has no bfloat16: use --dtype=float16 (with loss scaling) or --dtype=float32")
    if dtype == "float16" and device_type == "cpu":
        raise ConfigError("float16 on the CPU is slow and needs loss scaling: use --dtype=bfloat16 or float32")
    if compile is None:
        compile = device_type == "cuda"
    elif compile and device_type == "mps":
        raise ConfigError("torch.compile does not work on MPS: use --no-compile")
    autocast_dtype = None if dtype == "float32" else getattr(torch, dtype)
    grad_scaler = dtype == "float16" and device_type == "cuda"
    reason = f"{why}; {'with' if grad_scaler else 'no'} loss scaling; {'with' if compile else 'no'} torch.compile"
    return Precision(autocast_dtype, grad_scaler, compile, reason)


def cpu_bf16_speedup(model, block_size, *, tokens=1024, rounds=3):
    """How many times faster a forward+backward step of model runs under bfloat16 autocast than in
    float32 on this CPU (above 1: bfloat16 wins). Matrix units pay off only for wide enough matrices,
    so this is measured on the actual model rather than guessed, on steps of about `tokens` tokens.
    Leaves weights and RNG untouched."""
    shape = (max(1, tokens // block_size), block_size)
    idx = torch.randint(0, model.config.vocab_size, shape, generator=torch.Generator().manual_seed(0))

    def step_time(dtype):
        start = time.perf_counter()
        with autocast("cpu", dtype):
            _, loss = model(idx, idx)
        loss.backward()
        return time.perf_counter() - start

    with torch.random.fork_rng(devices=[]):
        step_time(None)  # warm-up: the first call allocates memory and picks kernels
        times = {None: [step_time(None)], torch.bfloat16: [step_time(torch.bfloat16)]}
        if times[torch.bfloat16][0] < 3 * times[None][0]:  # else bfloat16 lost by far, even counting its warm-up
            for _ in range(rounds):  # alternate, so a burst of load from other processes hits both alike
                for dtype in times:
                    times[dtype].append(step_time(dtype))
    model.zero_grad(set_to_none=True)
    return min(times[None]) / min(times[torch.bfloat16])


def autocast(device_type, dtype):
    """Mixed precision for forward passes, or nothing when dtype is None (plain float32)."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device_type, dtype=dtype)


def choose_precision(device, dtype, compile, model, block_size, world_size=1):
    """precision_policy for a real device and model: on a CPU with dtype "auto", first measure whether
    bfloat16 autocast pays off for this model (all processes adopt the first one's measurement)."""
    speedup, note = 0.0, ""
    if device.type == "cpu" and dtype == "auto":
        capability = torch.backends.cpu.get_cpu_capability()
        if capability in ("AVX2", "NO AVX"):  # x86 without AVX-512 has no bfloat16 units: skip measuring
            note = f" ({capability} CPU: no bfloat16 units)"
        else:
            measured = torch.tensor(cpu_bf16_speedup(model, block_size) if IS_MAIN else 0.0)
            if world_size > 1:
                dist.broadcast(measured, src=0)
            speedup = measured.item()
            note = f" (bfloat16 measured x{speedup:.2f} the speed of float32)"
    bf16_supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    precision = precision_policy(device.type, dtype, compile, bf16_supported, cpu_bf16_faster=speedup > 1.0)
    return dataclasses.replace(precision, reason=precision.reason + note)


# ----------------------------------------------------------------------------------------------------
# Optimization


def build_optimizer(model, lr, weight_decay, betas, device_type):
    """AdamW. Weight decay applies to matrices (linear weights, embeddings) only; biases and norm
    gains stay free, as decaying them toward zero only hurts. Fused kernels on cuda, mps and cpu."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type in ("cuda", "mps", "cpu"))


def fitted_horizon(max_iters, step, steps_done, loop_s, left_s):
    """The step a run under a time budget should end at: as many steps as fit in left_s seconds at the
    pace of the steps_done steps so far (loop_s seconds, evaluations included), never past max_iters
    and never before step + 1. Recomputed as the run goes, so a machine that slows down (or speeds up)
    moves the end, and the cosine schedule, which decays by this step, still ends at min_lr."""
    steps_left = int(left_s * steps_done / loop_s) if steps_done and loop_s > 0 else max_iters
    return max(step + 1, min(max_iters, step + steps_left))


def lr_at(step, lr, min_lr, warmup_iters, decay_iters):
    """Linear warmup to lr over warmup_iters, then cosine decay to min_lr at decay_iters, then flat."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


# ----------------------------------------------------------------------------------------------------
# Batches: a function of (seed, step, shard) only, so a resumed run reads exactly the same data


def train_batch(data, block_size, batch_size, seed, step, shard, device):
    """(x, y), each (batch_size, block_size): random windows of data and the same shifted by one.
    shard numbers the micro-batches of one step across processes (rank * grad_accum + micro)."""
    offsets = np.random.default_rng([seed, step, shard]).integers(0, len(data) - block_size, size=batch_size)
    return windows(data, offsets, block_size, device)


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


@torch.no_grad()
def evaluate(model, batches, precision, device, rank=0, world_size=1):
    """Mean loss per target token over batches, shared out across processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of token losses, token count)
    for i, (x, y) in enumerate(batches):
        if i % world_size == rank:
            with autocast(device.type, precision.autocast_dtype):
                _, loss = model(x, y)
            n = (y != -100).sum()
            total += torch.stack([loss.double() * n, n.double()])
    if world_size > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


# ----------------------------------------------------------------------------------------------------
# Logging: only the first process prints and writes

IS_MAIN = int(os.environ.get("RANK", "0")) == 0  # torchrun sets RANK for every process it starts


def log(*parts):
    """Print a line above the progress bar (first process only)."""
    if IS_MAIN:
        tqdm.write(" ".join(str(p) for p in parts))


def append_metrics(path, **record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path):
    """The records of a metrics.jsonl. A line cut short by a killed process is skipped."""
    path = Path(path)
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_losses(metrics_path, png_path):
    """Train and validation loss against step, from metrics.jsonl, redrawn whole each time."""
    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "val (fixed sample)"), ("val_loss_whole", "val (whole split)")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), "o" if key == "val_loss_whole" else "-", label=label)
    ax.set(xlabel="step", ylabel="loss (nats per token)", title=str(Path(png_path).parent))
    ax.grid(alpha=0.3)
    ax.legend()
    tmp = f"{png_path}.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


# ----------------------------------------------------------------------------------------------------
# Faults: resume state, Ctrl-C, NaN


def rng_state():
    """Every random-number generator training touches, as tensors (loadable with weights_only=True)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


@contextmanager
def stop_requests():
    """Yield an Event that Ctrl-C (SIGINT) or SIGTERM sets instead of killing the process, so the loop
    can finish its step, save and exit cleanly. A second Ctrl-C interrupts at once, as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(sig, frame):
        stop.set()
        signal.signal(sig, previous[sig])

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------------------
# Distributed: torchrun starts one process per device and sets RANK, LOCAL_RANK and WORLD_SIZE


def setup_distributed(device_name):
    """(rank, world_size, device). Outside torchrun: (0, 1, the chosen device)."""
    try:
        device = pick_device(device_name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if "RANK" not in os.environ:
        return 0, 1, device
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "mps":
        raise ConfigError("torchrun with mps is not supported: Apple GPUs have one device; run python train.py")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return rank, world_size, device


# ----------------------------------------------------------------------------------------------------
# The training loop

# Settings a resumed run cannot change: the weights and token files depend on them.
FIXED_ON_RESUME = ("data", "tokenizer", "bpe_vocab_size", "n_layer", "n_head", "n_embd", "block_size", "bias",
                   "rope")


def resume_config(cfg, argv):
    """The settings of the run in cfg.out_dir/last.pt, overridden by anything given now."""
    path = Path(cfg.out_dir) / "last.pt"
    if not path.exists():
        raise ConfigError(f"--resume: {path} does not exist; start the run without --resume")
    ckpt = load_checkpoint(path)
    # The model's own config says how its weights are laid out; runs from before rotary embeddings
    # existed have no rope setting and learned positions.
    saved = {**ckpt["train_config"], "rope": ckpt["config"].get("rope", False)}
    resumed = parse_config(TrainConfig, argv, base=saved, base_source=str(path))
    changed = [f"{k} ({saved[k]!r} -> {getattr(resumed, k)!r})" for k in FIXED_ON_RESUME if getattr(resumed, k) != saved[k]]
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming {cfg.out_dir}; use a new --out_dir")
    return resumed, ckpt


def main(argv=None):
    """Train; returns a summary dict (also printed). Raises ConfigError, DataError or CheckpointError
    for bad settings or inputs; cli() turns those into a one-line message."""
    global IS_MAIN
    launched = time.time()  # the time budget counts from here: data preparation and setup included
    cfg = parse_config(TrainConfig, argv)
    ckpt = None
    if cfg.resume:
        cfg, ckpt = resume_config(cfg, argv)
    rank, world_size, device = setup_distributed(cfg.device)
    IS_MAIN = rank == 0
    try:
        with stop_requests() as stop:
            return train(cfg, ckpt, rank, world_size, device, stop, launched)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def prepared_data(cfg, rank, world_size):
    """The token files for cfg.data: the first process prepares them while the others wait, then reads."""
    def load():
        return prepare(cfg.data, cfg.tokenizer, cfg.bpe_vocab_size, cfg.block_size, cache_root=cfg.data_dir)

    data = load() if rank == 0 else None
    if world_size > 1:
        dist.barrier()
    return data or load()


def train(cfg, ckpt, rank, world_size, device, stop, launched):
    out = Path(cfg.out_dir)
    data = prepared_data(cfg, rank, world_size)
    torch.manual_seed(cfg.seed + rank)  # DDP copies rank 0's initial weights to every process
    raw_model = GPT(model_config(cfg, data.tokenizer.vocab_size)).to(device)
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
    precision = choose_precision(device, cfg.dtype, cfg.compile, raw_model, cfg.block_size, world_size)
    optimizer = build_optimizer(raw_model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    start_step, best_val = 0, math.inf
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_step, best_val = ckpt["step"], ckpt["best_val_loss"]
        if len(ckpt["rng"]) == world_size:
            set_rng_state(ckpt["rng"][rank])
        else:
            log(f"resuming with {world_size} processes instead of {len(ckpt['rng'])}: dropout randomness starts afresh")
    model = torch.compile(raw_model) if precision.compile else raw_model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics_path, tokens_per_step = out / "metrics.jsonl", cfg.batch_size * cfg.block_size * cfg.grad_accum * world_size
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        # A resumed run replays from its checkpoint; drop what an interrupted run logged after it.
        kept = [r for r in read_metrics(metrics_path) if r["step"] < start_step]
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    log(f"{out}: {raw_model.num_params() / 1e6:.2f}M parameters, {cfg.n_layer} layers x {cfg.n_embd} wide, "
        f"context {cfg.block_size}, {data.name} ({cfg.tokenizer}, vocab {data.tokenizer.vocab_size}: "
        f"{len(data.train):,} train / {len(data.val):,} val tokens)")
    log(f"{device.type} x {world_size}: {precision.reason}; {tokens_per_step:,} tokens per step"
        + (f", resuming at step {start_step}" if start_step else ""))

    val_batches = fixed_val_batches(data.val, cfg.block_size, cfg.batch_size, cfg.eval_iters, cfg.seed, device)
    # The time budget must leave room for the final evaluation on the whole validation split.
    whole_val_batches = math.ceil(len(data.val) / (cfg.block_size * cfg.batch_size * world_size))
    final_eval_s = 0.0

    def save(path, step, **extra):
        save_checkpoint(path, raw_model, data.tokenizer, kind="pretrained", step=step,
                        train_config=asdict(cfg), **extra)

    def training_state():
        states = [None] * world_size
        if world_size > 1:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        return {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": states,
                "best_val_loss": best_val}

    def evaluate_and_save(step):
        nonlocal best_val, final_eval_s
        began = time.time()
        val_loss = evaluate(raw_model, val_batches, precision, device, rank, world_size)
        final_eval_s = (time.time() - began) * whole_val_batches / len(val_batches)
        state = training_state()  # every process must join the gather
        if rank == 0:
            append_metrics(metrics_path, step=step, val_loss=val_loss)
            if val_loss < best_val:
                best_val = state["best_val_loss"] = val_loss
                save(out / "ckpt.pt", step, val_loss=val_loss)
            save(out / "last.pt", step, **state)
            plot_losses(metrics_path, out / "loss.png")
            log(f"step {step}: val loss {val_loss:.4f} (best {best_val:.4f})\n{sample_text(raw_model, data.tokenizer, cfg, device)}")

    status, started = "done", time.time()
    last_log = (start_step, started)  # (step, time) of the last throughput measurement
    horizon = cfg.max_iters  # the step the run ends at; a time budget may bring it forward
    bar = tqdm(total=cfg.max_iters, initial=start_step, disable=None if rank == 0 else True, unit="step", dynamic_ncols=True)
    for step in range(start_step, cfg.max_iters + 1):
        fresh_eval = step % cfg.eval_interval == 0 and (step != start_step or ckpt is None)  # a resumed step was evaluated
        if fresh_eval or step == horizon:
            evaluate_and_save(step)
            last_log = (step, time.time())
        if step == horizon:
            break
        lr = lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters or horizon)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(model, optimizer, scaler, data.train, cfg, precision, step, rank, device)
        if cfg.max_minutes > 0 and rank == 0:
            now = time.time()
            horizon = fitted_horizon(cfg.max_iters, step, step + 1 - start_step, now - started,
                                     60 * cfg.max_minutes - (now - launched) - final_eval_s)
        # Rank 0 alone decides the horizon (others add 0), so every process stops at the same step.
        status_tensor = torch.tensor([loss, stop.is_set(), horizon if rank == 0 else 0], dtype=torch.float64, device=device)
        if world_size > 1:  # average the loss and agree on stopping, so every process leaves the loop together
            dist.all_reduce(status_tensor)
            status_tensor[0] /= world_size
        loss, stop_now, horizon = status_tensor[0].item(), status_tensor[1].item() > 0, int(status_tensor[2].item())
        bar.update(1)
        if not math.isfinite(loss):
            log(f"step {step}: the loss is {loss}; stopping without saving, so {out}/ckpt.pt and last.pt keep the "
                "last good state. Try a lower --lr, a smaller --grad_clip, or --dtype=float32 / bfloat16 instead of float16")
            status = "nonfinite"
            break
        if (step + 1) % cfg.log_interval == 0:
            now = time.time()
            tokens_per_s = (step + 1 - last_log[0]) * tokens_per_step / max(now - last_log[1], 1e-9)
            last_log = (step + 1, now)
            bar.total = horizon  # so the bar's ETA is the time budget's
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            if rank == 0:
                append_metrics(metrics_path, step=step, train_loss=loss, lr=lr, tokens_per_s=round(tokens_per_s),
                               elapsed_s=round(now - started, 2))
        if stop_now:
            step += 1
            evaluate_and_save(step)
            status = "interrupted"
            log(f"stop requested at step {step}: saved {out}/last.pt; continue with python train.py --resume --out_dir={out}")
            break
    bar.close()
    return finish(cfg, raw_model, data, precision, device, rank, world_size, status, step, start_step, started,
                  launched, tokens_per_step, best_val)


def train_step(model, optimizer, scaler, train_data, cfg, precision, step, rank, device):
    """One optimizer step over grad_accum micro-batches; returns this process's mean loss."""
    total = 0.0
    for micro in range(cfg.grad_accum):
        x, y = train_batch(train_data, cfg.block_size, cfg.batch_size, cfg.seed, step, rank * cfg.grad_accum + micro, device)
        # DDP averages gradients across processes at backward(); skip that until the last micro-batch.
        last = micro == cfg.grad_accum - 1
        with (model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()):
            with autocast(device.type, precision.autocast_dtype):
                _, loss = model(x, y)
            scaler.scale(loss / cfg.grad_accum).backward()
        total += loss.item() / cfg.grad_accum
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total


def sample_text(model, tokenizer, cfg, device):
    prompt = tokenizer.encode(cfg.sample_prompt) or [0]
    model.eval()
    ids = model.generate(torch.tensor([prompt], device=device), cfg.sample_tokens, temperature=0.8, seed=cfg.seed)
    model.train()
    return tokenizer.decode(ids[0].tolist())


def finish(cfg, model, data, precision, device, rank, world_size, status, step, start_step, started, launched,
           tokens_per_step, best_val):
    """The whole validation split on the final model, then a one-screen summary."""
    out = Path(cfg.out_dir)
    summary = {"status": status, "out_dir": str(out), "steps": step, "parameters": model.num_params(),
               "tokens_seen": step * tokens_per_step,
               "tokens_per_s": round((step - start_step) * tokens_per_step / max(time.time() - started, 1e-9)),
               "best_val_loss": best_val, "checkpoint": str(out / "ckpt.pt"), "precision": precision.reason}
    if status == "done":
        batches = whole_split_batches(data.val, cfg.block_size, cfg.batch_size, device)
        summary["val_loss_whole"] = evaluate(model, batches, precision, device, rank, world_size)
        if rank == 0:
            append_metrics(out / "metrics.jsonl", step=step, val_loss_whole=summary["val_loss_whole"])
            plot_losses(out / "metrics.jsonl", out / "loss.png")
    summary["minutes"] = round((time.time() - launched) / 60, 2)  # everything, from data preparation on
    lines = [f"{status}: {step} steps, {summary['tokens_seen'] / 1e6:.1f}M tokens in {summary['minutes']:.1f} min "
             f"({summary['tokens_per_s']:,} tokens/s while training), {summary['parameters'] / 1e6:.2f}M parameters"]
    if status == "done" and step < cfg.max_iters:
        lines.append(f"the {cfg.max_minutes}-minute budget (--max_minutes) fitted {step} of {cfg.max_iters} steps; "
                     "--max_minutes=0 runs them all")
    lines.append(f"best val loss {best_val:.4f} (fixed sample of {cfg.eval_iters} batches)")
    if "val_loss_whole" in summary:
        lines.append(f"final val loss {summary['val_loss_whole']:.4f} (whole validation split)")
    lines.append(f"checkpoint {out}/ckpt.pt; sample it: python gpt.py --ckpt {out}/ckpt.pt --prompt \"And\"")
    log("\n".join(lines))
    return summary


def cli():
    try:
        summary = main()
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit({"done": 0, "interrupted": 130, "nonfinite": 1}[summary["status"]])


if __name__ == "__main__":
    cli()
