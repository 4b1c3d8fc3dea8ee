"""Checkpoints in and out of cud_jax.

Import a published PyTorch CIFAR teacher (RepDistiller / mdistiller `ckpt_epoch_240.pth`)
as a checkpoint for `--config.teacher.checkpoint=` (PyTorch is not needed; the file is read
with a restricted unpickler that refuses anything but tensors and containers):

    python -m cud_jax.convert from-torch ckpt_epoch_240.pth --out=teachers/resnet32x4 \
        [--arch=resnet32x4]
    python -m cud_jax.main --config=configs/cifar100.py:pair=resnet32x4-resnet8x4 \
        --workdir=runs/r32x4 --config.teacher.checkpoint=teachers/resnet32x4

Export a distilled text model as a Hugging Face BERT folder (config.json,
model.safetensors, vocab.txt) for `BertForSequenceClassification.from_pretrained`:

    python -m cud_jax.convert export-hf --workdir=runs/clinc150 --stage=student --out=DIR

User errors print one line and exit with status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
from typing import Any, Optional, Sequence


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_of(checkpoint: Any, source: str) -> dict:
    """The model state dict of a loaded `.pth`: its "model" entry (RepDistiller and
    mdistiller save `{"model": state_dict, "epoch": ..., ...}`) or the dict itself."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        return checkpoint["model"]
    if isinstance(checkpoint, dict) and checkpoint and all(
            isinstance(k, str) and hasattr(v, "shape") for k, v in checkpoint.items()):
        return checkpoint
    keys = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else []
    raise ValueError(f"{source} holds neither a state dict nor one under 'model' "
                     f"(top-level keys: {keys or type(checkpoint).__name__}).")


def import_torch(path: str, out: str, *, arch: Optional[str] = None) -> dict:
    """Converts a PyTorch CIFAR checkpoint into a weights-only checkpoint at `out`.

    Returns what was written to `out/imported.json` (source, sha256, arch, num_classes,
    and the checkpoint's epoch when it records one).
    """
    from cud_jax.interop import cifar, torch_pickle  # pylint: disable=import-outside-toplevel
    from cud_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
    from cud_jax.train.state import split_model  # pylint: disable=import-outside-toplevel

    if os.path.exists(out) and os.listdir(out):  # before the (slow) conversion
        raise FileExistsError(f"{out} is not empty; pass a new --out directory.")
    checkpoint = torch_pickle.load(path)
    state = state_dict_of(checkpoint, path)
    model, arch = cifar.model_from_state_dict(state, arch)
    _, params, model_state = split_model(model)
    info = {"source": os.path.abspath(path), "sha256": _sha256(path), "arch": arch,
            "num_classes": cifar.num_classes_of(arch, state)}
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("epoch"), int):
        info["epoch"] = checkpoint["epoch"]
    checkpoints.save_weights(out, params, model_state, info)
    return info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cud_jax.convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("from-torch", help="PyTorch CIFAR .pth -> teacher checkpoint")
    imp.add_argument("pth", help="ckpt_epoch_240.pth or a bare state dict saved by torch.save")
    imp.add_argument("--out", required=True, help="new directory for the checkpoint")
    imp.add_argument("--arch", default=None,
                     help="zoo model name (cud_jax.models.list_models()); default: detect")
    exp = sub.add_parser("export-hf", help="text run -> Hugging Face BERT folder")
    exp.add_argument("--workdir", required=True, help="the training run's --workdir")
    exp.add_argument("--stage", default="student", choices=("student", "teacher"))
    exp.add_argument("--out", required=True, help="new folder for the HF checkpoint")
    exp.add_argument("--labels", default=None,
                     help="comma-separated class names for id2label (default LABEL_i)")
    for p in (imp, exp):
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "from-torch":
            info = import_torch(args.pth, args.out, arch=args.arch)
            print(f"Wrote {info['arch']} ({info['num_classes']} classes) to {args.out}; use "
                  f"--config.teacher.model={info['arch']} "
                  f"--config.teacher.checkpoint={args.out}")
        else:
            from cud_jax.interop import hf_export  # pylint: disable=import-outside-toplevel

            labels = args.labels.split(",") if args.labels else None
            out = hf_export.export_hf(args.workdir, args.out, stage=args.stage,
                                      label_names=labels)
            print(f"Wrote a Hugging Face BertForSequenceClassification folder to {out}")
    except (ValueError, OSError, pickle.UnpicklingError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
