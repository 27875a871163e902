"""
finetune.py: teach a pretrained GPT (from train.py) a task.

  python finetune.py --task=classify                      # KJV verses: Old or New Testament?
  python finetune.py --task=classify --data=sms.tsv --freeze=head
  python finetune.py --task=instruct                      # follow instructions (data/instruct.py)
  python finetune.py --task=instruct --init=scratch       # the same, from random weights
  python finetune.py --task=instruct --data=my_set.json   # Alpaca-style instruction, input, output

--init is a train.py checkpoint, by default out/kjv/ckpt.pt from `python train.py`. --init=scratch
trains the default pretraining architecture from random weights, to show what pretraining buys.

Writes out/RUN/: ckpt.pt (kind "classifier" with its labels, or "instruct"), last.pt (full state,
for --resume), metrics.jsonl, loss.png, and report.json with the scores also printed at the end.

Configuration, precision, optimizer, schedule, logging and resume state come from train.py.
"""
import itertools
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.classify import Labelled, load_labelled, split_by_label
from data.instruct import CASE_SENSITIVE_FAMILIES, generate, load_alpaca
from data.prepare import kjv_verses
from gpt import (EOS_ID, GPT, PAD_ID, CharTokenizer, GPTClassifier, freeze,
                 instruction_ids, load_checkpoint, model_from_checkpoint, pick_device, save_checkpoint,
                 tokenizer_from_dict)
from train import (ConfigError, DataError, TrainConfig, append_metrics, autocast, build_optimizer, choose_precision,
                   evaluate, fitted_horizon, log, lr_at, model_config, parse_config, plot_losses, read_metrics, rng_state,
                   set_rng_state, stop_requests)

# ----------------------------------------------------------------------------------------------------
# Configuration: train.py's dataclass-driven parsing, with defaults that depend on the task

DEFAULT_INIT = "out/kjv/ckpt.pt"  # what `python train.py` writes


