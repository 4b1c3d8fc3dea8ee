"""`load_text`: intent / topic classification data sets as padded WordPiece id arrays.

    ds = data.load_text("banking77", data_dir="../shared/data", tokenizer="path/to/bert")
    ds.train.inputs    # int32 [N, L] token ids, 0 = [PAD]
    ds = data.load_text("clinc150", data_dir="../shared/data", tokenizer="path/to/bert")
    ds.ood_test        # CLINC150's out-of-scope test utterances, labels -1

The splits are the one `Split` type, so the trainer, batching and metrics treat text exactly
like images: `Split.inputs` holds the token ids `int32 [N, L]` here, `Split.labels` the
int32 labels (-1 for OOD splits). Each split is padded to its own longest sequence rounded
up to a multiple of 8 (see `cud_jax.data.tokenization`), so the train, val and test arrays
may have different widths L.

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

import os
from typing import Callable

import numpy as np

from cud_jax.data._sources import (call_registered, check_count, is_registered,
                                   register_source, source_names)
from cud_jax.data.containers import RawText, Split, TextData, TextSplit
from cud_jax.data.text_benchmarks import load_banking77, load_clinc150
from cud_jax.data.text_hub import load_hf_text, load_tfds_text
from cud_jax.data.tokenization import WordPieceTokenizer, load_tokenizer
from cud_jax.data.vision import stratified_order


TextSource = Callable[..., RawText]
_DEFAULT_CARVE = 1000  # val_size default for sources without an official validation split


def register_text_source(name: str, source: TextSource, *, overwrite: bool = False) -> None:
    """Makes `load_text(name, ...)` call `source(data_dir, **source_kwargs) -> RawText`.

    A name ending in ":" registers a prefix: `load_text(name + ARG)` then calls
    `source(ARG, data_dir, **source_kwargs)` (e.g. "csv:" with ARG a path).
    """
    register_source("text", name, source, overwrite=overwrite)


def text_sources() -> tuple[str, ...]:
    """Registered source names (plus any `hf:<name>` / `tfds:<name>`)."""
    return source_names("text")


register_text_source("banking77", load_banking77)
register_text_source("clinc150", load_clinc150)


# ---------------------------------------------------------------------------------------
# load_text.


def _take(split: TextSplit, idx: np.ndarray) -> TextSplit:
    return TextSplit([split.texts[i] for i in idx], split.labels[idx])


def _stratified(split: TextSplit, size: int, seed: int, purpose: int
              ) -> tuple[TextSplit, TextSplit]:
    """(chosen, rest), class-stratified, each in original order (as load_vision does)."""
    order = stratified_order(split.labels, np.random.default_rng([seed, purpose]))
    return _take(split, np.sort(order[:size])), _take(split, np.sort(order[size:]))


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
    elif is_registered("text", name):
        raw = call_registered("text", name, data_dir, source_kwargs)
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
        check_count("val_size", val_size, n_train - 1, f"{name} has {n_train} training "
                    "examples and at least one must stay for training", allow_zero=True)
        val, train = _stratified(train, val_size, seed, 0) if val_size else (
            _take(train, np.zeros(0, np.int64)), train)
    check_count("train_subset", train_subset, len(train.texts),
                f"{len(train.texts)} training examples are left after the validation split",
                allow_zero=False)
    if train_subset is not None and train_subset < len(train.texts):
        train, _ = _stratified(train, train_subset, seed, 1)
    test = raw.test
    check_count("test_subset", test_subset, len(test.texts),
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
