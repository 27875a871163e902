"""
trainer.py: the machinery every training run shares, used by train.py (pretraining) and finetune.py.

A script builds a Task (its model, its batches, its validation batches, what its checkpoints hold)
and calls train_loop(). Everything else is the same for every task and lives here, once:
  1. configuration   one dataclass per script; flags, TOML/JSON files and defaults come from its fields
  2. precision       autocast dtype, loss scaling and torch.compile, decided from facts about the device
  3. optimization    AdamW, warmup then cosine decay, and a time budget that fits the schedule to the machine
  4. the run folder  one run per folder at a time (a lock), an earlier run kept aside, metrics and plot
  5. the loop        resume, evaluation, the best model kept, early stop, NaN stop, Ctrl-C, DDP
"""
import argparse
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import tomllib
import typing
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data import DataError  # noqa: E402
from data.jsonl import read_jsonl  # noqa: E402
from gpt import CheckpointError, load_checkpoint, pick_device, save_checkpoint  # noqa: E402

try:
    import fcntl  # file locks on Linux and macOS
except ImportError:  # Windows: runs are not locked against each other there
    fcntl = None

# ----------------------------------------------------------------------------------------------------
# 1. Configuration


class ConfigError(ValueError):
    """A setting that cannot work; the scripts print it as one line and exit with status 2."""


@dataclass
class RunConfig:
    """Settings every training run has. train.TrainConfig and finetune.FinetuneConfig add their own."""

    out_dir: str = ""  # where checkpoints, metrics and the plot go; each script has a default
    # optimization
    optimizer: str = "adamw"  # adamw, or muon: Muon for the blocks' weight matrices and AdamW for the rest
    batch_size: int = 16  # sequences per micro-batch, per process
    grad_accum: int = 1  # micro-batches per step, per process; global batch = batch_size * grad_accum * processes
    max_iters: int = 3000  # the most steps; on a CPU the time budget usually ends the run first
    lr: float = 3e-3  # the peak learning rate, reached after warmup (AdamW's, with --optimizer=muon)
    min_lr: typing.Optional[float] = None  # where the cosine decay ends; None: lr / 10. Muon's rate follows, scaled
    muon_lr: float = 0.02  # Muon's peak learning rate, with --optimizer=muon
    warmup_iters: int = 200
    lr_decay_iters: int = 0  # the step at which the cosine reaches min_lr; 0: the run's last step
    weight_decay: float = 0.1  # on weight matrices only
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # the largest gradient norm; 0 turns clipping off
    # evaluation and logging
    eval_interval: int = 300  # steps between evaluations; each keeps ckpt.pt if it is the best so far
    patience: int = 3  # stop once the validation loss has risen this many evaluations in a row; 0: never
    log_interval: int = 10
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto, float32, bfloat16 or float16
    compile: typing.Optional[bool] = None  # None: on for CUDA only
    seed: int = 1337
    resume: bool = False  # continue the run in out_dir from its last.pt
    max_minutes: float = 4.5  # time budget from start to summary; the schedule is fitted to it; 0: no budget

    # Allowed values, in interval notation: "[" and "]" include the bound, "(" and ")" leave it out.
    RANGES: typing.ClassVar[dict] = {
        "batch_size": "[1, inf)", "grad_accum": "[1, inf)", "max_iters": "[1, inf)", "lr": "(0, inf)",
        "min_lr": "[0, inf)", "warmup_iters": "[0, inf)", "lr_decay_iters": "[0, inf)",
        "weight_decay": "[0, inf)", "beta1": "[0, 1)", "beta2": "[0, 1)", "grad_clip": "[0, inf)",
        "eval_interval": "[1, inf)", "patience": "[0, inf)", "log_interval": "[1, inf)",
        "seed": "[0, 4294967295]", "max_minutes": "[0, inf)", "muon_lr": "(0, inf)"}
    CHOICES: typing.ClassVar[dict] = {"optimizer": ("adamw", "muon"), "dtype": ("auto", "float32", "bfloat16", "float16")}

    def __post_init__(self):
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        for key, allowed in self.CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"--{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key, interval in self.RANGES.items():
            check_range(key, getattr(self, key), interval)
        if self.min_lr > self.lr:
            raise ConfigError(f"--min_lr ({self.min_lr}) must not exceed --lr ({self.lr}): the schedule decays from lr to min_lr")


