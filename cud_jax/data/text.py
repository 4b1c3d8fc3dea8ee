"""`load_text`: intent / topic classification data sets as padded WordPiece id arrays.

    ds = data.load_text("banking77", data_dir="../shared/data", tokenizer="path/to/bert")
    ds.train.images    # int32 [N, L] token ids, 0 = [PAD] (the `Split` field keeps its name)
    ds = data.load_text("clinc150", data_dir="../shared/data", tokenizer="path/to/bert")
    ds.ood_test        # CLINC150's out-of-scope test utterances, labels -1

The splits reuse the vision `Split` NamedTuple so the trainer, batching and metrics treat text
exactly like images: `Split.images` holds the token ids `int32 [N, L]` here (the name is kept
for compatibility), `Split.labels` the int32 labels (-1 for OOD splits). Each split is padded
to its own longest sequence rounded up to a multiple of 8 (see `cud_jax.data.tokenization`),
so the train, val and test arrays may have different widths L.

Sources (a function per name reads texts and labels; `load_text` tokenises and splits):

    banking77    train.csv / test.csv (`text,category`) + categories.json, in data_dir or
                 data_dir/banking77. No official validation split: `val_size` examples
                 (default 1,000) are carved from train, class-stratified, fixed by `seed`.
    clinc150     data_full.json in data_dir or data_dir/clinc150 ("full" version): official
                 train / val / test in-scope splits (150 intents), out-of-scope `oos_val` /
                 `oos_test` as `ood_val` / `ood_test` (labels -1). `domains.json`, when
                 present, gives the 10 domains as superclasses.
    hf:<dataset> a Hugging Face `datasets` data set (needs `datasets`, and the network or its
                 cache); presets for trec, ag_news, SetFit/ag_news and AmazonScience/massive
                 (config en-US), other names take `text_field` / `label_field` options.
    tfds:<name>  an already prepared TFDS data set (e.g. tfds:ag_news_subset), with
                 `text_field` / `label_field` options.

The `hf:` and `tfds:` paths are not exercised by the tests (no network here): they are
written against the documented APIs and may need the field options for a given data set.
Class order: categories.json for banking77; sorted intent names for clinc150; the
data set's ClassLabel names (else sorted label values) for hf: / tfds:.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Callable, NamedTuple

import numpy as np

from cud_jax.data._sources import call_source
from cud_jax.data.containers import Split
from cud_jax.data.errors import DataNotFoundError
from cud_jax.data.tokenization import WordPieceTokenizer, load_tokenizer
from cud_jax.data.vision import stratified_order


class TextSplit(NamedTuple):
    """Raw texts and int labels of one split, before tokenisation."""

    texts: list[str]
    labels: np.ndarray


class RawText(NamedTuple):
    """What a text source returns. `val` is the official validation split or None."""

    train: TextSplit
    test: TextSplit
    class_names: tuple[str, ...]
    val: TextSplit | None = None
    ood_val: list[str] | None = None
    ood_test: list[str] | None = None
    class_to_superclass: tuple[int, ...] | None = None
    superclass_names: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class TextData:
    """A tokenised text classification data set, ready for the trainer.

    Attributes:
      train, val, test: `Split(images=int32 token ids [N, L], labels=int32 [N])`; the
        `images` field holds token ids (0 = [PAD] for BERT vocabularies).
      num_classes, class_names: the K classes; labels lie in `[0, K)`.
      name: the name `load_text` was called with.
      vocab_size: size of the tokenizer's vocabulary (must match the model's).
      max_length: truncation length, [CLS] and [SEP] included.
      pad_id: the padding id; models derive their attention mask as `ids != pad_id`.
      ood_test, ood_val: out-of-distribution splits (labels -1), e.g. CLINC150's
        out-of-scope queries; None for sources without one.
      class_to_superclass, superclass_names: a class hierarchy (CLINC150 domains) or None.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    name: str
    vocab_size: int
    max_length: int
    pad_id: int = 0
    ood_test: Split | None = None
    ood_val: Split | None = None
    class_to_superclass: tuple[int, ...] | None = None
    superclass_names: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        ood = "" if self.ood_test is None else f", ood_test={len(self.ood_test)}"
        return (f"TextData(name={self.name!r}, num_classes={self.num_classes}, "
                f"train={len(self.train)}x{self.train.images.shape[1]}, val={len(self.val)}, "
                f"test={len(self.test)}{ood}, max_length={self.max_length})")


