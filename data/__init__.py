"""
data/: the readers of every file the pipeline learns from.

  prepare.py   corpora for pretraining (the KJV, Tiny Shakespeare, any text file) -> token files
  classify.py  labelled texts (.csv, .tsv, .jsonl) for classification finetuning
  instruct.py  the generated instruction set, and a user's own (.json list or .jsonl)
  faq.py       the FAQ (faq.jsonl): trained on by instruct.py, answered from by chat_app.py
  jsonl.py     JSON lines: the one parser that every .jsonl file goes through

Input that cannot be used is a DataError, raised before any training starts, whose message names the
file (and the line, where there is one) and says what was expected. The scripts print it as one line.
"""
from pathlib import Path


class DataError(ValueError):
    """A data file that cannot be used, with a message that says where and what was expected."""


def read_bytes(path, expected):
    """The contents of the file at path. `expected` says what it should be ("a .json or .jsonl file"),
    for the message when the path is missing, a directory or unreadable."""
    if Path(path).is_dir():
        raise DataError(f"{path} is a directory; expected {expected}")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; expected {expected}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); expected {expected}") from None


def decode_utf8(path, raw):
    """raw as text, or a DataError naming the first byte that is not UTF-8. A leading byte-order mark,
    which some editors and spreadsheets write, is dropped: it is not part of the text."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path} is not UTF-8: byte offset {e.start} (line {line}) is {raw[e.start:e.start + 1]!r}; "
                        "convert it first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`") from None