def check_range(key, value, interval):
    """ConfigError unless value is a finite number in interval, e.g. "[0, 1)": 0 allowed, 1 not."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    if not (math.isfinite(value) and above and below):
        words = [f"{'at least' if interval[0] == '[' else 'above'} {low:g}"]
        if high != math.inf:
            words.append(f"{'at most' if interval[-1] == ']' else 'below'} {int(high) if high.is_integer() else high}")
        finite = "" if math.isfinite(value) or math.isnan(value) else " (a finite number)"
        raise ConfigError(f"--{key} must be {' and '.join(words)}{finite}, got {value}")


def parse_config(config_cls, argv=None, base=None, base_source="base settings", defaults=None):
    """A config_cls dataclass from defaults < defaults(settings) < base (a dict, e.g. a resumed run's
    settings, named base_source in errors) < --config FILE (TOML or JSON) < command-line flags.
    defaults, if given, maps the settings gathered from the other sources to more defaults: for
    defaults that depend on another setting, such as finetune.py's task.

    Every field becomes a flag: `--n_layer=6` or `--lr 3e-4`; booleans as --compile / --no-compile.
    Unknown keys, wrong types and values out of range raise ConfigError naming the key and its source.
    """
    types = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    parser = argparse.ArgumentParser(description=config_cls.__doc__, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--config", metavar="FILE", help="a TOML or JSON file of key = value settings")
    for f in dataclasses.fields(config_cls):
        kind = value_type(types[f.name])
        help = f"{kind.__name__}, default {f.default!r}".replace("%", "%%")  # argparse formats help with %
        action = argparse.BooleanOptionalAction if kind is bool else None
        parser.add_argument(f"--{f.name}", action=action, metavar=None if action else kind.__name__.upper(),
                            default=argparse.SUPPRESS, help=help)
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(f"command line: {e}") from None
    if unknown:
        word = unknown[0]
        if not word.startswith("--"):
            raise ConfigError(f"command line: unexpected argument {word!r}; settings look like --key=value")
        raise ConfigError(unknown_key(word[2:].split("=")[0], names, "command line"))
    flags = vars(args)
    config_file = flags.pop("config", None)
    values = {}
    sources = [(base_source, base or {}), (config_file, read_config_file(config_file) if config_file else {}),
               ("command line", flags)]
    for source, settings in sources:
        for key, value in settings.items():
            if key not in types:
                raise ConfigError(unknown_key(key, names, source))
            values[key] = typed(value, types[key], key, source, from_text=source == "command line")
    return config_cls(**{**(defaults(values) if defaults else {}), **values})


def value_type(annotation):
    """int, float, str or bool, from a field's annotation (Optional[X] gives X)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
    if kind not in (int, float, str, bool):
        raise TypeError(f"config fields must be int, float, str, bool or Optional of one, not {annotation}")
    return kind


def typed(value, annotation, key, source, from_text):
    """value as the field's type, or a ConfigError naming the key and where the value came from."""
    kind, optional = value_type(annotation), type(None) in typing.get_args(annotation)
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


def unknown_key(key, names, source):
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else "see --help for the valid keys"
    return f"{source}: unknown key {key!r}; {hint}"


def read_config_file(path):
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; --config expects a .toml or .json file")
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
# 2. Precision: one pure policy, decided from facts about the device, so it can be tested anywhere


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


BF16_MARGIN = 1.2  # how many times faster bfloat16 must measure on a CPU to be chosen by --dtype=auto


def choose_precision(device, dtype, compile, gpt_model, world_size=1):
    """precision_policy for a real device and model: on a CPU with dtype "auto", first measure whether
    bfloat16 autocast pays off for this model (all processes adopt the first one's measurement)."""
    speedup, note = 0.0, ""
    if device.type == "cpu" and dtype == "auto":
        capability = torch.backends.cpu.get_cpu_capability()
        if capability in ("AVX2", "NO AVX"):  # x86 without AVX-512 has no bfloat16 units: skip measuring
            note = f" ({capability} CPU: no bfloat16 units)"
        else:
            main = rank() == 0
            measured = torch.tensor(cpu_bf16_speedup(gpt_model, gpt_model.config.block_size) if main else 0.0)
            if world_size > 1:
                dist.broadcast(measured, src=0)
            speedup = measured.item()
            note = f" (bfloat16 measured x{speedup:.2f} the speed of float32)"
    bf16_supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    # bfloat16 must win clearly: its rounding costs some accuracy, and a timing within noise of 1.0 flips from run to run.
    precision = precision_policy(device.type, dtype, compile, bf16_supported, cpu_bf16_faster=speedup > BF16_MARGIN)
    return dataclasses.replace(precision, reason=precision.reason + note)


