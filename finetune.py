"""
finetune.py: teach a pretrained GPT (from train.py) a task.

  python finetune.py --task=classify                      # KJV verses: Old or New Testament?
  python finetune.py --task=classify --data=sms.tsv --freeze=head
  python finetune.py --task=instruct                      # follow instructions (data/instruct.py)
  python finetune.py --task=instruct --init=scratch       # the same, from random weights
  python finetune.py --task=instruct --data=my_set.json   # Alpaca-style instruction, input, output

--init is a train.py checkpoint, by default out/kjv/ckpt.pt from `python train.py`. --init=scratch
trains the default pretraining architecture from random weights, to show what pretraining buys.
--init=hf:PATH starts from OpenAI's GPT-2 in a Hugging Face folder (gpt.load_gpt2; README).
--lora_rank=R trains low-rank adapters instead of every weight (gpt.add_lora); checkpoints hold merged weights.

Every task splits its examples three ways: training, validation (evaluated every eval_interval steps;
the best model is kept as ckpt.pt, and the run stops early once it stops improving) and a held-out
test set, scored once at the end on the best model.

Writes out/RUN/: ckpt.pt (kind "classifier" with its labels, or "instruct"), last.pt (full state,
for --resume), metrics.jsonl, loss.png, and report.json with the scores also printed at the end.
The training loop, resume, time budget and the rest are trainer.py's, shared with train.py.
"""
import itertools
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.classify import Labelled, load_labelled, split_by_label
from data.instruct import CASE_SENSITIVE_FAMILIES, generate, load_alpaca
from data.prepare import DataError, kjv_verses, prepare
from gpt import (EOS_ID, GPT, PAD_ID, CheckpointError, GPTClassifier, add_lora, freeze,
                 instruction_ids, load_checkpoint, load_gpt2, load_lora, model_from_checkpoint, tokenizer_from_dict)
from train import TrainConfig, model_config
from trainer import (ConfigError, RunConfig, Task, cli, evaluate, log, parse_config, refuse_changes,
                     resume_checkpoint, start_run, train_loop, write_atomically)

# ----------------------------------------------------------------------------------------------------
# Configuration: the fields below, plus the run settings every script shares (trainer.RunConfig)

DEFAULT_INIT = "out/kjv/ckpt.pt"  # what `python train.py` writes


@dataclass
class FinetuneConfig(RunConfig):
    """Finetune a pretrained GPT to classify texts or to follow instructions. The defaults below are
    for --task=instruct; --task=classify changes some of them (finetune.TASK_DEFAULTS)."""

    task: str = ""  # classify or instruct
    init: str = DEFAULT_INIT  # a train.py checkpoint, scratch for random weights, or hf:PATH for a GPT-2 folder
    data: str = ""  # empty: the built-in set; classify: .csv, .tsv or .jsonl; instruct: .json or .jsonl
    max_epochs: int = 10  # the most passes over the training examples: a small file is not learned by heart
    # classify only: how the head reads the text (gpt.GPTClassifier), which parameters train (gpt.freeze)
    pool: str = "last"  # last: the last token's hidden state; mean: the mean over all tokens
    freeze: str = "none"  # none, head or last_n
    unfreeze_layers: int = 1  # with --freeze=last_n: how many of the last blocks train
    n_examples: int = 13  # example answers shown in the instruct report
    # LoRA: a frozen model with trainable low-rank adapters on its attention and MLP projections (gpt.add_lora)
    lora_rank: int = 0  # the adapters' rank; 0: no adapters, every weight trains
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    # the shared settings, with defaults measured for instruction tuning (README)
    batch_size: int = 32
    max_iters: int = 4000
    lr: float = 2e-3
    warmup_iters: int = 50
    weight_decay: float = 0.0
    eval_interval: int = 500
    compile: bool = False  # lengths change every batch, so compiling rarely pays off here

    RANGES = RunConfig.RANGES | {"max_epochs": "[1, inf)", "unfreeze_layers": "[0, inf)", "n_examples": "[0, inf)",
                                 "lora_rank": "[0, inf)", "lora_alpha": "(0, inf)"}
    CHOICES = RunConfig.CHOICES | {"task": ("classify", "instruct"), "pool": ("last", "mean"),
                                   "freeze": ("none", "head", "last_n")}

    def __post_init__(self):
        super().__post_init__()
        if self.freeze != "none" and self.task != "classify":
            raise ConfigError("--freeze applies to --task=classify only; instruction tuning trains every weight")
        if self.freeze != "none" and self.lora_rank:
            raise ConfigError("--freeze and --lora_rank both choose what trains: use one of them")
        if not self.out_dir:
            run = "scratch" if self.init == "scratch" else Path(self.init).parent.name
            if self.init.startswith("hf:"):  # hf:models/gpt2 -> out/gpt2_classify
                run = Path(self.init[3:]).name
            self.out_dir = f"out/{run}_{self.task}" + (f"_{Path(self.data).stem}" if self.data else "")
            if self.lora_rank:
                self.out_dir += f"_lora{self.lora_rank}"