TextSource = Callable[..., RawText]
_SOURCES: dict[str, TextSource] = {}
_DEFAULT_CARVE = 1000  # val_size default for sources without an official validation split


def register_text_source(name: str, source: TextSource, *, overwrite: bool = False) -> None:
    """Makes `load_text(name, ...)` call `source(data_dir, **source_kwargs) -> RawText`.

    A name ending in ":" registers a prefix: `load_text(name + ARG)` then calls
    `source(ARG, data_dir, **source_kwargs)` (e.g. "csv:" with ARG a path).
    """
    if name.startswith(("hf:", "tfds:")):
        raise ValueError("names starting with 'hf:' or 'tfds:' are reserved.")
    if name in _SOURCES and not overwrite:
        raise ValueError(f"text source {name!r} is already registered; pass overwrite=True.")
    _SOURCES[name] = source


def text_sources() -> tuple[str, ...]:
    """Registered source names (plus any `hf:<name>` / `tfds:<name>`)."""
    return tuple(sorted(_SOURCES))


# ---------------------------------------------------------------------------------------
# Local sources.


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


register_text_source("banking77", load_banking77)
register_text_source("clinc150", load_clinc150)


# ---------------------------------------------------------------------------------------
# Hugging Face datasets and TFDS (network or prepared caches; tested with stand-ins).

# name -> (load_dataset args, text field, label field, train, val or None, test)
_HF_PRESETS: dict[str, tuple[tuple, str, str, str, str | None, str]] = {
    "trec": (("trec",), "text", "coarse_label", "train", None, "test"),
    "ag_news": (("ag_news",), "text", "label", "train", None, "test"),
    "fancyzhx/ag_news": (("fancyzhx/ag_news",), "text", "label", "train", None, "test"),
    "SetFit/ag_news": (("SetFit/ag_news",), "text", "label", "train", None, "test"),
    "AmazonScience/massive": (("AmazonScience/massive", "en-US"), "utt", "intent", "train",
                              "validation", "test"),
    "massive": (("AmazonScience/massive", "en-US"), "utt", "intent", "train", "validation",
                "test"),
    "banking77": (("banking77",), "text", "label", "train", None, "test"),
    "clinc_oos": (("clinc_oos", "plus"), "text", "intent", "train", "validation", "test"),
}


def _class_names_from(feature, labels: Sequence) -> tuple[tuple[str, ...], dict]:
    names = getattr(feature, "names", None)
    if names:
        return tuple(str(n) for n in names), {i: i for i in range(len(names))}
    values = sorted(set(labels))
    return tuple(str(v) for v in values), {v: i for i, v in enumerate(values)}


def load_hf_text(dataset: str, data_dir=None, *, config: str | None = None,
                 text_field: str | None = None, label_field: str | None = None,
                 train_split: str | None = None, val_split: str | None = None,
                 test_split: str | None = None) -> RawText:
    """A text classification data set through Hugging Face `datasets.load_dataset`.

    `data_dir` is passed as `cache_dir`. Tested against a stand-in for `datasets`
    (tests/test_text_remote_sources.py), not against the Hub (no network here).
    """
    try:
        import datasets  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError(f"hf:{dataset} needs the Hugging Face `datasets` package (pip install "
                          "datasets) and the network or its cache; the local sources are "
                          f"{list(text_sources())}.") from None
    args, tf, lf, tr, va, te = _HF_PRESETS.get(
        dataset, ((dataset,), "text", "label", "train", None, "test"))
    if config is not None:
        args = (args[0], config)
    text_field, label_field = text_field or tf, label_field or lf
    train_split, test_split = train_split or tr, test_split or te
    val_split = val_split if val_split is not None else va
    try:
        dsd = datasets.load_dataset(*args, cache_dir=data_dir)
    except Exception as e:
        raise DataNotFoundError(
            f"hf:{dataset}: datasets.load_dataset{args} failed ({type(e).__name__}: {e}). It "
            "needs the network or a filled cache (data_dir / HF_DATASETS_CACHE).") from e
    feature = dsd[train_split].features.get(label_field)
    if feature is None or text_field not in dsd[train_split].features:
        raise ValueError(f"hf:{dataset}: fields {text_field!r} / {label_field!r} not in "
                         f"{list(dsd[train_split].features)}; pass text_field= / label_field=.")
    class_names, to_id = _class_names_from(feature, dsd[train_split][label_field])

    def split(name):
        part = dsd[name]
        return TextSplit(list(part[text_field]),
                         np.asarray([to_id[v] for v in part[label_field]], np.int32))

    return RawText(train=split(train_split), test=split(test_split), class_names=class_names,
                   val=split(val_split) if val_split else None)