# ----------------------------------------------------------------------------------------------------
# 3. Optimization


def build_optimizers(model, cfg, device_type):
    """The optimizers for the trainable parameters of model, as a list (the loop steps each). Each
    parameter group remembers its peak learning rate, which the schedule scales.

    AdamW, with weight decay on matrices (embeddings, linear weights) only: decaying biases and norm
    gains toward zero only hurts. With cfg.optimizer == "muon", the weight matrices inside the blocks
    go to Muon instead; embeddings, the output head, biases and gains stay with AdamW, as in the speed
    records that made Muon known."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    hidden = [p for name, p in named if cfg.optimizer == "muon" and "blocks." in name and p.dim() == 2]
    rest = [p for _, p in named if not any(p is h for h in hidden)]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay, "peak_lr": cfg.lr},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "peak_lr": cfg.lr}]
    optimizers = [torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                    fused=device_type in ("cuda", "mps", "cpu"))]
    if hidden:
        optimizers.append(Muon([{"params": hidden, "peak_lr": cfg.muon_lr}], lr=cfg.muon_lr))
    return optimizers


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for weight matrices: momentum SGD whose update is orthogonalised first,
    so that it moves the matrix by a similar amount in every direction, rather than mostly along the few
    directions that dominate the gradient. Written out here rather than taken from torch.optim.Muon, which
    orthogonalises in bfloat16: fine on a GPU, but many times slower than float32 on a CPU without
    bfloat16 units."""

    def __init__(self, params, lr, momentum=0.95):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            by_shape = {}  # matrices of one shape are orthogonalised together, in one batched product
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                state["momentum"].lerp_(p.grad, 1 - group["momentum"])  # the running average of gradients
                by_shape.setdefault(p.shape, []).append(p)
            for (rows, cols), params in by_shape.items():
                # Nesterov: step where the momentum is headed, the gradient pulled toward its average
                updates = torch.stack([p.grad.lerp(self.state[p]["momentum"], group["momentum"]) for p in params])
                # a tall matrix's orthogonal update has smaller entries: scale them back up
                lr = group["lr"] * max(1, rows / cols) ** 0.5
                for p, update in zip(params, orthogonalise(updates)):
                    p.add_(update, alpha=-lr)


def orthogonalise(g, steps=5):
    """For each matrix of g (..., rows, cols), the matrix nearest it with all singular values near 1, by a
    Newton-Schulz iteration: five rounds of x <- a x + b (x x^T) x + c (x x^T)^2 x, whose coefficients push
    every singular value of a normalised matrix toward 1 fast (not exactly 1: Muon does not need that).
    Float32 throughout."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float() / (g.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # singular values now at most 1
    tall = x.size(-2) > x.size(-1)
    x = x.mT if tall else x  # iterate on the wide side: x x^T is then the smaller square
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


def lr_at(step, lr, min_lr, warmup_iters, decay_iters):
    """Linear warmup to lr over warmup_iters, then cosine decay to min_lr at decay_iters, then flat."""
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


def set_learning_rates(optimizers, cfg, step, horizon):
    """Every group follows the same schedule, scaled to its own peak; returns the first group's rate."""
    scale = lr_at(step, 1.0, cfg.min_lr / cfg.lr, cfg.warmup_iters, cfg.lr_decay_iters or horizon)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * scale
    return optimizers[0].param_groups[0]["lr"]


def fitted_horizon(max_iters, step, steps_done, loop_s, left_s):
    """The step a run under a time budget should end at: as many steps as fit in left_s seconds at the
    pace of the steps_done steps so far (loop_s seconds, evaluations included), never past max_iters
    and never before step + 1. Recomputed as the run goes, so a machine that slows down (or speeds up)
    moves the end, and the cosine schedule, which decays by this step, still ends at min_lr."""
    steps_left = int(left_s * steps_done / loop_s) if steps_done and loop_s > 0 else max_iters
    return max(step + 1, min(max_iters, step + steps_left))