# Measured defaults for classification (see README): fewer steps and a gentler learning rate, since
# a verse-level label needs a small nudge to the backbone, not new skills.
TASK_DEFAULTS = {
    "classify": {"batch_size": 32, "max_iters": 300, "lr": 3e-4, "eval_interval": 50},
    "instruct": {},
}


def finetune_config(argv=None, base=None, base_source="base settings"):
    """Defaults < the task's defaults < base (a resumed run's settings) < --config FILE < flags."""
    return parse_config(FinetuneConfig, argv, base, base_source,
                        defaults=lambda settings: TASK_DEFAULTS.get(settings.get("task"), {}))


# Settings a resumed run cannot change: the weights and the data depend on them.
FIXED_ON_RESUME = ("task", "init", "data", "pool", "freeze", "unfreeze_layers", "lora_rank", "lora_alpha", "seed")


def resume_config(cfg, argv):
    """The settings of the run in cfg.out_dir/last.pt, overridden by anything given now; and its checkpoint."""
    ckpt = resume_checkpoint(cfg.out_dir, "finetune_config", f"python finetune.py --task={cfg.task}")
    resumed = finetune_config(argv, base=ckpt["finetune_config"], base_source=f"{cfg.out_dir}/last.pt")
    refuse_changes(resumed, ckpt["finetune_config"], FIXED_ON_RESUME)
    return resumed, ckpt


def with_lora(cfg, model, language_model, resumed):
    """With --lora_rank: model's GPT frozen under trainable adapters (gpt.add_lora); on --resume, the adapters of
    last.pt put back, its merged weights less their change (gpt.load_lora). Without: model unchanged."""
    add_lora(language_model, cfg.lora_rank, cfg.lora_alpha)
    if cfg.lora_rank and resumed is not None:
        try:
            load_lora(model, resumed.get("lora", {}))
        except ValueError as e:
            raise CheckpointError(f"{cfg.out_dir}/last.pt: {e}") from None


def fit_to_data(cfg, n_train, world_size):
    """cfg with at most max_epochs passes over n_train examples, and at least one evaluation per pass,
    so that a small file is neither learned by heart nor overfitted between two evaluations."""
    steps_per_epoch = math.ceil(n_train / (cfg.batch_size * cfg.grad_accum * world_size))
    fitted = replace(cfg, max_iters=min(cfg.max_iters, cfg.max_epochs * steps_per_epoch),
                     eval_interval=min(cfg.eval_interval, steps_per_epoch))
    if fitted != cfg:
        log(f"{n_train:,} training examples: at most {fitted.max_iters:,} steps ({cfg.max_epochs} passes, "
            f"--max_epochs), evaluated every {fitted.eval_interval} steps (at least once a pass)")
    return fitted


def initial_model(cfg):
    """(GPT, tokenizer) to finetune, from --init."""
    if cfg.init == "scratch":
        # What `python train.py` would start from: its architecture and its tokenizer (which preparing the
        # corpus learns, before any training), with random weights. So the comparison with a pretrained
        # start measures what the weights learned in pretraining, and nothing else.
        default = TrainConfig()
        tokenizer = prepare(default.data, default.tokenizer, default.bpe_vocab_size, default.block_size).tokenizer
        torch.manual_seed(cfg.seed)
        return GPT(model_config(default, tokenizer.vocab_size)), tokenizer
    if cfg.init.startswith("hf:"):
        try:
            return load_gpt2(cfg.init[3:])
        except ValueError as e:
            raise ConfigError(f"--init={cfg.init}: {e}") from None
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
    truncated: int = 0  # texts cut to CLASSIFY_WINDOWS contexts
    train_label_counts: dict = field(default_factory=dict)