@dataclass
class FinetuneConfig:
    """Finetune a pretrained GPT to classify texts or to follow instructions. The defaults below are
    for --task=instruct; --task=classify changes some of them (finetune.TASK_DEFAULTS)."""

    task: str = ""  # classify or instruct
    init: str = DEFAULT_INIT  # a train.py checkpoint, or scratch for random weights
    data: str = ""  # empty: the built-in set; classify: .csv, .tsv or .jsonl; instruct: .json or .jsonl
    out_dir: str = ""  # default: out/<init run>_<task>[_<data name>]
    # classify only: which parameters train (gpt.freeze)
    freeze: str = "none"  # none, head or last_n
    unfreeze_layers: int = 1  # with --freeze=last_n: how many of the last blocks train
    # optimization
    batch_size: int = 32
    max_iters: int = 4000  # the most steps; the time budget below usually ends the run first on a CPU
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_iters: int = 50
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    # evaluation and logging
    eval_interval: int = 500
    log_interval: int = 10
    n_examples: int = 13  # example answers shown in the report
    # system
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto, float32, bfloat16 or float16
    compile: bool = False  # lengths change every batch, so compiling rarely pays off here
    seed: int = 1337
    resume: bool = False  # continue from out_dir/last.pt
    max_minutes: float = 4.5  # time budget, start to report, as in train.py; 0: exactly max_iters steps

    def __post_init__(self):
        choices = {"task": ("classify", "instruct"), "freeze": ("none", "head", "last_n"),
                   "dtype": ("auto", "float32", "bfloat16", "float16")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"--{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("batch_size", "max_iters", "eval_interval", "log_interval"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.freeze != "none" and self.task != "classify":
            raise ConfigError("--freeze applies to --task=classify only; instruction tuning trains every weight")
        if not self.out_dir:
            run = "scratch" if self.init == "scratch" else Path(self.init).parent.name
            self.out_dir = f"out/{run}_{self.task}" + (f"_{Path(self.data).stem}" if self.data else "")


# Measured defaults for classification (see README): fewer steps and a gentler learning rate, since
# a verse-level label needs a small nudge to the backbone, not new skills.
TASK_DEFAULTS = {
    "classify": {"batch_size": 32, "max_iters": 300, "lr": 3e-4, "min_lr": 3e-5, "eval_interval": 50},
    "instruct": {},
}


def finetune_config(argv=None, base=None):
    """Defaults < the task's defaults < base (a resumed run's settings) < --config FILE < flags."""
    task = parse_config(FinetuneConfig, argv, base).task  # the task may come from any layer
    return parse_config(FinetuneConfig, argv, base={**TASK_DEFAULTS[task], **(base or {})})


# ----------------------------------------------------------------------------------------------------
# Where finetuning starts: a pretrained checkpoint, or the same architecture from random weights


def initial_model(cfg, texts):
    """(GPT, tokenizer) to finetune. texts: the finetuning texts, which a scratch tokenizer must cover."""
    if cfg.init == "scratch":
        tokenizer = CharTokenizer.from_text("".join(texts))
        torch.manual_seed(cfg.seed)
        # The default pretraining architecture, so the comparison with a pretrained start is fair.
        return GPT(model_config(TrainConfig(), tokenizer.vocab_size)), tokenizer
    if not Path(cfg.init).exists():
        hint = "run python train.py first" if cfg.init == DEFAULT_INIT else "check the path"
        raise ConfigError(f"--init={cfg.init} does not exist: {hint} (or pass --init=scratch)")
    ckpt = load_checkpoint(cfg.init)
    if ckpt["kind"] == "classifier":
        raise ConfigError(f"--init={cfg.init} is a classifier; start from a pretrained (or instruct) checkpoint")
    return model_from_checkpoint(ckpt), tokenizer_from_dict(ckpt["tokenizer"])


# ----------------------------------------------------------------------------------------------------
# Classification data: (token ids, label id) pairs


@dataclass
class ClassifyData:
    labels: list  # label strings; a label's id is its index
    train: list  # (ids, label id) pairs
    val: list
    test: list
    source: str
    truncated: int = 0  # texts cut to block_size tokens
    train_label_counts: dict = field(default_factory=dict)


def classify_examples(cfg):
    """(labelled examples, description). The default: KJV verses labelled Old or New, balanced."""
    if cfg.data:
        return load_labelled(cfg.data), cfg.data
    verses = [Labelled(text, testament, line) for line, (testament, text) in enumerate(kjv_verses(), start=1)]
    return verses, "kjv verses by testament"


def classify_data(cfg, examples, source, tokenizer, block_size):
    # The default KJV set has three Old Testament verses for every New one: balance it, so that
    # accuracy is not flattered by always answering "Old".
    train, val, test = split_by_label(examples, cfg.seed, balance=not cfg.data)
    labels = sorted({ex.label for ex in examples})
    label_id = {label: i for i, label in enumerate(labels)}
    truncated = 0

    def encode(split):
        nonlocal truncated
        pairs = []
        for ex in split:
            ids = tokenizer.encode(ex.text)
            truncated += len(ids) > block_size
            pairs.append((ids[:block_size], label_id[ex.label]))
        return pairs

    return ClassifyData(labels, encode(train), encode(val), encode(test), source, truncated,
                        dict(Counter(ex.label for ex in train)))


def collate_classify(pairs, device):
    """x (B, T) right-padded with PAD_ID to the longest text in the batch; y (B,) label ids."""
    x = torch.full((len(pairs), max(len(ids) for ids, _ in pairs)), PAD_ID, dtype=torch.long)
    for row, (ids, _) in enumerate(pairs):
        x[row, :len(ids)] = torch.tensor(ids)
    y = torch.tensor([label for _, label in pairs])
    return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------------
# Instruction data: <inst>instruction[\ninput]<resp>output<eos>, loss on output and <eos> only


def encode_instruct(tokenizer, example):
    """(token ids of the whole example, length of its prompt)."""
    prompt = instruction_ids(tokenizer, example["instruction"], example["input"])
    return prompt + tokenizer.encode(example["output"]) + [EOS_ID], len(prompt)


def collate_instruct(encoded, device):
    """x, y (B, T), T = the longest example in the batch minus one. x is right-padded with PAD_ID; y is
    x shifted by one, with -100 (ignored by the loss) on the prompt and the padding."""
    T = max(len(ids) for ids, _ in encoded) - 1
    x = torch.full((len(encoded), T), PAD_ID, dtype=torch.long)
    y = torch.full((len(encoded), T), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        ids = torch.tensor(ids)
        x[row, :len(ids) - 1] = ids[:-1]
        # Target t is token t+1: the first n_prompt-1 targets are prompt tokens; the target at <resp>
        # is the answer's first token, the first one that counts.
        y[row, n_prompt - 1:len(ids) - 1] = ids[n_prompt:]
    return x.to(device), y.to(device)


@dataclass
class InstructData:
    train: list  # (ids, prompt length) pairs
    heldout: list
    heldout_examples: list  # the held-out dicts, for exact-match answers
    source: str
    skipped: int = 0  # examples longer than block_size + 1 tokens, left out
    max_answer_tokens: int = 0  # the longest training answer with its <eos>: where greedy answers stop


def instruct_examples(cfg):
    """(train, held-out) example dicts: the generated default set, or a user's file split 90/10."""
    if not cfg.data:
        return (*generate(), "data/instruct.py (generated)")
    examples = load_alpaca(cfg.data)
    if len(examples) < 2:
        raise DataError(f"{cfg.data}: a single example; need at least two (one to train on, one held out)")
    order = np.random.default_rng(cfg.seed).permutation(len(examples))
    n_heldout = max(1, len(examples) // 10)
    return ([examples[i] for i in order[n_heldout:]], [examples[i] for i in order[:n_heldout]], cfg.data)


def instruct_data(train, heldout, source, tokenizer, block_size):
    """Encode the examples, leaving out (and counting) those longer than block_size + 1 tokens: x and
    y are one token shorter than the example, so that is the most one context can hold."""
    train_encoded = [encode_instruct(tokenizer, ex) for ex in train]
    heldout_pairs = [(encode_instruct(tokenizer, ex), ex) for ex in heldout]
    kept_train = [e for e in train_encoded if len(e[0]) <= block_size + 1]
    kept_heldout = [(e, ex) for e, ex in heldout_pairs if len(e[0]) <= block_size + 1]
    skipped = len(train) - len(kept_train) + len(heldout) - len(kept_heldout)
    if not kept_train or not kept_heldout:
        raise DataError(f"{source}: no example fits block_size {block_size} (prompt, answer and <eos> together)")
    max_answer_tokens = max(len(ids) - n_prompt for ids, n_prompt in kept_train)
    return InstructData(kept_train, [e for e, _ in kept_heldout], [ex for _, ex in kept_heldout], source, skipped,
                        max_answer_tokens)


# ----------------------------------------------------------------------------------------------------
# Batches


def training_batches(lengths, batch_size, seed, start_step=0):
    """Yield one batch (a list of example indices) per step, from start_step on, forever.

    Each epoch shuffles the examples, then sorts them by length within pools of 16 batches and cuts
    the pools into batches: a batch holds examples of similar length, so padding to its longest costs
    little (several times less compute than random batches here), while batches still mix the
    tasks. Epoch e depends only on (seed, e), so a resumed run gets exactly the same batches."""
    step = 0
    for epoch in itertools.count():
        order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
        pools = [sorted(order[i:i + 16 * batch_size], key=lambda j: lengths[j])
                 for i in range(0, len(order), 16 * batch_size)]
        batches = [pool[i:i + batch_size] for pool in pools for i in range(0, len(pool), batch_size)]
        for b in np.random.default_rng([seed, epoch, 1]).permutation(len(batches)):
            if step >= start_step:
                yield batches[b]
            step += 1


def eval_batches(examples, collate, batch_size, device):
    """Every example once, sorted by length so that batches carry little padding."""
    ordered = sorted(examples, key=lambda e: len(e[0]))
    return [collate(ordered[i:i + batch_size], device) for i in range(0, len(ordered), batch_size)]


# ----------------------------------------------------------------------------------------------------
# The training loop, shared by both tasks

# Settings a resumed run cannot change: the weights and the data depend on them.
FIXED_ON_RESUME = ("task", "init", "data", "freeze", "unfreeze_layers", "seed")


def train_step(model, optimizer, scaler, x, y, precision, grad_clip, device):
    with autocast(device.type, precision.autocast_dtype):
        _, loss = model(x, y)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def run_training(cfg, model, tokenizer, train_set, val_batches, collate, device, precision, checkpoint_extra,
                 resume_ckpt, stop, launched, report_s=0.0):
    """Train model on train_set; returns (status, steps done). Evaluates val_batches every eval_interval
    and writes out_dir/last.pt (for --resume) and out_dir/ckpt.pt: for classify the best validation
    loss; for instruct, whose only validation set is the held-out test set, simply the latest model.
    With cfg.max_minutes, the run ends early enough that the report (report_s seconds) fits too."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    start_step, best_val = 0, math.inf
    if resume_ckpt is not None:
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scaler.load_state_dict(resume_ckpt["scaler"])
        set_rng_state(resume_ckpt["rng"][0])
        start_step, best_val = resume_ckpt["step"], resume_ckpt["best_val_loss"]
    metrics_path = out / "metrics.jsonl"
    kept = [r for r in read_metrics(metrics_path) if r["step"] < start_step]  # drop what a stopped run logged later
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{out}: {cfg.task}, {len(train_set):,} training examples, {trainable / 1e6:.2f}M of "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters train; {device.type}: {precision.reason}"
        + (f"; resuming at step {start_step}" if start_step else ""))

    def save(path, step, **extra):
        save_checkpoint(path, model, tokenizer, kind=checkpoint_extra["kind"], step=step,
                        finetune_config=asdict(cfg), **{k: v for k, v in checkpoint_extra.items() if k != "kind"},
                        **extra)

    def evaluate_and_save(step):
        nonlocal best_val
        val_loss = evaluate(model, val_batches, precision, device)
        append_metrics(metrics_path, step=step, val_loss=val_loss)
        if val_loss < best_val or cfg.task == "instruct":
            best_val = min(best_val, val_loss)
            save(out / "ckpt.pt", step, val_loss=val_loss)
        save(out / "last.pt", step, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
             rng=[rng_state()], best_val_loss=best_val)
        plot_losses(metrics_path, out / "loss.png")
        log(f"step {step}: {'held-out' if cfg.task == 'instruct' else 'val'} loss {val_loss:.4f}")

    batches = training_batches([len(ids) for ids, _ in train_set], cfg.batch_size, cfg.seed, start_step)
    status, started, step = "done", time.time(), start_step
    horizon = cfg.max_iters  # the step the run ends at; a time budget may bring it forward
    bar = tqdm(total=cfg.max_iters, initial=start_step, unit="step", dynamic_ncols=True, disable=None)
    for step in range(start_step, cfg.max_iters + 1):
        if (step % cfg.eval_interval == 0 and (step != start_step or resume_ckpt is None)) or step == horizon:
            evaluate_and_save(step)
        if step == horizon:
            break
        lr = lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, horizon)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = collate([train_set[i] for i in next(batches)], device)
        loss = train_step(model, optimizer, scaler, x, y, precision, cfg.grad_clip, device)
        if cfg.max_minutes > 0:
            now = time.time()
            bar.total = horizon = fitted_horizon(cfg.max_iters, step, step + 1 - start_step, now - started,
                                                 60 * cfg.max_minutes - (now - launched) - report_s)
        bar.update(1)
        if not math.isfinite(loss):
            log(f"step {step}: the loss is {loss}; stopping, {out}/ckpt.pt and last.pt keep the last good state. "
                "Try a lower --lr or --dtype=float32")
            status = "nonfinite"
            break
        if (step + 1) % cfg.log_interval == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
            append_metrics(metrics_path, step=step, train_loss=loss, lr=lr, elapsed_s=round(time.time() - started, 2))
        if stop.is_set():
            step += 1
            evaluate_and_save(step)
            status = "interrupted"
            log(f"stop requested at step {step}: saved {out}/last.pt; continue with "
                f"python finetune.py --task={cfg.task} --resume --out_dir={out}")
            break
    bar.close()
    return status, step


# ----------------------------------------------------------------------------------------------------
# Reports


@torch.no_grad()
def predict_labels(classifier, pairs, device, batch_size=64):
    classifier.eval()
    predictions = []
    for i in range(0, len(pairs), batch_size):
        x, _ = collate_classify(pairs[i:i + batch_size], device)
        predictions += classifier(x)[0].argmax(dim=-1).tolist()
    return predictions


def classification_report(labels, true, predicted, train_label_counts):
    """Accuracy, per-class precision, recall and F1, the confusion matrix (rows: true label, columns:
    predicted), and the accuracy of always answering the training set's most common label."""
    confusion = [[0] * len(labels) for _ in labels]
    for t, p in zip(true, predicted):
        confusion[t][p] += 1
    per_class = {}
    for i, label in enumerate(labels):
        hits, n_predicted, n_true = confusion[i][i], sum(row[i] for row in confusion), sum(confusion[i])
        precision = hits / n_predicted if n_predicted else 0.0
        recall = hits / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": n_true}
    majority = max(sorted(train_label_counts), key=train_label_counts.get)
    return {"accuracy": sum(t == p for t, p in zip(true, predicted)) / len(true),
            "majority_baseline": {"label": majority, "accuracy": true.count(labels.index(majority)) / len(true)},
            "per_class": per_class, "confusion": {"labels": labels, "matrix": confusion}, "test_examples": len(true)}


def format_classification(report):
    width = max(len(label) for label in report["confusion"]["labels"]) + 2
    lines = [f"test accuracy {report['accuracy']:.3f} on {report['test_examples']} examples "
             f"(majority baseline {report['majority_baseline']['accuracy']:.3f}: always "
             f"{report['majority_baseline']['label']!r})",
             f"{'label':<{width}} precision  recall     f1  support"]
    for label, s in report["per_class"].items():
        lines.append(f"{label:<{width}} {s['precision']:9.3f} {s['recall']:7.3f} {s['f1']:6.3f} {s['support']:8d}")
    labels = report["confusion"]["labels"]
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append(" " * width + "".join(f"{label:>{width}}" for label in labels))
    for label, row in zip(labels, report["confusion"]["matrix"]):
        lines.append(f"{label:<{width}}" + "".join(f"{n:>{width}d}" for n in row))
    return "\n".join(lines)


def normalise(text, family):
    """Exact match ignores case and runs of whitespace, except in families where case is the answer."""
    text = " ".join(text.split())
    return text if family in CASE_SENSITIVE_FAMILIES else text.lower()


@torch.no_grad()
def greedy_answer(model, tokenizer, example, max_new_tokens, device):
    """The model's answer (without <eos>) to one example, choosing the likeliest token at every step."""
    prompt = instruction_ids(tokenizer, example["instruction"], example["input"])
    ids = list(model.generate_stream(torch.tensor([prompt], device=device), max_new_tokens, temperature=0,
                                     stop_ids=(EOS_ID,)))
    return tokenizer.decode(ids[:-1] if ids and ids[-1] == EOS_ID else ids)


@torch.no_grad()
def answering_seconds(model, tokenizer, examples, device, n=8):
    """How long instruct_report will take: greedy answers to n examples, each as long as its expected
    answer (the trained model's length; an untrained one would ramble), scaled to all examples."""
    model.eval()
    began = time.time()
    for example in examples[:n]:
        prompt = instruction_ids(tokenizer, example["instruction"], example["input"])
        model.generate(torch.tensor([prompt], device=device), len(tokenizer.encode(example["output"])) + 1, temperature=0)
    model.train()
    return (time.time() - began) * len(examples) / min(n, len(examples))


def instruct_report(model, tokenizer, examples, heldout_loss, max_answer_tokens, n_examples, device):
    """Held-out loss, then exact-match accuracy overall and per family, with the first answer of each
    family as an example."""
    model.eval()
    per_family, shown = {}, []
    for example in tqdm(examples, desc="answering held-out", unit="q", leave=False, disable=None):
        family = example.get("family", "all")
        answer = greedy_answer(model, tokenizer, example, max_answer_tokens, device)
        correct = normalise(answer, family) == normalise(example["output"], family)
        score = per_family.setdefault(family, {"correct": 0, "total": 0})
        score["correct"] += correct
        score["total"] += 1
        if score["total"] == 1 and len(shown) < n_examples:
            shown.append({"family": family, "instruction": example["instruction"], "input": example["input"],
                          "expected": example["output"], "answer": answer, "correct": correct})
    for score in per_family.values():
        score["accuracy"] = score["correct"] / score["total"]
    correct = sum(s["correct"] for s in per_family.values())
    return {"heldout_loss": heldout_loss, "exact_match": correct / len(examples), "heldout_examples": len(examples),
            "per_family": per_family, "examples": shown}


def format_instruct(report):
    lines = [f"held-out loss {report['heldout_loss']:.4f}; exact match {report['exact_match']:.3f} "
             f"on {report['heldout_examples']} held-out examples"]
    lines += [f"  {family:<10} {s['accuracy']:6.3f} ({s['correct']}/{s['total']})"
              for family, s in sorted(report["per_family"].items())]
    lines.append("examples:")
    for e in report["examples"]:
        prompt = e["instruction"] + (f" | {e['input']}" if e["input"] else "")
        lines.append(f"  {'ok ' if e['correct'] else 'BAD'} {prompt!r} -> {e['answer']!r}"
                     + ("" if e["correct"] else f" (expected {e['expected']!r})"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The two tasks


def resume_state(cfg, argv):
    """The settings and checkpoint of the run in out_dir/last.pt, overridden by anything given now."""
    last = Path(cfg.out_dir) / "last.pt"
    if not last.exists():
        raise ConfigError(f"--resume: {last} does not exist; start the run without --resume")
    ckpt = load_checkpoint(last)
    resumed = finetune_config(argv, base=ckpt["finetune_config"])
    changed = [f"{k} ({ckpt['finetune_config'][k]!r} -> {getattr(resumed, k)!r})" for k in FIXED_ON_RESUME
               if getattr(resumed, k) != ckpt["finetune_config"][k]]
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming {cfg.out_dir}; use a new --out_dir")
    return resumed, ckpt


def classify(cfg, device, resume_ckpt, stop, launched):
    examples, source = classify_examples(cfg)
    gpt, tokenizer = initial_model(cfg, [ex.text for ex in examples])
    data = classify_data(cfg, examples, source, tokenizer, gpt.config.block_size)
    log(f"{source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test texts, labels {data.labels}"
        + (f"; {data.truncated} texts longer than {gpt.config.block_size} tokens were cut to their start"
           if data.truncated else ""))
    if resume_ckpt is not None:
        if resume_ckpt["labels"] != data.labels:
            raise ConfigError(f"the labels changed since {cfg.out_dir} was started: {resume_ckpt['labels']} -> {data.labels}")
        classifier = model_from_checkpoint(resume_ckpt)
    else:
        classifier = GPTClassifier(gpt, len(data.labels))
    freeze(classifier, cfg.freeze, cfg.unfreeze_layers)
    precision = choose_precision(device, cfg.dtype, cfg.compile, classifier.gpt, classifier.gpt.config.block_size)
    val_batches = eval_batches(data.val or data.train, collate_classify, cfg.batch_size, device)
    status, steps = run_training(cfg, classifier, tokenizer, data.train, val_batches, collate_classify, device,
                                 precision, {"kind": "classifier", "labels": data.labels}, resume_ckpt, stop, launched)
    if status != "done":
        return status, steps, None
    best = model_from_checkpoint(load_checkpoint(Path(cfg.out_dir) / "ckpt.pt")).to(device)
    report = classification_report(data.labels, [label for _, label in data.test],
                                   predict_labels(best, data.test, device), data.train_label_counts)
    report.update(truncated_texts=data.truncated, data=source, init=cfg.init, freeze=cfg.freeze)
    return status, steps, report


def instruct(cfg, device, resume_ckpt, stop, launched):
    train, heldout, source = instruct_examples(cfg)
    texts = [ex["instruction"] + ex["input"] + ex["output"] for ex in train + heldout]
    model, tokenizer = initial_model(cfg, texts)
    if resume_ckpt is not None:
        model = model_from_checkpoint(resume_ckpt)
    data = instruct_data(train, heldout, source, tokenizer, model.config.block_size)
    log(f"{source}: {len(data.train)} training and {len(data.heldout)} held-out examples"
        + (f"; {data.skipped} longer than block_size {model.config.block_size} left out" if data.skipped else ""))
    precision = choose_precision(device, cfg.dtype, cfg.compile, model, model.config.block_size)
    val_batches = eval_batches(data.heldout, collate_instruct, cfg.batch_size, device)
    report_s = answering_seconds(model, tokenizer, data.heldout_examples, device) if cfg.max_minutes > 0 else 0.0
    status, steps = run_training(cfg, model, tokenizer, data.train, val_batches, collate_instruct, device, precision,
                                 {"kind": "instruct"}, resume_ckpt, stop, launched, report_s)
    if status != "done":
        return status, steps, None
    heldout_loss = evaluate(model, val_batches, precision, device)
    report = instruct_report(model, tokenizer, data.heldout_examples, heldout_loss, data.max_answer_tokens,
                             cfg.n_examples, device)
    report.update(skipped_examples=data.skipped, data=source, init=cfg.init)
    return status, steps, report


def main(argv=None):
    """Finetune; returns the report dict (also printed and written to out_dir/report.json). Raises
    ConfigError, DataError or CheckpointError (all ValueErrors) for bad settings or inputs."""
    launched = time.time()  # the time budget counts from here
    cfg = finetune_config(argv)
    resume_ckpt = None
    if cfg.resume:
        cfg, resume_ckpt = resume_state(cfg, argv)
    try:
        device = pick_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    torch.manual_seed(cfg.seed)
    with stop_requests() as stop:
        status, steps, report = (classify if cfg.task == "classify" else instruct)(cfg, device, resume_ckpt, stop, launched)
    summary = {"task": cfg.task, "status": status, "steps": steps, "minutes": round((time.time() - launched) / 60, 2),
               "checkpoint": str(Path(cfg.out_dir) / "ckpt.pt")}
    if report is None:  # stopped early: no scores for a half-trained model
        return summary
    report.update(summary)
    (Path(cfg.out_dir) / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    scores = format_classification(report) if cfg.task == "classify" else format_instruct(report)
    log(f"{scores}\n{status}: {steps} steps in {report['minutes']:.1f} min; checkpoint {report['checkpoint']}, "
        f"report {cfg.out_dir}/report.json")
    return report


def cli():
    try:
        report = main()
    except ValueError as e:  # ConfigError, DataError, CheckpointError and data-file errors
        sys.exit(f"error: {e}")
    sys.exit({"done": 0, "interrupted": 130, "nonfinite": 1}[report["status"]])


if __name__ == "__main__":
    cli()