# ----------------------------------------------------------------------------------------------------
# 4. The run folder: one run at a time, nothing trained overwritten, metrics and plot

RUN_FILES = ("ckpt.pt", "last.pt", "metrics.jsonl")  # a folder holding any of these holds a run


def rank():
    """This process's rank under torchrun (which sets RANK), else 0. Only rank 0 prints and writes."""
    return int(os.environ.get("RANK", "0"))


def log(*parts):
    """Print a line above the progress bar (first process only)."""
    if rank() == 0:
        tqdm.write(" ".join(str(p) for p in parts))


def lock_folder(out_dir):
    """Make out_dir and hold its lock file for the life of this process; ConfigError if another run
    holds it. The operating system drops the lock when a process ends, however it ends, so a run that
    crashed or was killed never leaves the folder locked."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out_dir={out_dir} is a file; it must be a folder (new or from an earlier run)")
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".lock", "a+")
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"{out_dir} is in use by another run ({owner}); wait for it to end, "
                              "or give this run its own --out_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    return handle


def keep_earlier_run_aside(out_dir):
    """Move the run files in out_dir to a new sibling folder named after when that run last wrote,
    e.g. out/kjv -> out/kjv.2026-11-25_1612; returns its path, or None if out_dir held no run."""
    out = Path(out_dir)
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return None
    stamp = time.strftime("%Y-%m-%d_%H%M", time.localtime(max(p.stat().st_mtime for p in found)))
    aside = out.with_name(f"{out.name}.{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}.{stamp}-{n}")
    aside.mkdir()
    for path in out.iterdir():
        if path.name != ".lock":  # the lock stays: this run holds it
            path.rename(aside / path.name)
    return aside


def append_metrics(path, **record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path):
    """The records of a metrics.jsonl that say their step. Lines cut short by a killed process, or
    that are not JSON, not UTF-8 or not a record with a step, are skipped with a warning."""
    if not Path(path).exists():
        return []
    rows, skipped = read_jsonl(path, skip_bad=True)
    records = [record for _, record in rows if isinstance(record.get("step"), int)]
    skipped += len(rows) - len(records)
    if skipped:
        log(f"warning: {path}: skipped {skipped} unreadable line(s)")
    return records


def restart_metrics(path, steps_done):
    """Keep what a resumed run logged up to its checkpoint (records are 'after N steps'); drop the rest."""
    kept = [r for r in read_metrics(path) if r["step"] <= steps_done]
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def write_atomically(path, payload):
    """Write bytes through a temporary file of this process's own, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f"{Path(path).name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


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
    fd, tmp = tempfile.mkstemp(dir=Path(png_path).parent, prefix="loss.", suffix=".png.tmp")
    with os.fdopen(fd, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


# ----------------------------------------------------------------------------------------------------
# 5. The loop


@dataclass
class Task:
    """What a script supplies to the loop: everything that differs between pretraining,
    classification and instruction tuning."""

    kind: str  # what the checkpoints are: "pretrained", "classifier" or "instruct"
    model: torch.nn.Module  # what trains: a GPT or a GPTClassifier; model(x, y) -> (logits, loss)
    tokenizer: object
    batches: typing.Callable  # batches(start_step, rank, world_size) -> iterator of (x, y) micro-batches
    val_batches: list  # [(x, y)]: evaluated every eval_interval steps; the best model is kept as ckpt.pt
    command: str  # how the script is run, for messages: "python train.py"
    extras: dict = field(default_factory=dict)  # saved in every checkpoint: the script's config, labels...
    val_name: str = "val"  # what the validation batches are called in the log
    after_loop_batches: int = 0  # evaluation batches the script runs after the loop: the time budget
    after_loop_s: float = 0.0  # keeps room for them, and for these seconds of other work (answering)
    sample: typing.Optional[typing.Callable] = None  # sample(model) -> text shown at each evaluation


@dataclass
class Run:
    """Where this process trains, from start_run()."""

    rank: int
    world_size: int
    device: torch.device
    stop: threading.Event  # set by Ctrl-C or SIGTERM
    launched: float  # time.time() when the script started: the time budget counts from here


@dataclass
class Training:
    """The model and everything that trains it; what last.pt stores to resume."""

    model: torch.nn.Module
    stepper: torch.nn.Module  # the model as trained: compiled and/or wrapped for DDP
    optimizers: list
    scaler: torch.amp.GradScaler
    precision: Precision
    step: int = 0  # steps done
    best_val: float = math.inf
    rises: int = 0  # evaluations in a row whose validation loss rose over the one before
    last_val: float = math.inf
    best_weights: typing.Optional[dict] = None  # a CPU copy of the best model, restored at the end
    eval_batch_s: float = 0.0  # seconds per evaluation batch, to keep time for the script's end


@dataclass
class Result:
    status: str  # "done", "interrupted" or "nonfinite"
    steps: int
    start_step: int
    best_val: float
    tokens_per_s: float
    precision: Precision
    note: str = ""  # why it ended before max_iters, if it did


@contextmanager
def start_run(cfg, launched):
    """Yield a Run: the device; torchrun's process group (it sets RANK, WORLD_SIZE, LOCAL_RANK), if
    any; the lock on cfg.out_dir (first process); and a stop Event that Ctrl-C (SIGINT) or SIGTERM
    sets instead of killing the process, so the loop can finish its step, save and exit cleanly. A
    second Ctrl-C interrupts at once, as usual."""
    try:
        device = pick_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"--device={cfg.device}: {e}") from None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and device.type == "mps":
        raise ConfigError("torchrun with mps is not supported: Apple GPUs have one device; run without torchrun")
    lock = lock_folder(cfg.out_dir) if rank() == 0 else None
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank(), world_size=world_size)
    stop = threading.Event()
    catching = threading.current_thread() is threading.main_thread()  # signals only reach the main thread
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if catching else {}

    def request_stop(sig, frame):
        stop.set()
        signal.signal(sig, previous[sig])

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield Run(rank(), world_size, device, stop, launched)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if world_size > 1:
            dist.destroy_process_group()
        if lock is not None:
            lock.close()