def classify_examples(cfg):
    """(labelled examples, description). The default: KJV verses labelled Old or New, balanced."""
    if cfg.data:
        return load_labelled(cfg.data), cfg.data
    verses = [Labelled(text, testament, line) for line, (testament, text) in enumerate(kjv_verses(), start=1)]
    return verses, "kjv verses by testament"


# The classifier reads a text longer than its context in windows of block_size tokens; beyond this
# many windows a text is cut (and counted), which bounds the memory a very long text can take.
CLASSIFY_WINDOWS = 8


def classify_data(cfg, examples, source, tokenizer, block_size):
    # The default KJV set has three Old Testament verses for every New one: balance it, so that
    # accuracy is not flattered by always answering "Old".
    splits = split_by_label(examples, cfg.seed, balance=not cfg.data)
    labels = sorted({ex.label for ex in examples})
    label_id = {label: i for i, label in enumerate(labels)}
    encoded = [[(tokenizer.encode(ex.text), label_id[ex.label]) for ex in split] for split in splits]
    most = CLASSIFY_WINDOWS * block_size
    truncated = sum(len(ids) > most for split in encoded for ids, _ in split)
    train, val, test = ([(ids[:most], label) for ids, label in split] for split in encoded)
    return ClassifyData(labels, train, val, test, source, truncated, dict(Counter(ex.label for ex in splits[0])))


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
    """(token ids of the whole example, length of its prompt). An example marked "char_level" has its
    answer encoded one character per token (data/instruct.CHAR_LEVEL_FAMILIES says why)."""
    prompt = instruction_ids(tokenizer, example["instruction"], example["input"])
    output = example["output"]
    answer = [i for c in output for i in tokenizer.encode(c)] if example.get("char_level") else tokenizer.encode(output)
    return prompt + answer + [EOS_ID], len(prompt)


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
    val: list
    test: list
    test_examples: list  # the test dicts, for exact-match answers
    source: str
    skipped: int = 0  # examples longer than block_size + 1 tokens, left out
    max_answer_tokens: int = 0  # the longest training answer with its <eos>: where greedy answers stop


# Validation examples drawn from the generated training set: enough for a steady loss, few enough
# that evaluating them costs a second.
GENERATED_VAL_EXAMPLES = 512


