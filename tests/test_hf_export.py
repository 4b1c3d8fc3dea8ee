"""Distilled text students out: `python -m cud_jax.convert export-hf` writes a Hugging Face
BERT folder that `transformers.BertForSequenceClassification` loads with our logits (1e-4),
and that our own loader reads back. Skips without transformers / torch / safetensors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cud_jax import convert, models
from cud_jax.interop import hf_export
from cud_jax.train import checkpoints
from cud_jax.train.state import create_train_state, split_model

pytest.importorskip("safetensors")

SPEC = "bert_small:L=2,H=32,A=4,I=64,V=100,P=64"
NUM_CLASSES = 5


def _random_student(seed=0, spec=SPEC):
    """A small student with EVERY parameter random (LayerNorms and biases too), eval mode."""
    model = models.create_text_model(spec, num_classes=NUM_CLASSES, rngs=nnx.Rngs(seed))
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    nnx.update(model, jax.tree.unflatten(treedef, [
        0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]))
    model.eval()
    return model


def _ids():
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 100, size=(3, 12)).astype(np.int32)
    ids[:, 0] = 2  # [CLS]
    ids[1, 7:] = 0  # padding
    ids[2, 4:] = 0
    return ids


def _vocab(folder):
    folder.mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(95)]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return folder


def _student_run(tmp_path, model):
    """A workdir as the trainer leaves it for a text run: config.json and the student's
    Orbax TrainState (optimiser state included) under checkpoints/student."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {"data": {"kind": "text", "tokenizer": str(_vocab(tmp_path / "tok"))},
              "student": {"model": SPEC, "checkpoint": None}}
    (workdir / "config.json").write_text(json.dumps(config))
    _, params, model_state = split_model(model)
    state = create_train_state(params, model_state, optax.adamw(1e-3))
    manager = checkpoints.open_manager(str(workdir / "checkpoints" / "student"))
    checkpoints.save(manager, 12, state)
    manager.wait_until_finished()
    manager.close()
    model.eval()
    return str(workdir)


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = _random_student()
    ids = _ids()
    ours = np.asarray(model(jnp.asarray(ids)))
    out = tmp_path / "hf"
    assert convert.main(["export-hf", f"--workdir={_student_run(tmp_path, model)}",
                         "--stage=student", f"--out={out}", "--labels=a,b,c,d,e"]) == 0
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in out.iterdir()}
    hf = transformers.BertForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids).long(),
                    attention_mask=torch.from_numpy((ids != 0).astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
    assert hf.config.id2label[3] == "d"
    tokenizer = transformers.BertTokenizer.from_pretrained(str(out))
    assert tokenizer.convert_tokens_to_ids("tok0") == 5


def test_export_round_trips_through_our_loader(tmp_path):
    model = _random_student(seed=3)
    ids = jnp.asarray(_ids())
    out = hf_export.write_hf_folder(model, tmp_path / "hf", tokenizer=_vocab(tmp_path / "tok"))
    back = models.load_bert_classifier(str(out), num_classes=NUM_CLASSES, head=True,
                                       rngs=nnx.Rngs(9))
    back.eval()
    np.testing.assert_allclose(np.asarray(back(ids)), np.asarray(model(ids)), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="classifier.weight"):
        models.load_bert_classifier(str(out), num_classes=NUM_CLASSES + 1, head=True,
                                    rngs=nnx.Rngs(9))


def test_export_refuses_what_transformers_would_load_differently(tmp_path):
    no_pooler = _random_student(spec=SPEC + ",pooler=0")
    with pytest.raises(ValueError, match="no pooler"):
        hf_export.write_hf_folder(no_pooler, tmp_path / "a")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        hf_export.write_hf_folder(_random_student(), taken)
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"data": {"kind": "vision"},
                                                    "student": {"model": "resnet8"}}))
    with pytest.raises(ValueError, match="exports text"):
        hf_export.load_run_model(str(vision))