def resume_checkpoint(out_dir, config_key, command):
    """The last.pt of the run in out_dir, checked to be one that `command` can continue: it must hold
    training state, and settings under config_key ("train_config" or "finetune_config")."""
    path = Path(out_dir) / "last.pt"
    if not path.exists():
        raise ConfigError(f"--resume: {path} does not exist; start the run without --resume")
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt:
        raise CheckpointError(f"{path} holds a {ckpt['kind']} model but no training state (is it a copy of a "
                              f"ckpt.pt?); --resume needs the last.pt a run writes, or start without --resume")
    if config_key not in ckpt:
        task = {"classifier": "classify"}.get(ckpt["kind"], ckpt["kind"])
        other = "python train.py" if "train_config" in ckpt else f"python finetune.py --task={task}"
        raise CheckpointError(f"{path} was written by {other}, which {command} cannot continue: resume it with "
                              f"{other} --resume --out_dir={out_dir}")
    return ckpt


def refuse_changes(resumed_cfg, saved, fixed):
    """ConfigError if a resumed run would change a setting its weights or data depend on."""
    changed = [f"{k} ({saved[k]!r} -> {getattr(resumed_cfg, k)!r})" for k in fixed if getattr(resumed_cfg, k) != saved[k]]
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming {resumed_cfg.out_dir}; "
                          "start a new run with another --out_dir instead")


