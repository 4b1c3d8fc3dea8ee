"""A distilled text model -> a Hugging Face `BertForSequenceClassification` folder.

    python -m cud_jax.convert export-hf --workdir=runs/clinc150 --stage=student --out=DIR

writes DIR/config.json, DIR/model.safetensors and the tokenizer files of the run's
`data.tokenizer` (vocab.txt, and tokenizer.json / tokenizer_config.json /
special_tokens_map.json where the tokenizer folder has them), so that

    BertForSequenceClassification.from_pretrained(DIR)

gives the logits of our `BertClassifier` (pass `attention_mask = ids != 0`, which our model
derives from the ids itself). The tensor names come from the one HF name table of
`cud_jax.models.bert` (`hf_classifier_map`), read in the other direction.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from cud_jax import models
from cud_jax.models import bert, bert_weights, hf_loading
from cud_jax.train import checkpoints
from cud_jax.train.state import split_model

_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json")


def hf_config(model: bert.BertClassifier, label_names: Optional[list[str]] = None) -> dict:
    """config.json of a `BertForSequenceClassification` with this model's sizes and labels."""
    if model.encoder.pooler is None:
        raise ValueError(
            "this model has no pooler, but BertForSequenceClassification always applies one "
            "(dense + tanh on [CLS]), so its logits would differ; export a model trained with "
            "a pooler (bert_small specs have one unless pooler=0; `bert:` specs keep the "
            "checkpoint's).")
    labels = label_names or [f"LABEL_{i}" for i in range(model.num_classes)]
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} label names for {model.num_classes} classes.")
    out = model.config.to_hf()
    out.update(architectures=["BertForSequenceClassification"], num_labels=model.num_classes,
               id2label={str(i): name for i, name in enumerate(labels)},
               label2id={name: i for i, name in enumerate(labels)},
               problem_type="single_label_classification", torch_dtype="float32")
    return out


def write_hf_folder(model: bert.BertClassifier, out: str | os.PathLike, *,
                    tokenizer: str | os.PathLike | None = None,
                    label_names: Optional[list[str]] = None) -> pathlib.Path:
    """Writes `model` as a Hugging Face checkpoint folder (see the module docstring).

    Args:
      model: a `BertClassifier` (with a pooler).
      out: a new or empty folder.
      tokenizer: the folder (or vocab.txt / tokenizer.json file) of the vocabulary the model
        reads; its tokenizer files are copied. None writes weights and config only.
      label_names: class names for `id2label`; default `LABEL_i`.

    Raises:
      FileExistsError: `out` is not empty.
      ValueError: the model has no pooler.
    """
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

    out = pathlib.Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pass a new --out folder.")
    config = hf_config(model, label_names)
    sources = []
    if tokenizer is not None:
        path = pathlib.Path(hf_loading.expand_package_path(tokenizer)).expanduser()
        if not path.exists():  # a Hub id, as `data.tokenizer` may be
            path = hf_loading.resolve_checkpoint(tokenizer)
        folder = path if path.is_dir() else path.parent
        sources = [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()]
        if not any(s.name == "vocab.txt" for s in sources):
            raise FileNotFoundError(f"no vocab.txt beside the tokenizer {str(tokenizer)!r}; "
                                    "pass the checkpoint folder the model's vocabulary came "
                                    "from.")
    out.mkdir(parents=True, exist_ok=True)
    save_file(bert_weights.hf_state_dict(model), str(out / hf_loading.SAFETENSORS),
              metadata={"format": "pt"})
    with open(out / hf_loading.CONFIG, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    for source in sources:
        shutil.copyfile(source, out / source.name)
    return out


def _read_run_config(workdir: str) -> dict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in {workdir}; pass the --workdir of a "
                                "training run.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _num_classes(directory: str) -> int:
    """The classifier width saved in the newest checkpoint of `directory` (no data needed)."""
    step, saved = checkpoints.latest_metadata(directory)
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}; train the stage first.")
    return int(saved["params"]["classifier"]["kernel"]["value"].shape[-1])


def load_run_model(workdir: str, stage: str = "student") -> tuple[bert.BertClassifier, dict]:
    """The trained text model of a run's stage (eval mode) and the run's config dict.

    Reads WORKDIR/config.json for the model spec and WORKDIR/checkpoints/<stage> (or the
    stage's `checkpoint` field) for the weights; the data set is not needed.
    """
    if stage not in ("teacher", "student"):
        raise ValueError(f"--stage must be teacher or student, got {stage!r}.")
    config = _read_run_config(workdir)
    if config.get("data", {}).get("kind", "vision") != "text":
        raise ValueError(f"{workdir} is a {config.get('data', {}).get('kind')} run; export-hf "
                         "exports text (BERT) models.")
    cfg = config[stage]
    directory = cfg.get("checkpoint") or os.path.join(workdir, "checkpoints", stage)
    num_classes = _num_classes(directory)
    # Abstract: a `bert:` spec's pretrained weights and a random init would be overwritten.
    model = nnx.eval_shape(lambda: models.create_text_model(cfg["model"],
                                                            num_classes=num_classes,
                                                            rngs=nnx.Rngs(0)))
    model_def, params, model_state = split_model(model)
    template = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params,
                "model_state": model_state}
    template = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
    restored = checkpoints.restore_fields(directory, template)
    return nnx.merge(model_def.eval_graph, restored["params"], restored["model_state"]), config


def export_hf(workdir: str, out: str, *, stage: str = "student",
              label_names: Optional[list[str]] = None) -> pathlib.Path:
    """Writes a run's trained text model as a Hugging Face folder; returns the folder."""
    model, config = load_run_model(workdir, stage)
    return write_hf_folder(model, out, tokenizer=config["data"].get("tokenizer"),
                           label_names=label_names)
