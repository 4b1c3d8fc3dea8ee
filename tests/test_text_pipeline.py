"""The text path through the same trainer: tiny BERTs on a tiny CLINC150-format data set."""

import json

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from cud_jax import pipeline  # noqa: E402
from _config_snapshots import load  # noqa: E402

WORDS = ["play", "music", "song", "set", "alarm", "wake", "me", "up", "what", "is", "the",
         "weather", "rain", "today", "book", "flight", "to", "paris", "buy", "car"]
INTENTS = {"play_music": "play music song", "alarm": "set alarm wake me up",
           "weather": "what is the weather rain today", "flight": "book flight to paris"}


def _write_data(root):
    rng = np.random.default_rng(0)

    def examples(n):
        out = []
        for intent, words in INTENTS.items():
            vocab = words.split()
            for _ in range(n):
                out.append([" ".join(rng.choice(vocab, size=rng.integers(2, 6))), intent])
        return out

    oos = [[" ".join(rng.choice(["buy", "car", "the"], size=3)), "oos"] for _ in range(12)]
    raw = {"train": examples(24), "val": examples(6), "test": examples(8),
           "oos_train": oos[:4], "oos_val": oos[4:8], "oos_test": oos}
    (root / "clinc150").mkdir()
    (root / "clinc150" / "data_full.json").write_text(json.dumps(raw))
    (root / "vocab").mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (root / "vocab" / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return len(tokens)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    vocab = _write_data(root)
    config = load("clinc150", "method=cud,teacher_loss=dus")
    config.data.data_dir = str(root / "clinc150")
    config.data.tokenizer = str(root / "vocab")
    config.teacher.model = f"bert_small:L=2,H=32,A=2,I=64,V={vocab},P=64"
    config.student.model = f"bert_small:L=1,H=16,A=2,I=32,V={vocab},P=64"
    for stage in (config.teacher, config.student):
        stage.epochs, stage.batch_size, stage.lr = 20.0, 16, 3e-3
    config.eval.batch_size = 32
    config.log_every = 2
    # Utterances of 2-5 words are 4-7 WordPieces, padded to 8: three buckets of training
    # batches (and evaluation batches) instead of one.
    config.data.length_buckets = (4, 6)
    report = pipeline.run(config, str(root / "run"))
    return report


def test_text_run_reports_both_models_and_out_of_scope_detection(text_run):
    assert set(text_run["models"]) == {"teacher", "student"}
    assert text_run["dataset"]["num_classes"] == 4 and text_run["dataset"]["test_size"] == 32
    teacher = text_run["models"]["teacher"]["clean"]["accuracy"]
    assert teacher > 0.5, "the tiny teacher should learn four keyword intents"
    ood = text_run["ood"]["out_of_scope"]
    assert ood["num_ood"] == 12 and 0.0 <= ood["student"]["msp"]["auroc"] <= 1.0
    assert "shift" not in text_run
    buckets = text_run["dataset"]["train_buckets"]
    assert set(buckets) == {"4", "6", "8"} or set(buckets) == {4, 6, 8}
    assert sum(buckets.values()) == text_run["dataset"]["train_size"]


def test_vocabulary_mismatch_is_caught(tmp_path):
    vocab = _write_data(tmp_path)
    config = load("clinc150")
    config.data.data_dir = str(tmp_path / "clinc150")
    config.data.tokenizer = str(tmp_path / "vocab")
    config.teacher.model = f"bert_small:L=1,H=16,A=2,I=32,V={vocab - 5},P=64"
    config.stage = "teacher"
    with pytest.raises(ValueError, match="vocabulary"):
        pipeline.run(config, str(tmp_path / "run"))