def train_loop(cfg, task, run, resumed=None):
    """Train task.model under cfg, evaluating every eval_interval steps; returns a Result.

    Writes to cfg.out_dir (first process only): ckpt.pt, the best model by validation loss; last.pt,
    everything needed to resume; metrics.jsonl and loss.png. With status "done" the model ends as the
    best one evaluated. resumed: a checkpoint from resume_checkpoint, to continue exactly."""
    t = setup(cfg, task, run, resumed)
    start_step, horizon, status, note, tokens, started = t.step, cfg.max_iters, "done", "", 0, time.time()
    batches = task.batches(start_step, run.rank, run.world_size)
    bar = tqdm(total=cfg.max_iters, initial=start_step, disable=None if run.rank == 0 else True, unit="step",
               dynamic_ncols=True)
    for step in range(start_step, cfg.max_iters + 1):
        if step == horizon or (step % cfg.eval_interval == 0 and (step > start_step or resumed is None)):
            evaluate_and_save(cfg, task, run, t, step)
            if cfg.patience and t.rises >= cfg.patience and step < horizon:  # overfitting: learning is over
                note = (f"stopped early at step {step}: the {task.val_name} loss rose {cfg.patience} evaluations in a "
                        f"row (best {t.best_val:.4f}, kept in ckpt.pt)")
                break
        if step == horizon:
            break
        lr = set_learning_rates(t.optimizers, cfg, step, horizon)
        loss, n_tokens = train_step(t, batches, cfg, run.device)
        tokens += n_tokens * run.world_size
        horizon, stop_now, loss = agree(cfg, run, task, t, horizon, step, start_step, started, loss)
        bar.update(1)
        if not math.isfinite(loss):
            status, note = "nonfinite", (f"step {step + 1}: the loss is {loss}; stopped without saving, so ckpt.pt and "
                                         "last.pt keep the last good state. Try a lower --lr, a smaller "
                                         "--grad_clip, or --dtype=float32 or bfloat16 instead of float16")
            break
        if (step + 1) % cfg.log_interval == 0 and run.rank == 0:
            bar.total = horizon  # so the bar's ETA is the time budget's
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            append_metrics(Path(cfg.out_dir) / "metrics.jsonl", step=step + 1, train_loss=loss, lr=lr,
                           tokens_per_s=round(tokens / max(time.time() - started, 1e-9)),
                           elapsed_s=round(time.time() - run.launched, 2))
        if stop_now:
            evaluate_and_save(cfg, task, run, t, step + 1)
            status, note = "interrupted", (f"stopped at step {step + 1} as asked: saved {cfg.out_dir}/last.pt; "
                                           f"continue with {task.command} --resume --out_dir={cfg.out_dir}")
            break
    bar.close()
    if status == "done" and t.best_weights is not None:
        t.model.load_state_dict(t.best_weights)
    return Result(status, t.step, start_step, t.best_val, tokens / max(time.time() - started, 1e-9), t.precision, note)


