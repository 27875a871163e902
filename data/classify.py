"""
data/classify.py: labelled texts for classification finetuning.

A user's file, chosen by its extension:
  .csv    a header row naming a `text` and a `label` column (other columns are ignored)
  .tsv    label<TAB>text on each line (the layout of the SMS Spam Collection); a first line that is
          a header, such as label<TAB>text or v1<TAB>v2, is recognised and skipped
  .jsonl  one {"text": ..., "label": ...} object per line
Labels are any strings. Problems are DataErrors naming file and line, before any training starts.

The default needs no file: King James verses labelled by testament, Old or New.
"""
import csv
import io
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from data import DataError, decode_utf8, read_bytes
from data.jsonl import parse_jsonl

CLASSIFY_FILES = "a .csv, .tsv or .jsonl file"

# What the label column of a header is called in labelled data sets (the SMS Spam Collection's is v1).
HEADER_LABELS = ("label", "labels", "class", "category", "target", "v1", "y")


@dataclass
class Labelled:
    text: str
    label: str
    line: int  # where it came from, for error messages


def load_labelled(path):
    """Read a .csv, .tsv or .jsonl file of labelled texts, checked. Returns a list of Labelled."""
    raw = read_bytes(path, CLASSIFY_FILES)
    readers = {".csv": read_csv, ".tsv": read_tsv, ".jsonl": read_labelled_jsonl}
    extension = Path(path).suffix.lower()
    if extension not in readers:
        raise DataError(f"{path}: unknown format {extension or '(no extension)'!r}: expected .csv, .tsv or .jsonl")
    examples = readers[extension](path, raw)
    check_labelled(path, examples)
    return examples


def read_csv(path, raw):
    rows = csv.reader(io.StringIO(decode_utf8(path, raw), newline=""))  # newline="": quoted fields may span lines
    try:
        text_at, label_at, width = csv_columns(path, rows)
        examples = []
        for row in rows:
            if not any(field.strip() for field in row):
                continue
            if len(row) != width:
                raise DataError(f"{path}:{rows.line_num}: expected {width} fields like the header, "
                                f"found {len(row)} (quote texts that contain commas)")
            examples.append(Labelled(row[text_at], row[label_at], rows.line_num))
    except csv.Error as e:
        raise DataError(f"{path}:{rows.line_num}: not valid CSV ({e})") from None
    return examples


def csv_columns(path, rows):
    """(index of the text column, index of the label column, number of columns), from the header: the
    first row that is not blank."""
    header = next((row for row in rows if any(field.strip() for field in row)), None)
    if header is None:
        raise DataError(f"{path}: the file is empty; expected a header with text and label columns")
    names = [name.strip().lower() for name in header]
    missing = [column for column in ("text", "label") if column not in names]
    if missing:
        raise DataError(f"{path}:{rows.line_num}: header {header} has no {' or '.join(missing)} column; "
                        "expected a first line naming the columns, one of them text and one label")
    return names.index("text"), names.index("label"), len(header)


def read_tsv(path, raw):
    examples = []
    for number, line in enumerate(io.StringIO(decode_utf8(path, raw), newline=""), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}:{number}: expected label<TAB>text, found no tab")
        examples.append(Labelled(text, label, number))
    return without_header(path, examples)


def without_header(path, examples):
    """examples without the first if it is a header: its label is a usual column name, and a name
    that no other line has as its label (a data set whose labels are "class" and "other" keeps it)."""
    if examples and examples[0].label.strip().lower() in HEADER_LABELS \
            and all(ex.label != examples[0].label for ex in examples[1:]):
        first = examples[0]
        print(f"{path}:{first.line} looks like a header ({first.label}, {first.text}): skipped", file=sys.stderr)
        return examples[1:]
    return examples


def read_labelled_jsonl(path, raw):
    examples = []
    for number, record in parse_jsonl(path, raw)[0]:
        if "text" not in record or "label" not in record:
            raise DataError(f'{path}:{number}: expected an object with "text" and "label" fields')
        if not isinstance(record["text"], str):
            raise DataError(f'{path}:{number}: "text" must be a string, got {type(record["text"]).__name__}')
        examples.append(Labelled(record["text"], str(record["label"]), number))
    return examples


def check_labelled(path, examples):
    """Refuse what would train badly: empty texts or labels, a label with one example (it cannot be
    both trained on and tested), or fewer than two labels."""
    for ex in examples:
        if not ex.text.strip():
            raise DataError(f"{path}:{ex.line}: empty text")
        if not ex.label.strip():
            raise DataError(f"{path}:{ex.line}: empty label")
    if not examples:
        raise DataError(f"{path}: no examples found; the file is empty or holds only blank lines")
    lines = defaultdict(list)
    for ex in examples:
        lines[ex.label].append(ex.line)
    for label, at in lines.items():
        if len(at) == 1:
            raise DataError(f"{path}:{at[0]}: label {label!r} has a single example; "
                             f"each label needs at least two (one to train on, one to test)")
    if len(lines) < 2:
        raise DataError(f"{path}: every example has the label {examples[0].label!r}; classification needs two or more")


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
