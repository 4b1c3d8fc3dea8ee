"""The benchmark text sources read from their official files: Banking77 and CLINC150
(registered in `cud_jax.data.text`)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import numpy as np

from cud_jax.data.containers import RawText, TextSplit
from cud_jax.data.errors import DataNotFoundError




def _find_files(data_dir, subdir: str, files: Sequence[str], name: str, how: str) -> str:
    """The folder holding `files`: data_dir itself or data_dir/subdir."""
    data_dir = data_dir or os.environ.get("CUD_JAX_DATA_DIR") or None
    if data_dir is None:
        raise DataNotFoundError(
            f"{name}: no data_dir was given (pass data_dir=... or set CUD_JAX_DATA_DIR) to a "
            f"folder holding {subdir}/ with {', '.join(files)}. {how}")
    data_dir = os.path.expanduser(os.fspath(data_dir))
    for folder in (data_dir, os.path.join(data_dir, subdir)):
        if all(os.path.isfile(os.path.join(folder, f)) for f in files):
            return folder
    raise DataNotFoundError(
        f"{name}: {', '.join(files)} not found in {os.path.abspath(data_dir)} or "
        f"{os.path.join(os.path.abspath(data_dir), subdir)}. {how}")


def _label_ids(labels: Sequence[str], class_names: Sequence[str], what: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"{what}: labels {unknown[:5]} are not among the {len(index)} classes.")
    return np.asarray([index[label] for label in labels], dtype=np.int32)


def load_banking77(data_dir) -> RawText:
    """Banking77 (Casanueva et al. 2020) from the PolyAI `train.csv`, `test.csv`,
    `categories.json` (77 intents, in the order of categories.json)."""
    how = ("The files are in PolyAI-LDN/task-specific-datasets, folder "
           "banking_data/ (train.csv, test.csv, categories.json).")
    folder = _find_files(data_dir, "banking77", ("train.csv", "test.csv", "categories.json"),
                         "banking77", how)
    with open(os.path.join(folder, "categories.json"), encoding="utf-8") as f:
        class_names = tuple(json.load(f))
    splits = {}
    for split in ("train", "test"):
        path = os.path.join(folder, f"{split}.csv")
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not {"text", "category"} <= set(reader.fieldnames or ()):
                raise ValueError(f"{path} must have the header `text,category`, got "
                                 f"{reader.fieldnames}.")
            rows = [(r["text"], r["category"]) for r in reader]
        splits[split] = TextSplit([t for t, _ in rows],
                                  _label_ids([c for _, c in rows], class_names, path))
    return RawText(train=splits["train"], test=splits["test"], class_names=class_names)


def load_clinc150(data_dir, *, version: str = "full") -> RawText:
    """CLINC150 (Larson et al. 2019) from `data_<version>.json` (`full`, `small`,
    `imbalanced`, as in clinc/oos-eval): 150 in-scope intents with official train / val / test
    and the out-of-scope (`oos`) queries as OOD splits."""
    file = f"data_{version}.json"
    how = "The file is in clinc/oos-eval, folder data/."
    folder = _find_files(data_dir, "clinc150", (file,), "clinc150", how)
    with open(os.path.join(folder, file), encoding="utf-8") as f:
        raw = json.load(f)
    missing = [k for k in ("train", "val", "test") if k not in raw]
    if missing:
        raise ValueError(f"{os.path.join(folder, file)} lacks the keys {missing}.")
    class_names = tuple(sorted({intent for k in ("train", "val", "test")
                                for _, intent in raw[k]}))

    def split(key):
        pairs = raw[key]
        return TextSplit([t for t, _ in pairs],
                         _label_ids([c for _, c in pairs], class_names, f"clinc150 {key}"))

    superclass = names = None
    domains_path = os.path.join(folder, "domains.json")
    if os.path.isfile(domains_path):
        with open(domains_path, encoding="utf-8") as f:
            domains = json.load(f)
        names = tuple(domains)
        owner = {intent: d for d, intents in enumerate(domains.values()) for intent in intents}
        if set(owner) >= set(class_names):
            superclass = tuple(owner[c] for c in class_names)
        else:
            names = None
    oos = {k: [t for t, _ in raw[k]] if k in raw else None for k in ("oos_val", "oos_test")}
    return RawText(train=split("train"), val=split("val"), test=split("test"),
                   class_names=class_names, ood_val=oos["oos_val"], ood_test=oos["oos_test"],
                   class_to_superclass=superclass, superclass_names=names)