def setup(cfg, task, run, resumed):
    """The Training for task.model: precision, optimizers, loss scaler; restored from a resumed run's
    checkpoint (the script already loaded its weights); the run folder made ready."""
    model = task.model.to(run.device).train()
    precision = choose_precision(run.device, cfg.dtype, cfg.compile, getattr(model, "gpt", model), run.world_size)
    stepper = torch.compile(model) if precision.compile else model
    if run.world_size > 1:
        stepper = DistributedDataParallel(stepper, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    t = Training(model, stepper, build_optimizers(model, cfg, run.device.type),
                 torch.amp.GradScaler(run.device.type, enabled=precision.grad_scaler), precision)
    if resumed is not None:
        states = resumed["optimizer"] if isinstance(resumed["optimizer"], list) else [resumed["optimizer"]]
        for optimizer, state in zip(t.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
        t.scaler.load_state_dict(resumed["scaler"])
        t.step, t.best_val = resumed["step"], resumed["best_val_loss"]
        t.rises, t.last_val = resumed.get("rises", 0), resumed.get("val_loss", math.inf)
        if len(resumed["rng"]) == run.world_size:
            set_rng_state(resumed["rng"][run.rank])
        else:
            log(f"resuming with {run.world_size} processes instead of {len(resumed['rng'])}: dropout randomness starts afresh")
    out = Path(cfg.out_dir)
    if run.rank == 0 and resumed is not None:
        restart_metrics(out / "metrics.jsonl", t.step)
    elif run.rank == 0 and (aside := keep_earlier_run_aside(out)) is not None:
        log(f"{out} held an earlier run: kept it as {aside} (continue that one with {task.command} "
            f"--resume --out_dir={aside})")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{out}: {trainable / 1e6:.2f}M of {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters train; "
        f"{run.device.type} x {run.world_size}: {precision.reason}" + (f"; resuming at step {t.step}" if t.step else ""))
    return t


def train_step(t, batches, cfg, device):
    """One optimizer step over grad_accum micro-batches; returns (this process's mean loss, tokens)."""
    total, tokens = 0.0, 0
    for micro in range(cfg.grad_accum):
        x, y = next(batches)
        # DDP averages gradients across processes at backward(); skip that until the last micro-batch.
        last = micro == cfg.grad_accum - 1
        with (t.stepper.no_sync() if isinstance(t.stepper, DistributedDataParallel) and not last else nullcontext()):
            with autocast(device.type, t.precision.autocast_dtype):
                _, loss = t.stepper(x, y)
            t.scaler.scale(loss / cfg.grad_accum).backward()
        total, tokens = total + loss.item() / cfg.grad_accum, tokens + x.numel()
    for optimizer in t.optimizers:
        t.scaler.unscale_(optimizer)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.grad_clip)
    for optimizer in t.optimizers:
        t.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
    t.scaler.update()
    return total, tokens


def agree(cfg, run, task, t, horizon, step, start_step, started, loss):
    """After a step: where the run ends (the time budget, refitted), whether to stop now, and the loss
    averaged over processes. The first process decides the horizon (the others add 0) and any process
    may ask to stop, so every process leaves the loop at the same step."""
    if cfg.max_minutes > 0 and run.rank == 0:
        now = time.time()
        reserve = t.eval_batch_s * task.after_loop_batches + task.after_loop_s
        horizon = fitted_horizon(cfg.max_iters, step, step + 1 - start_step, now - started,
                                 60 * cfg.max_minutes - (now - run.launched) - reserve)
    status = torch.tensor([loss, run.stop.is_set(), horizon if run.rank == 0 else 0], dtype=torch.float64,
                          device=run.device)
    if run.world_size > 1:
        dist.all_reduce(status)
        status[0] /= run.world_size
    return int(status[2].item()), status[1].item() > 0, status[0].item()


def evaluate_and_save(cfg, task, run, t, step):
    """Evaluate on task.val_batches; keep the model as ckpt.pt if it is the best so far, and the whole
    training state as last.pt (first process)."""
    began = time.time()
    val_loss = evaluate(t.model, task.val_batches, t.precision, run.device, run.rank, run.world_size)
    t.eval_batch_s = (time.time() - began) / len(task.val_batches)
    improved = val_loss < t.best_val
    t.step, t.best_val = step, min(t.best_val, val_loss)
    t.rises, t.last_val = (t.rises + 1 if val_loss > t.last_val else 0), val_loss
    if improved:
        t.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in t.model.state_dict().items()}
    rngs = gathered_rng_states(run)  # every process must join the gather
    if run.rank != 0:
        return
    out = Path(cfg.out_dir)
    append_metrics(out / "metrics.jsonl", step=step, val_loss=val_loss)
    if improved:
        save_checkpoint(out / "ckpt.pt", t.model, task.tokenizer, kind=task.kind, step=step, val_loss=val_loss,
                        **task.extras)
    save_checkpoint(out / "last.pt", t.model, task.tokenizer, kind=task.kind, step=step, val_loss=val_loss,
                    optimizer=[o.state_dict() for o in t.optimizers], scaler=t.scaler.state_dict(), rng=rngs,
                    best_val_loss=t.best_val, rises=t.rises, **task.extras)
    plot_losses(out / "metrics.jsonl", out / "loss.png")
    sample = f"\n{task.sample(t.model)}" if task.sample else ""
    log(f"step {step}: {task.val_name} loss {val_loss:.4f} (best {t.best_val:.4f}){sample}")


@torch.no_grad()
def evaluate(model, batches, precision, device, rank=0, world_size=1):
    """Mean loss per target over batches (targets of -100 do not count), shared out across processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, number of targets)
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


def gathered_rng_states(run):
    """Every process's random state, in rank order (each process's dropout draws differ)."""
    if run.world_size == 1:
        return [rng_state()]
    states = [None] * run.world_size
    dist.all_gather_object(states, rng_state())
    return states


def cli(main, argv=None):
    """Run a script's main(argv) as a command: bad settings or inputs end as one line on stderr and exit
    status 2; otherwise the run's status decides (0 done, 130 interrupted as by Ctrl-C, 1 non-finite loss;
    a main that returns no status, like bench.py's, ends with 0)."""
    try:
        result = main(argv)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit({"done": 0, "interrupted": 130, "nonfinite": 1}[(result or {}).get("status", "done")])
