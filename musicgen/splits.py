"""Official splits: which split a corpus's own layout puts each file in.

Corpora that people compare models on ship their split, and a benchmark is only comparable on it:

* folders: ``SRC/train/``, ``SRC/valid/`` (or ``val/``, ``validation/``) and ``SRC/test/``;
* a table (CSV or JSON) with a path column and a split column, paths relative to SRC. MAESTRO's
  ``maestro-v3.0.0.csv`` (``midi_filename``, ``split`` in train / validation / test) and its JSON
  (pandas' column layout: ``{"midi_filename": {"0": ...}, "split": {"0": ...}}``) are the first
  case; a list of objects and the obvious generic column names (``path``, ``split``) work too.

Both give a label per file path relative to SRC: a split of :data:`musicgen.dataset.SPLITS`, or
None with the reason the file has none (it is then skipped and listed, never guessed).
"""
from __future__ import annotations

import csv
import io
import json
import posixpath

from . import storage
from .errors import DataError

#: What a split is called in the wild -> musicgen's name.
SPLIT_NAMES = {"train": "train", "training": "train",
               "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test", "testing": "test"}
PATH_COLUMNS = ("midi_filename", "path", "midi_path", "filename", "file", "midi")
SPLIT_COLUMNS = ("split", "subset", "set")


def folder_labels(rels: list[str]) -> list[tuple[str | None, str | None]]:
    """(split, None) or (None, reason) for each path relative to SRC, from its first folder."""
    out = []
    for rel in rels:
        top = rel.split("/", 1)[0] if "/" in rel else None
        split = SPLIT_NAMES.get(top.lower()) if top else None
        out.append((split, None) if split else
                   (None, "not in a split folder (train/, valid/ or val/ or validation/, test/)"))
    return out


def check_folders(src: str, labels) -> None:
    if not any(split for split, _ in labels):
        raise DataError(f"{src}: --split folders needs train/, valid/ (or val/, validation/) and test/ "
                        "folders holding MIDI files; found none")


def read_table(path: str) -> dict[str, str]:
    """{path relative to SRC: split} from a CSV or JSON split table; DataError naming what is wrong."""
    if storage.info(path).type.name != "File":
        raise DataError(f"{path}: no such split file")
    try:
        data = storage.read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read the split file ({storage._first_line(e)})") from None
    rows = _json_rows(path, data) if path.lower().endswith(".json") else _csv_rows(path, data)
    if not rows:
        raise DataError(f"{path}: the split table has no rows")
    columns = list(rows[0])
    path_col = _column(path, columns, PATH_COLUMNS, "path")
    split_col = _column(path, columns, SPLIT_COLUMNS, "split")
    table = {}
    for i, row in enumerate(rows, 1):
        name, label = row.get(path_col), row.get(split_col)
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}: row {i} has no {path_col}")
        split = SPLIT_NAMES.get(str(label).strip().lower())
        if split is None:
            raise DataError(f"{path}: row {i} ({name}) has {split_col} {label!r}, not one of "
                            f"train, validation (valid, val) or test")
        key = normalize(name)
        if table.get(key, split) != split:
            raise DataError(f"{path}: {name} is listed in two splits ({table[key]} and {split})")
        table[key] = split
    return table


def normalize(rel: str) -> str:
    """A table's path as the listing spells it: forward slashes, no ``./``."""
    return posixpath.normpath(rel.strip().replace("\\", "/")).lstrip("/")


def table_labels(src: str, table_path: str, table: dict[str, str], rels: list[str]):
    """(split, None) or (None, reason) per path; DataError naming the first listed file missing under SRC."""
    present = set(rels)
    missing = sorted(k for k in table if k not in present)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{storage.join(src, missing[0])}: listed in {table_path} but not found under {src}{more}")
    reason = f"not listed in {table_path}"
    return [(table[r], None) if r in table else (None, reason) for r in rels]


def _csv_rows(path: str, data: bytes) -> list[dict]:
    try:
        text = data.decode("utf-8-sig")
        return list(csv.DictReader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV table ({e})") from None


def _json_rows(path: str, data: bytes) -> list[dict]:
    """A list of objects, or pandas' column layout ({column: {index: value}} or {column: [values]})."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None
    if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        return doc
    if isinstance(doc, dict) and doc and all(isinstance(v, (dict, list)) for v in doc.values()):
        columns = {k: (list(v.values()) if isinstance(v, dict) else v) for k, v in doc.items()}
        n = {len(v) for v in columns.values()}
        if len(n) == 1:
            return [{k: v[i] for k, v in columns.items()} for i in range(n.pop())]
    raise DataError(f"{path}: a JSON split table must be a list of objects or columns of equal length")


def _column(path: str, columns: list[str], names: tuple[str, ...], what: str) -> str:
    lower = {c.strip().lower(): c for c in columns if isinstance(c, str)}
    for name in names:
        if name in lower:
            return lower[name]
    raise DataError(f"{path}: no {what} column (expected one of {', '.join(names)}; "
                    f"found {', '.join(map(str, columns)) or 'none'})")