_TFDS_PRESETS = {
    "ag_news_subset": ("description", "label"),
    "trec": ("text", "label-coarse"),
}


def load_tfds_text(name: str, data_dir=None, *, text_field: str | None = None,
                   label_field: str | None = None, train_split: str = "train",
                   val_split: str | None = None, test_split: str = "test") -> RawText:
    """A prepared TFDS text data set.

    Tested against a stand-in for `tensorflow_datasets` (tests/test_text_remote_sources.py),
    not against TFDS itself (no TensorFlow here).
    """
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError(f"tfds:{name} needs tensorflow-datasets (pip install "
                          "'cud_jax[tfds]').") from None
    tf_, lf = _TFDS_PRESETS.get(name, ("text", "label"))
    text_field, label_field = text_field or tf_, label_field or lf
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
    except Exception as e:
        raise DataNotFoundError(f"tfds:{name}: could not prepare the data set ({e}).") from e
    feature = builder.info.features[label_field]

    def split(s):
        rows = tfds.as_numpy(builder.as_dataset(split=s))
        texts, labels = [], []
        for r in rows:
            t = r[text_field]
            texts.append(t.decode("utf-8") if isinstance(t, bytes) else str(t))
            labels.append(int(r[label_field]))
        return TextSplit(texts, np.asarray(labels, np.int32))

    names = getattr(feature, "names", None)
    parts = {s: split(s) for s in {train_split, test_split, *(filter(None, [val_split]))}}
    if names is None:
        names = [str(i) for i in range(int(parts[train_split].labels.max()) + 1)]
    return RawText(train=parts[train_split], test=parts[test_split], class_names=tuple(names),
                   val=parts[val_split] if val_split else None)


# ---------------------------------------------------------------------------------------
# load_text.


def _call_source(name: str, source: TextSource, data_dir, kwargs):
    return call_source("load_text", name, source, data_dir, kwargs)


def _take(split: TextSplit, idx: np.ndarray) -> TextSplit:
    return TextSplit([split.texts[i] for i in idx], split.labels[idx])


def _stratified(split: TextSplit, size: int, seed: int, purpose: int
              ) -> tuple[TextSplit, TextSplit]:
    """(chosen, rest), class-stratified, each in original order (as load_vision does)."""
    order = stratified_order(split.labels, np.random.default_rng([seed, purpose]))
    return _take(split, np.sort(order[:size])), _take(split, np.sort(order[size:]))


