"""
data/jsonl.py: JSON lines, one JSON object per line, the format of every .jsonl file here: the FAQ,
instruction and classification data, and the metrics.jsonl that training appends to.

    read_jsonl(path, skip_bad=False) -> (rows, skipped)
    parse_jsonl(path, raw, skip_bad=False) -> (rows, skipped)    the same, for a file's bytes already read

rows is a list of (line number, dict), one per non-blank line, line numbers counting from 1 as editors
do, so that a caller checking the fields can say where a record came from.

Strict (skip_bad=False), for files people write: the first bad line is a DataError naming file and
line, such as "faq.jsonl:7: not valid JSON (Expecting ',' delimiter, column 31)"; skipped is 0.
Lenient (skip_bad=True), for a metrics file that a running process may be writing: a line that is cut
short, not JSON, not UTF-8 or not an object is left out and counted in skipped. A metrics reader:

    rows, skipped = read_jsonl("out/metrics.jsonl", skip_bad=True)
    records = [record for _, record in rows]
"""
import codecs
import json

from data import DataError, decode_utf8, read_bytes


def read_jsonl(path, skip_bad=False):
    """The objects of the JSON lines file at path: (rows, skipped), as the module docstring says."""
    return parse_jsonl(path, read_bytes(path, "a .jsonl file (one JSON object per line)"), skip_bad)


def parse_jsonl(path, raw, skip_bad=False):
    """The objects in raw, the bytes of the file at path: (rows, skipped), as the module docstring says."""
    if not skip_bad:  # decoded whole, so that a bad byte is reported by its offset in the file
        lines = decode_utf8(path, raw).split("\n")  # not splitlines(): JSON strings may hold U+2028
        return [(number, json_object(path, number, line)) for number, line in enumerate(lines, start=1)
                if line.strip()], 0
    rows, skipped = [], 0
    for number, line in enumerate(raw.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json_object(path, number, line.decode("utf-8"))))
        except (UnicodeDecodeError, DataError):
            skipped += 1
    return rows, skipped


def json_object(path, number, line):
    """The JSON object on line `number`, or a DataError saying why there is none."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{number}: not valid JSON ({e.msg}, column {e.colno}); "
                        "expected one JSON object per line") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}:{number}: expected a JSON object {{...}} on each line, found {json_type(value)}")
    return value


def json_type(value):
    """What a JSON value that is not an object is, in JSON's words."""
    return {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(value), "a number")
