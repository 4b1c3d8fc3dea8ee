"""The `hf:` and `tfds:` text sources against stand-ins for `datasets` and
`tensorflow_datasets` (neither the network nor TensorFlow is available here).

The stand-ins implement only the calls the loaders make, shaped as those libraries document
them: `datasets.load_dataset(...)` returns a mapping of splits whose `.features` maps a
column to a feature (a `ClassLabel` has `.names`) and whose `split[column]` is a list;
`tfds.builder(name, data_dir=...)` has `download_and_prepare()`, `info.features[...]` and
`as_dataset(split=...)`, read through `tfds.as_numpy`. What the tests check is our side:
presets (which configuration, fields and splits each paper data set uses), label mapping,
the validation carve, and the padded ids that reach the trainer.
"""

import sys
import types

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from cud_jax import data  # noqa: E402
from cud_jax.data.errors import DataNotFoundError  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "time", "wake",
         "me", "up", "play", "a", "song", "who", "where", "city"]


@pytest.fixture
def vocab(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return str(tmp_path / "vocab.txt")


class _ClassLabel:
    def __init__(self, names):
        self.names = list(names)


class _HFSplit:
    def __init__(self, columns: dict, features: dict):
        self._columns, self.features = columns, features

    def __getitem__(self, column):
        return list(self._columns[column])


def _fake_datasets(monkeypatch, splits: dict, features: dict, calls: list):
    module = types.ModuleType("datasets")

    def load_dataset(*args, cache_dir=None):
        calls.append((args, cache_dir))
        return {name: _HFSplit(columns, features) for name, columns in splits.items()}

    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)


def _rows(n, texts, labels):
    return [texts[i % len(texts)] for i in range(n)], [labels[i % len(labels)] for i in range(n)]


def test_hf_massive_uses_its_config_fields_and_validation_split(monkeypatch, vocab):
    names = ["datetime_query", "alarm_set", "play_music"]
    texts = ["what is the time", "wake me up", "play a song"]

    def split(n):
        utt, intent = _rows(n, texts, [0, 1, 2])
        return {"utt": utt, "intent": intent}

    calls = []
    _fake_datasets(monkeypatch, {"train": split(30), "validation": split(6), "test": split(9)},
                   {"utt": object(), "intent": _ClassLabel(names)}, calls)
    ds = data.load_text("hf:AmazonScience/massive", tokenizer=vocab, data_dir="/cache")
    assert calls == [(("AmazonScience/massive", "en-US"), "/cache")]
    assert ds.num_classes == 3 and ds.class_names == tuple(names)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 6, 9)  # official validation
    # "what is the time" -> [CLS] what is the time [SEP], padded to a multiple of 8.
    np.testing.assert_array_equal(ds.train.inputs[0], [2, 5, 6, 7, 8, 3, 0, 0])
    np.testing.assert_array_equal(ds.test.labels[:3], [0, 1, 2])


def test_hf_trec_maps_coarse_labels_and_carves_a_validation_split(monkeypatch, vocab):
    texts = ["who is the city", "where is the city", "what is the time"]
    calls = []
    _fake_datasets(monkeypatch, {
        "train": dict(zip(("text", "coarse_label"), _rows(40, texts, [3, 4, 0]))),
        "test": dict(zip(("text", "coarse_label"), _rows(12, texts, [3, 4, 0])))},
        {"text": object(), "coarse_label": _ClassLabel(["ABBR", "ENTY", "DESC", "HUM", "LOC",
                                                         "NUM"])}, calls)
    ds = data.load_text("hf:trec", tokenizer=vocab, val_size=8, seed=0)
    assert calls[0][0] == ("trec",)
    assert ds.num_classes == 6 and ds.class_names[3] == "HUM"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (32, 8, 12)
    assert set(ds.val.labels.tolist()) <= {0, 3, 4}


def test_hf_without_class_names_numbers_the_label_values(monkeypatch, vocab):
    texts = ["play a song", "wake me up"]
    _fake_datasets(monkeypatch, {
        "train": {"text": texts * 10, "label": ["music", "alarm"] * 10},
        "test": {"text": texts, "label": ["music", "alarm"]}},
        {"text": object(), "label": object()}, [])
    ds = data.load_text("hf:some/intents", tokenizer=vocab, val_size=4)
    assert ds.class_names == ("alarm", "music")  # sorted values
    np.testing.assert_array_equal(ds.test.labels, [1, 0])


def test_hf_errors_name_the_fix(monkeypatch, vocab):
    _fake_datasets(monkeypatch, {"train": {"sentence": ["a"], "label": [0]},
                                 "test": {"sentence": ["a"], "label": [0]}},
                   {"sentence": object(), "label": _ClassLabel(["x"])}, [])
    with pytest.raises(ValueError, match="text_field="):
        data.load_text("hf:ag_news", tokenizer=vocab)
    module = types.ModuleType("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    module.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(DataNotFoundError, match="network or a filled cache"):
        data.load_text("hf:ag_news", tokenizer=vocab)


def _fake_tfds(monkeypatch, splits: dict, label_names, prepared: list):
    module = types.ModuleType("tensorflow_datasets")

    class Builder:
        def __init__(self, name, data_dir=None):
            self.name, self.data_dir = name, data_dir
            self.info = types.SimpleNamespace(
                features={"label-coarse": _ClassLabel(label_names), "description": object()})

        def download_and_prepare(self):
            prepared.append((self.name, self.data_dir))

        def as_dataset(self, split):
            return splits[split]

    module.builder = Builder
    module.as_numpy = lambda rows: iter(rows)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_tfds_trec_reads_bytes_and_coarse_labels(monkeypatch, vocab):
    def rows(n):
        texts, labels = _rows(n, [b"who is the city", b"what is the time"], [3, 0])
        return [{"text": t, "label-coarse": np.int64(y)} for t, y in zip(texts, labels)]

    prepared = []
    _fake_tfds(monkeypatch, {"train": rows(20), "test": rows(6)},
               ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"], prepared)
    ds = data.load_text("tfds:trec", tokenizer=vocab, data_dir="/tfds", val_size=4)
    assert prepared == [("trec", "/tfds")]
    assert ds.num_classes == 6 and (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 6)
    np.testing.assert_array_equal(ds.test.labels, [3, 0] * 3)
    assert data.load_tokenizer(vocab).decode(ds.test.inputs[0]) == "who is the city"
