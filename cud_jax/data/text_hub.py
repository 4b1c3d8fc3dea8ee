"""Text sources from Hugging Face `datasets` (`hf:<dataset>`) and TFDS (`tfds:<name>`):
the network or prepared caches; tested with stand-ins."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cud_jax.data._sources import source_names
from cud_jax.data.containers import RawText, TextSplit
from cud_jax.data.errors import DataNotFoundError



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
                          f"{list(source_names('text'))}.") from None
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
