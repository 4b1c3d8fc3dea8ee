"""Text classification data from one's own files, and the local MASSIVE and TREC copies.

Own data (`load_text("csv:PATH")` / `load_text("jsonl:PATH")`, or from the command line
`--config.data.name=csv:PATH`):

    PATH a folder   train.csv and test.csv, optionally validation.csv (or val.csv / dev.csv)
                    and ood.csv (out-of-distribution texts, labels not needed)
    PATH a file     one table with a split column (`split_field`, default "split") whose
                    values are train / validation (val, dev) / test / ood; or, given
                    `test_file`, the training table alone

Every table has a text column (`text_field`, default "text") and a label column
(`label_field`, default "label"). Labels are class names or integer ids: with `label_names`
(a comma list, or a file with one name a line) the class order is that list and a label may
be a name or an id into it; without it, integer labels are ids (K = largest id + 1) and text
labels are sorted by name. Without a validation split, `load_text` carves one from train as
for every source. `ood_file` adds an OOD test set from any table with the text column.

CSV files are read as UTF-8 (a byte-order mark is allowed) with a header row; JSONL files
hold one JSON object a line.

Local copies (registered as "massive" and "trec", next to the online `hf:` presets):

    massive   train / validation / test .jsonl with text, label (id) and label_text, in
              data_dir or data_dir/massive_en_us (SetFit/amazon_massive_intent_en-US):
              60 intents, official validation split.
    trec      train_5500.label and TREC_10.label (`COARSE:fine question` lines, ISO-8859-1,
              CRLF), in data_dir or data_dir/trec: 6 coarse classes in the order of the
              Hugging Face `trec` data set (or the 50 fine ones with `fine=True`); no
              official validation split, so `load_text` carves one from train.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Sequence

import numpy as np

from cud_jax.data.errors import DataNotFoundError
from cud_jax.data.containers import RawText, TextSplit
from cud_jax.data.text import register_text_source
from cud_jax.data.text_benchmarks import _find_files

#: Split-column values, and the file stems of a folder, for each split.
SPLIT_ALIASES = {"train": ("train",), "val": ("validation", "val", "dev"), "test": ("test",),
                 "ood": ("ood",)}

#: `data` config fields passed to a text source as options when set (own data, hf:/tfds:).
TEXT_SOURCE_FIELDS = ("text_field", "label_field", "split_field", "label_names", "val_file",
                      "test_file", "ood_file")


def read_records(path: str, fmt: str) -> tuple[list[dict], list[str]]:
    """(rows as dicts, column names) of a CSV (header row) or JSONL file."""
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: no such file.")
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return rows, list(reader.fieldnames or ())
    rows, columns = [], {}
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not a JSON object ({e.msg}); a .jsonl "
                                 "file holds one JSON object a line.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got "
                                 f"{type(row).__name__}.")
            rows.append(row)
            columns.update(dict.fromkeys(row))
    return rows, list(columns)


def _column(rows: list[dict], columns: list[str], field: str, option: str, path: str) -> list:
    """The values of `field`; a missing column (or a row without it) names the fix."""
    if field not in columns:
        raise ValueError(f"{path}: no column {field!r}; the columns are {columns}. Name the "
                         f"right one with --config.data.{option}=COLUMN.")
    values = [row.get(field) for row in rows]
    missing = [i for i, v in enumerate(values) if v is None or v == ""]
    if missing:
        raise ValueError(f"{path}: {len(missing)} rows have no {field!r} value (first: data "
                         f"row {missing[0] + 1}).")
    return values


def _parse_label_names(label_names) -> tuple[str, ...] | None:
    """`label_names` as a tuple: a sequence, a file with one name a line, or a comma list."""
    if label_names is None or label_names == "":
        return None
    if not isinstance(label_names, str):
        return tuple(str(n) for n in label_names)
    if os.path.isfile(os.path.expanduser(label_names)):
        with open(os.path.expanduser(label_names), encoding="utf-8") as f:
            return tuple(line.strip() for line in f if line.strip())
    return tuple(n.strip() for n in label_names.split(",") if n.strip())


def _as_id(value) -> int | None:
    """An integer label id (int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def label_encoder(labels: Sequence, label_names: tuple[str, ...] | None, what: str
                  ) -> tuple[tuple[str, ...], dict]:
    """(class names, label value -> id) for every label value in `labels` (all splits)."""
    values = list(dict.fromkeys(labels))
    ids = {v: _as_id(v) for v in values}
    if label_names is not None:
        index = {name: i for i, name in enumerate(label_names)}
        to_id = {v: index.get(str(v), ids[v]) for v in values}
        bad = [v for v, i in to_id.items() if i is None or not 0 <= i < len(label_names)]
        if bad:
            raise ValueError(f"{what}: labels {bad[:5]} are neither among the "
                             f"{len(label_names)} label_names nor ids in [0, "
                             f"{len(label_names)}).")
        return label_names, to_id
    if all(i is not None for i in ids.values()):
        if min(ids.values()) < 0:
            raise ValueError(f"{what}: label ids must be >= 0, got {min(ids.values())}.")
        num = max(ids.values()) + 1
        return tuple(str(i) for i in range(num)), ids
    names = tuple(sorted(str(v) for v in values))
    index = {name: i for i, name in enumerate(names)}
    return names, {v: index[str(v)] for v in values}


def _split_of(value, path: str, field: str) -> str:
    key = str(value).strip().lower()
    for split, aliases in SPLIT_ALIASES.items():
        if key in aliases:
            return split
    raise ValueError(f"{path}: {field!r} value {value!r} is not a split; use one of "
                     f"{[a for aliases in SPLIT_ALIASES.values() for a in aliases]}.")


def _find_split_file(folder: str, split: str, fmt: str) -> str | None:
    for stem in SPLIT_ALIASES[split]:
        path = os.path.join(folder, f"{stem}.{fmt}")
        if os.path.isfile(path):
            return path
    return None


def _resolve(path: str, data_dir) -> str:
    """`path` as given, or under `data_dir` when relative and only found there."""
    path = os.path.expanduser(path)
    if not os.path.exists(path) and data_dir and not os.path.isabs(path):
        candidate = os.path.join(os.path.expanduser(os.fspath(data_dir)), path)
        if os.path.exists(candidate):
            return candidate
    if not os.path.exists(path):
        raise DataNotFoundError(
            f"{path}: not found (a folder with train / test files or one table with a split "
            "column, e.g. --config.data.name=csv:intents.csv).")
    return path


def load_text_table(fmt: str, path: str, data_dir=None, *, text_field: str = "text",
                    label_field: str = "label", split_field: str = "split",
                    label_names=None, val_file: str | None = None,
                    test_file: str | None = None, ood_file: str | None = None) -> RawText:
    """Own data from CSV / JSONL files (module docstring): `load_text("csv:PATH")`.

    Args:
      fmt: "csv" or "jsonl".
      path: a folder with train / test (optional validation, ood) files, or one file.
      data_dir: relative paths not found as given are looked up under it.
      text_field, label_field, split_field: column names.
      label_names: class order (a comma list, a sequence or a file of names); labels may be
        these names or ids into them. Default: ids as they are, or sorted names.
      val_file, test_file: tables for those splits (then `path` is the training table).
      ood_file: a table of out-of-distribution texts (its label column is not read).
    """
    where = f"{fmt}:{path}"
    path = _resolve(path, data_dir)
    files: dict[str, str] = {}
    if os.path.isdir(path):
        for split in SPLIT_ALIASES:
            found = _find_split_file(path, split, fmt)
            if found:
                files[split] = found
        if "train" not in files or ("test" not in files and test_file is None):
            raise DataNotFoundError(
                f"{where}: a folder needs train.{fmt} and test.{fmt} (optionally "
                f"validation.{fmt}, ood.{fmt}); found {sorted(os.listdir(path))}.")
    else:
        files["train"] = path
    for split, option in (("val", val_file), ("test", test_file), ("ood", ood_file)):
        if option:
            files[split] = _resolve(option, data_dir)

    # Rows per split: from the separate files, or split by the split column of one file.
    parts: dict[str, tuple[list, list]] = {}  # split -> (texts, label values; [] for ood)
    for split, file in files.items():
        rows, columns = read_records(file, fmt)
        texts = [str(t) for t in _column(rows, columns, text_field, "text_field", file)]
        if split == "ood":
            parts[split] = (texts, [])
        elif split != "train" or "test" in files:
            parts[split] = (texts, _column(rows, columns, label_field, "label_field", file))
        else:
            if split_field not in columns:
                raise ValueError(
                    f"{file}: one file needs a {split_field!r} column (train / validation / "
                    f"test / ood) but the columns are {columns}: set "
                    "--config.data.split_field=COLUMN, pass the test table with "
                    "--config.data.test_file=PATH, or point at a folder with "
                    f"train.{fmt} and test.{fmt}.")
            splits = [_split_of(v, file, split_field)
                      for v in _column(rows, columns, split_field, "split_field", file)]
            for name in SPLIT_ALIASES:
                keep = [i for i, s in enumerate(splits) if s == name]
                if not keep or (name != "train" and name in files):  # its own file wins
                    continue
                if name == "ood":  # OOD rows need no label
                    parts[name] = ([texts[i] for i in keep], [])
                else:
                    labels = _column([rows[i] for i in keep], columns, label_field,
                                     "label_field", f"{file} ({name} rows)")
                    parts[name] = ([texts[i] for i in keep], labels)
    for needed in ("train", "test"):
        if needed not in parts:
            raise ValueError(f"{where}: no {needed} rows (split column {split_field!r} or "
                             f"{needed} file).")

    labelled = [parts[s] for s in ("train", "val", "test") if s in parts]
    class_names, to_id = label_encoder([v for _, labels in labelled for v in labels],
                                       _parse_label_names(label_names), where)

    def split(name):
        if name not in parts:
            return None
        texts, labels = parts[name]
        return TextSplit(texts, np.asarray([to_id[v] for v in labels], np.int32))

    ood = parts["ood"][0] if "ood" in parts else None
    return RawText(train=split("train"), val=split("val"), test=split("test"),
                   class_names=class_names, ood_test=ood)


# ---------------------------------------------------------------------------------------
# Local copies of MASSIVE (en-US) and TREC.

MASSIVE_SPLITS = {"train": "train.jsonl", "val": "validation.jsonl", "test": "test.jsonl"}


def load_massive(data_dir) -> RawText:
    """MASSIVE en-US intents (FitzGerald et al. 2022) from the SetFit jsonl copy: official
    train / validation / test, 60 intents ordered by their integer label."""
    how = ("The files are SetFit/amazon_massive_intent_en-US (train / validation / "
           "test .jsonl with text, label, label_text).")
    folder = _find_files(data_dir, "massive_en_us", tuple(MASSIVE_SPLITS.values()), "massive",
                         how)
    parts, names = {}, {}
    for split, file in MASSIVE_SPLITS.items():
        path = os.path.join(folder, file)
        rows, columns = read_records(path, "jsonl")
        texts = _column(rows, columns, "text", "text_field", path)
        ids = [int(i) for i in _column(rows, columns, "label", "label_field", path)]
        for i, name in zip(ids, _column(rows, columns, "label_text", "label_field", path)):
            if names.setdefault(i, name) != name:
                raise ValueError(f"{path}: label {i} is both {names[i]!r} and {name!r}.")
        parts[split] = TextSplit([str(t) for t in texts], np.asarray(ids, np.int32))
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"massive: label ids {sorted(names)[:5]}... are not 0..K-1.")
    return RawText(train=parts["train"], val=parts["val"], test=parts["test"],
                   class_names=tuple(names[i] for i in range(len(names))))