def _check_size(field: str, value, upper: int, what: str, *, allow_zero: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{field}` must be an int or None, got {value!r}.")
    low = 0 if allow_zero else 1
    if not low <= value <= upper:
        raise ValueError(f"`{field}`={value} must lie in [{low}, {upper}]: {what}.")


def load_text(name: str, *, tokenizer: str | os.PathLike | WordPieceTokenizer,
              data_dir: str | os.PathLike | None = None, val_size: int | None = None,
              seed: int = 0, max_length: int = 128, pad_multiple: int = 8,
              lowercase: bool | None = None, train_subset: int | None = None,
              test_subset: int | None = None, **source_kwargs) -> TextData:
    """Loads and tokenises a text classification data set.

    Args:
      name: "banking77", "clinc150", "massive", "trec", "csv:<path>", "jsonl:<path>"
        (`cud_jax.data.text_files`), "hf:<dataset>", "tfds:<name>", or a name added with
        `register_text_source`.
      tokenizer: the checkpoint folder (its tokenizer.json / vocab.txt), a tokenizer.json or
        vocab.txt file, or a `WordPieceTokenizer`. Use the vocabulary of the model that will
        read the ids.
      data_dir: where the source looks (banking77: the folder with train.csv or its parent;
        clinc150: the folder with data_full.json or its parent). Default: $CUD_JAX_DATA_DIR.
      val_size: for sources with an official validation split (clinc150, massive) leave None
        to use it, or 0 to drop it. For sources without one, the number of training examples
        carved into `val` (class-stratified, fixed by `seed`); None means 1,000 (a tenth of
        train if that is smaller).
      seed: seed of the validation carve and the subsets.
      max_length: truncation length in WordPieces, [CLS] and [SEP] included.
      pad_multiple: each split is padded to its longest sequence rounded up to this.
      lowercase: only for a vocab.txt tokenizer; see `load_tokenizer`.
      train_subset, test_subset: keep this many examples, class-stratified (each class in
        proportion to its size, as load_vision), for quick runs.
      **source_kwargs: source options (clinc150: `version`; hf:/tfds: `text_field`,
        `label_field`, split names, `config`).

    Raises:
      DataNotFoundError: files missing; the message names the folder searched and the source.
      ValueError: unknown name, sizes that do not fit, labels outside the class list.
    """
    if name.startswith("hf:"):
        raw = load_hf_text(name[3:], data_dir, **source_kwargs)
    elif name.startswith("tfds:"):
        raw = load_tfds_text(name[5:], data_dir, **source_kwargs)
    elif name in _SOURCES:
        raw = _call_source(name, _SOURCES[name], data_dir, source_kwargs)
    elif name.partition(":")[0] + ":" in _SOURCES and name.partition(":")[2]:  # csv:PATH
        prefix, _, arg = name.partition(":")
        raw = _call_source(name, functools.partial(_SOURCES[prefix + ":"], arg), data_dir,
                           source_kwargs)
    else:
        raise ValueError(f"unknown text data set {name!r}; choose one of {list(text_sources())}"
                         " or 'hf:<dataset>' / 'tfds:<name>' (e.g. 'hf:trec').")
    tok = tokenizer if isinstance(tokenizer, WordPieceTokenizer) else load_tokenizer(
        tokenizer, lowercase=lowercase)

    train = raw.train
    n_train = len(train.texts)
    if raw.val is not None:
        if val_size not in (None, 0):
            raise ValueError(f"{name} has an official validation split; leave `val_size` None "
                             f"to use it (or 0 for none), got val_size={val_size}.")
        val = raw.val if val_size is None else _take(raw.val, np.zeros(0, np.int64))
    else:
        if val_size is None:
            val_size = min(_DEFAULT_CARVE, n_train // 10)
        _check_size("val_size", val_size, n_train - 1, f"{name} has {n_train} training "
                    "examples and at least one must stay for training", allow_zero=True)
        val, train = _stratified(train, val_size, seed, 0) if val_size else (
            _take(train, np.zeros(0, np.int64)), train)
    _check_size("train_subset", train_subset, len(train.texts),
                f"{len(train.texts)} training examples are left after the validation split",
                allow_zero=False)
    if train_subset is not None and train_subset < len(train.texts):
        train, _ = _stratified(train, train_subset, seed, 1)
    test = raw.test
    _check_size("test_subset", test_subset, len(test.texts),
                f"{name} has {len(test.texts)} test examples", allow_zero=False)
    if test_subset is not None and test_subset < len(test.texts):
        test, _ = _stratified(test, test_subset, seed, 2)

    def encode(texts: list[str], labels: np.ndarray) -> Split:
        ids = tok.encode_padded(texts, max_length=max_length, pad_multiple=pad_multiple)
        return Split(ids, np.asarray(labels, np.int32))

    def encode_ood(texts):
        return None if texts is None else encode(texts, np.full(len(texts), -1, np.int32))

    return TextData(
        train=encode(*train), val=encode(*val), test=encode(*test),
        num_classes=len(raw.class_names), class_names=tuple(raw.class_names), name=name,
        vocab_size=tok.vocab_size, max_length=int(max_length), pad_id=tok.pad_id,
        ood_test=encode_ood(raw.ood_test), ood_val=encode_ood(raw.ood_val),
        class_to_superclass=raw.class_to_superclass, superclass_names=raw.superclass_names)