def instruct_examples(cfg):
    """(train, val, test) example dicts. The generated default set's test split holds phrasings and
    inputs never trained on; a user's file is shuffled and split 80/10/10."""
    if not cfg.data:
        train, test = generate()
        return train[GENERATED_VAL_EXAMPLES:], train[:GENERATED_VAL_EXAMPLES], test, "data/instruct.py (generated)"
    examples = load_alpaca(cfg.data)
    if len(examples) < 3:
        raise DataError(f"{cfg.data}: {len(examples)} example(s); need at least three (to train on, to validate "
                        "and to test)")
    order = np.random.default_rng(cfg.seed).permutation(len(examples))
    n_held = max(1, len(examples) // 10)
    val, test, train = order[:n_held], order[n_held:2 * n_held], order[2 * n_held:]
    return ([examples[i] for i in train], [examples[i] for i in val], [examples[i] for i in test], cfg.data)


def instruct_data(train, val, test, source, tokenizer, block_size):
    """Encode the examples, leaving out (and counting) those longer than block_size + 1 tokens: x and
    y are one token shorter than the example, so that is the most one context can hold."""
    def fitting(examples):
        encoded = [(encode_instruct(tokenizer, ex), ex) for ex in examples]
        return [(e, ex) for e, ex in encoded if len(e[0]) <= block_size + 1]

    kept = [fitting(split) for split in (train, val, test)]
    if not all(kept):
        raise DataError(f"{source}: no example fits block_size {block_size} (prompt, answer and <eos> together)")
    skipped = len(train) + len(val) + len(test) - sum(map(len, kept))
    max_answer_tokens = max(len(ids) - n_prompt for (ids, n_prompt), _ in kept[0])
    train, val, test = ([e for e, _ in split] for split in kept)
    return InstructData(train, val, test, [ex for _, ex in kept[2]], source, skipped, max_answer_tokens)


# ----------------------------------------------------------------------------------------------------
# Batches


def training_batches(lengths, batch_size, seed, start=0):
    """Yield one batch (a list of example indices) per micro-batch, from micro-batch `start` on, forever.

    Each epoch shuffles the examples, then sorts them by length within pools of 16 batches and cuts
    the pools into batches: a batch holds examples of similar length, so padding to its longest costs
    little (several times less compute than random batches here), while batches still mix the
    tasks. Epoch e depends only on (seed, e), so a resumed run gets exactly the same batches."""
    count = 0
    for epoch in itertools.count():
        order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
        pools = [sorted(order[i:i + 16 * batch_size], key=lambda j: lengths[j])
                 for i in range(0, len(order), 16 * batch_size)]
        batches = [pool[i:i + batch_size] for pool in pools for i in range(0, len(pool), batch_size)]
        for b in np.random.default_rng([seed, epoch, 1]).permutation(len(batches)):
            if count >= start:
                yield batches[b]
            count += 1


def example_batches(examples, collate, cfg, device):
    """batches(start_step, rank, world_size) for trainer.Task: this process's micro-batches of similar
    length. Micro-batch m of the shared sequence belongs to step m // per_step and, within it, to
    process (m % per_step) // grad_accum."""
    def batches(start_step, rank, world_size):
        per_step = cfg.grad_accum * world_size
        order = training_batches([len(ids) for ids, _ in examples], cfg.batch_size, cfg.seed, start_step * per_step)
        for m, batch in enumerate(order, start=start_step * per_step):
            if (m % per_step) // cfg.grad_accum == rank:
                yield collate([examples[i] for i in batch], device)
    return batches


def eval_batches(examples, collate, batch_size, device):
    """Every example once, sorted by length so that batches carry little padding."""
    ordered = sorted(examples, key=lambda e: len(e[0]))
    return [collate(ordered[i:i + batch_size], device) for i in range(0, len(ordered), batch_size)]


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


def instruct_report(model, tokenizer, examples, test_loss, max_answer_tokens, n_examples, device):
    """Test loss, then exact-match accuracy overall and per family, with the first answer of each
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
    return {"heldout_loss": test_loss, "exact_match": correct / len(examples), "heldout_examples": len(examples),
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
# The two tasks: each builds its trainer.Task, and scores the best model once the loop is done


def classify_task(cfg, run, resumed):
    """(cfg fitted to the data, Task, score(model, precision) -> report)."""
    examples, source = classify_examples(cfg)
    gpt, tokenizer = initial_model(cfg)
    data = classify_data(cfg, examples, source, tokenizer, gpt.config.block_size)
    longest = max(len(ids) for split in (data.train, data.val, data.test) for ids, _ in split)
    log(f"{source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test texts, labels {data.labels}; "
        f"the longest is {longest} tokens, read in {math.ceil(longest / gpt.config.block_size)} window(s) of "
        f"{gpt.config.block_size}" + (f"; {data.truncated} texts longer than {CLASSIFY_WINDOWS} windows were cut to "
                                      "their start" if data.truncated else ""))
    if resumed is not None and resumed["labels"] != data.labels:
        raise ConfigError(f"the labels changed since {cfg.out_dir} was started: {resumed['labels']} -> {data.labels}")
    classifier = model_from_checkpoint(resumed) if resumed is not None else GPTClassifier(gpt, len(data.labels), cfg.pool)
    freeze(classifier, cfg.freeze, cfg.unfreeze_layers)
    with_lora(cfg, classifier, classifier.gpt, resumed)  # the head, outside gpt, still trains
    cfg = fit_to_data(cfg, len(data.train), run.world_size)
    test_batches = eval_batches(data.test, collate_classify, 64, run.device)
    task = Task(kind="classifier", model=classifier, tokenizer=tokenizer, command=f"python finetune.py --task={cfg.task}",
                batches=example_batches(data.train, collate_classify, cfg, run.device),
                val_batches=eval_batches(data.val or data.train, collate_classify, cfg.batch_size, run.device),
                extras={"labels": data.labels, "pool": cfg.pool, "finetune_config": asdict(cfg)},
                after_loop_batches=len(test_batches))

    def score(model, precision):
        report = classification_report(data.labels, [label for _, label in data.test],
                                       predict_labels(model, data.test, run.device), data.train_label_counts)
        return {**report, "truncated_texts": data.truncated, "data": source, "init": cfg.init, "pool": cfg.pool,
                "freeze": cfg.freeze}

    return cfg, task, score


def instruct_task(cfg, run, resumed):
    """(cfg fitted to the data, Task, score(model, precision) -> report)."""
    train, val, test, source = instruct_examples(cfg)
    model, tokenizer = initial_model(cfg)
    if resumed is not None:
        model = model_from_checkpoint(resumed)
    with_lora(cfg, model, model, resumed)
    if cfg.lora_rank:  # answers end with <eos>, whose row GPT-2 never trained (all its special rows are alike)
        model.wte.requires_grad_(True)  # so the token embedding, which is also the output layer, trains too
    data = instruct_data(train, val, test, source, tokenizer, model.config.block_size)
    log(f"{source}: {len(data.train):,} training, {len(data.val):,} validation and {len(data.test):,} held-out test "
        "examples" + (f"; {data.skipped} longer than block_size {model.config.block_size} left out" if data.skipped else ""))
    cfg = fit_to_data(cfg, len(data.train), run.world_size)
    test_batches = eval_batches(data.test, collate_instruct, cfg.batch_size, run.device)
    answering_s = answering_seconds(model, tokenizer, data.test_examples, run.device) if cfg.max_minutes > 0 else 0.0
    task = Task(kind="instruct", model=model, tokenizer=tokenizer, command=f"python finetune.py --task={cfg.task}",
                batches=example_batches(data.train, collate_instruct, cfg, run.device),
                val_batches=eval_batches(data.val, collate_instruct, cfg.batch_size, run.device),
                extras={"finetune_config": asdict(cfg)}, after_loop_batches=len(test_batches), after_loop_s=answering_s)

    def score(model, precision):
        test_loss = evaluate(model, test_batches, precision, run.device)
        report = instruct_report(model, tokenizer, data.test_examples, test_loss, data.max_answer_tokens,
                                 cfg.n_examples, run.device)
        return {**report, "skipped_examples": data.skipped, "data": source, "init": cfg.init}

    return cfg, task, score


def main(argv=None):
    """Finetune; returns the report dict (also printed and written to out_dir/report.json). Raises
    ConfigError, DataError or CheckpointError (all ValueErrors) for bad settings or inputs."""
    launched = time.time()  # the time budget counts from here
    cfg = finetune_config(argv)
    resumed = None
    if cfg.resume:
        cfg, resumed = resume_config(cfg, argv)
    with start_run(cfg, launched) as run:
        torch.manual_seed(cfg.seed)
        cfg, task, score = (classify_task if cfg.task == "classify" else instruct_task)(cfg, run, resumed)
        result = train_loop(cfg, task, run, resumed)
        summary = {"task": cfg.task, "status": result.status, "steps": result.steps,
                   "checkpoint": str(Path(cfg.out_dir) / "ckpt.pt")}
        if result.status != "done":  # stopped early: no scores for a half-trained model
            log(result.note)
            return {**summary, "minutes": round((time.time() - launched) / 60, 2)}
        report = {**score(task.model, result.precision), **summary, "minutes": round((time.time() - launched) / 60, 2)}
    write_atomically(Path(cfg.out_dir) / "report.json", (json.dumps(report, indent=1) + "\n").encode())
    scores = format_classification(report) if cfg.task == "classify" else format_instruct(report)
    log("\n".join([scores] + ([result.note] if result.note else []) +
                  [f"{result.status}: {result.steps} steps in {report['minutes']:.1f} min; checkpoint "
                   f"{report['checkpoint']} (the best {task.val_name} loss, {result.best_val:.4f}), report "
                   f"{cfg.out_dir}/report.json"]))
    return report


if __name__ == "__main__":
    cli(main)
