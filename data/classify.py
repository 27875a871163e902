"""
data/classify.py: labelled texts for classification finetuning.

A user's file, chosen by its extension:
  .csv    a header row naming a `text` and a `label` column (other columns are ignored)
  .tsv    label<TAB>text on each line, no header (the layout of the SMS Spam Collection)
  .jsonl  one {"text": ..., "label": ...} object per line
Labels are any strings. Problems are reported as file:line, before any training starts.

The default needs no file: King James verses labelled by testament, Old or New.
"""
import csv
import json
import random
from collections import defaultdict
from dataclasses import dataclass


@dataclass
class Labelled:
    text: str
    label: str
    line: int  # where it came from, for error messages


def load_labelled(path):
    """Read a .csv, .tsv or .jsonl file of labelled texts, checked. Returns a list of Labelled."""
    readers = {".csv": read_csv, ".tsv": read_tsv, ".jsonl": read_jsonl}
    extension = path[path.rfind("."):].lower() if "." in path else ""
    if extension not in readers:
        raise ValueError(f"{path}: unknown format {extension or '(no extension)'!r}: expected .csv, .tsv or .jsonl")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            examples = readers[extension](path, f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded)") from None
    check_labelled(path, examples)
    return examples


def read_csv(path, f):
    rows = csv.reader(f)
    header = next(rows, None)
    if header is None:
        raise ValueError(f"{path}: the file is empty; expected a header with text and label columns")
    names = [name.strip().lower() for name in header]
    missing = [column for column in ("text", "label") if column not in names]
    if missing:
        raise ValueError(f"{path}:1: header {header} has no {' or '.join(missing)} column; "
                         f"expected a header with text and label columns")
    text_at, label_at = names.index("text"), names.index("label")
    examples = []
    try:
        for row in rows:
            if not any(field.strip() for field in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{rows.line_num}: expected {len(header)} fields like the header, "
                                 f"found {len(row)} (quote texts that contain commas)")
            examples.append(Labelled(row[text_at], row[label_at], rows.line_num))
    except csv.Error as e:
        raise ValueError(f"{path}:{rows.line_num}: not valid CSV ({e})") from None
    return examples


def read_tsv(path, f):
    examples = []
    for lineno, line in enumerate(f, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{lineno}: expected label<TAB>text, found no tab")
        examples.append(Labelled(text, label, lineno))
    return examples


def read_jsonl(path, f):
    examples = []
    for lineno, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise ValueError(f'{path}:{lineno}: expected an object with "text" and "label" fields')
        if not isinstance(record["text"], str):
            raise ValueError(f'{path}:{lineno}: "text" must be a string, got {type(record["text"]).__name__}')
        examples.append(Labelled(record["text"], str(record["label"]), lineno))
    return examples


def check_labelled(path, examples):
    """Refuse what would train badly: empty texts or labels, a label with one example (it cannot be
    both trained on and tested), or fewer than two labels."""
    for ex in examples:
        if not ex.text.strip():
            raise ValueError(f"{path}:{ex.line}: empty text")
        if not ex.label.strip():
            raise ValueError(f"{path}:{ex.line}: empty label")
    if not examples:
        raise ValueError(f"{path}: no examples found")
    lines = defaultdict(list)
    for ex in examples:
        lines[ex.label].append(ex.line)
    for label, at in lines.items():
        if len(at) == 1:
            raise ValueError(f"{path}:{at[0]}: label {label!r} has a single example; "
                             f"each label needs at least two (one to train on, one to test)")
    if len(lines) < 2:
        raise ValueError(f"{path}: every example has the label {examples[0].label!r}; classification needs two or more")


def split_by_label(examples, seed, val_fraction=0.1, test_fraction=0.1, balance=False):
    """(train, val, test), each holding every label in the same proportion (a stratified split).
    balance=True first samples every label down to the size of the rarest, so that the majority
    baseline is 1 / n_labels. Deterministic for a given seed."""
    rng = random.Random(seed)
    by_label = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    smallest = min(len(group) for group in by_label.values())
    train, val, test = [], [], []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        if balance:
            group = group[:smallest]
        n_test = max(1, round(test_fraction * len(group)))
        n_val = min(round(val_fraction * len(group)), len(group) - n_test - 1)
        test += group[:n_test]
        val += group[n_test:n_test + n_val]
        train += group[n_test + n_val:]
    for part in (train, val, test):
        rng.shuffle(part)
    return train, val, test