#: TREC coarse classes, in the order of the Hugging Face `trec` ClassLabel.
TREC_COARSE = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")


def _read_trec(path: str) -> tuple[list[str], list[str]]:
    """(questions, COARSE:fine labels) of a TREC `.label` file (ISO-8859-1, CRLF)."""
    texts, labels = [], []
    with open(path, encoding="iso-8859-1") as f:  # universal newlines drop the CR
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            label, _, text = line.partition(" ")
            if ":" not in label or not text:
                raise ValueError(f"{path}, line {number}: expected `COARSE:fine question`, got "
                                 f"{line[:60]!r}.")
            texts.append(text)
            labels.append(label)
    return texts, labels


def load_trec(data_dir, *, fine: bool = False) -> RawText:
    """TREC question classification (Li and Roth 2002): train_5500.label (5,452 questions)
    and TREC_10.label (500). The 6 coarse classes, or with `fine=True` the 50 fine
    `COARSE:fine` labels (sorted)."""
    how = "The files are from cogcomp.seas.upenn.edu/Data/QA/QC (train_5500.label, TREC_10.label)."
    files = {"train": "train_5500.label", "test": "TREC_10.label"}
    folder = _find_files(data_dir, "trec", tuple(files.values()), "trec", how)
    raw = {split: _read_trec(os.path.join(folder, file)) for split, file in files.items()}
    if fine:
        class_names = tuple(sorted({label for _, labels in raw.values() for label in labels}))
    else:
        class_names = TREC_COARSE
    index = {name: i for i, name in enumerate(class_names)}

    def split(name):
        texts, labels = raw[name]
        keys = labels if fine else [label.partition(":")[0] for label in labels]
        unknown = sorted(set(keys) - set(index))
        if unknown:
            raise ValueError(f"trec {name}: unknown labels {unknown[:5]}.")
        return TextSplit(texts, np.asarray([index[k] for k in keys], np.int32))

    return RawText(train=split("train"), test=split("test"), class_names=class_names)


register_text_source("massive", load_massive)
register_text_source("trec", load_trec)
# Prefix sources: load_text("csv:PATH") calls load_text_table("csv", PATH, data_dir, ...).
register_text_source("csv:", functools.partial(load_text_table, "csv"))
register_text_source("jsonl:", functools.partial(load_text_table, "jsonl"))
