"""Evaluation beyond the clean test set: corrupted inputs (shift) and OOD detection.

Shift: the test images (or a seeded subset) under a CIFAR-C-style corruption suite generated
locally (`cud_jax.data.corruptions`), every corruption at every severity; metrics are averaged
over all corruption-severity pairs (cAcc, cNLL, cECE), and reported per severity and per
pair. OOD: test images of other data sets, scored by maximum softmax probability and by
negative entropy (higher = in-distribution); AUROC, AUPR (in and out) and FPR at 95% TPR.
A missing OOD set is skipped with one log line.
"""

from __future__ import annotations

import logging
from typing import Callable

import jax
import numpy as np

from cud_jax import data as data_lib
from cud_jax import metrics
from cud_jax.data.errors import DataNotFoundError
from cud_jax.parallel.placement import Placement

Predict = Callable[[np.ndarray], np.ndarray]  # stored inputs -> logits


def _probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.asarray(jax.nn.softmax(np.asarray(logits) / temperature, axis=-1))


def shift_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float,
                  num_bins: int) -> dict:
    """Accuracy, NLL and ECE on one corrupted set, raw and after temperature scaling (NLL
    from the logits by log-softmax, exact for confident mistakes)."""
    logits = np.asarray(logits)
    probs, scaled = _probs(logits), _probs(logits, temperature)
    return {
        "accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
        "nll": float(np.mean(metrics.nll_from_logits(logits, labels))),
        "ece": float(metrics.ece(probs, labels, num_bins=num_bins)),
        "nll_ts": float(np.mean(metrics.nll_from_logits(logits / temperature, labels))),
        "ece_ts": float(metrics.ece(scaled, labels, num_bins=num_bins)),
    }


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def evaluate_shift(predictors: dict[str, Predict], temperatures: dict[str, float],
                   images, labels: np.ndarray, *, corruptions, severities, seed: int,
                   cache_dir, num_bins: int, placement: Placement) -> dict:
    """Every model on every corruption and severity of `images`.

    Returns `{model: {"mean": ..., "by_severity": {sev: ...}, "table": {name: {sev: ...}}}}`;
    severity "0" in `by_severity` is the clean subset, for the plots. `images` are held as
    `placement` keeps evaluation inputs, and corrupted by its `corruption_suite`.
    """
    results = {name: {"table": {}} for name in predictors}
    clean = {name: shift_metrics(predict(images), labels, temperatures[name], num_bins)
             for name, predict in predictors.items()}
    suite = placement.corruption_suite(images, corruptions, severities, seed=seed,
                                       cache_dir=cache_dir)
    for (corruption, severity), corrupted in suite:
        for name, predict in predictors.items():
            results[name]["table"].setdefault(corruption, {})[str(severity)] = shift_metrics(
                predict(corrupted), labels, temperatures[name], num_bins)
        logging.info("shift: %s severity %d done", corruption, severity)
    for name, entry in results.items():
        cells = [cell for per_sev in entry["table"].values() for cell in per_sev.values()]
        entry["mean"] = _mean(cells)
        entry["by_severity"] = {"0": clean[name]}
        for severity in severities:
            entry["by_severity"][str(severity)] = _mean(
                [per_sev[str(severity)] for per_sev in entry["table"].values()])
    return results


def load_ood_sets(spec: str, *, task_info: dict, data_cfg, data_dir, subset, seed: int
                  ) -> dict[str, np.ndarray]:
    """Images of each OOD set named in `spec` (comma separated); missing ones are skipped.

    Names:
      `synthetic_ood:near` / `synthetic_ood:far`: held-out classes of the synthetic source,
        built with the run's own synthetic options;
      `noise:gaussian` / `noise:uniform`: random images (the classic far-OOD sanity check);
      `images:PATH`: every image file in a folder, .zip or .tar(.gz) at PATH (e.g. Omniglot
        characters), resized and converted to the model's input shape;
      any `cud_jax.data.load_vision` source (`cifar10`, `cifar100`, `tfds:svhn_cropped`, ...):
        its test split, read from `data_dir`.
    """
    sets = {}
    shape = tuple(task_info.get("image_shape", ()))
    for name in [s.strip() for s in (spec or "").split(",") if s.strip()]:
        try:
            if name.startswith("noise:"):
                images = _noise_images(name.split(":", 1)[1], subset or 1000, shape, seed)
            elif name.startswith("images:"):
                images = _image_files(name.split(":", 1)[1], shape, subset, seed)
            elif name.startswith("synthetic_ood:"):
                kwargs = dict(data_cfg.source_kwargs)
                kwargs.pop("cache_dir", None)
                images = data_lib.load_synthetic_ood(name.split(":", 1)[1], **kwargs).inputs
            else:
                images = data_lib.load_vision(name, data_dir=data_dir, val_size=0, seed=seed,
                                              test_subset=subset).test.inputs
        except (DataNotFoundError, FileNotFoundError, ImportError) as err:
            first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"OOD set {name} skipped: {first_line}")
            continue
        if list(images.shape[1:]) != list(task_info["image_shape"]):
            print(f"OOD set {name} skipped: its images are {tuple(images.shape[1:])}, the model "
                  f"expects {tuple(task_info['image_shape'])}")
            continue
        if subset and len(images) > subset:
            images = images[np.random.default_rng(seed).permutation(len(images))[:subset]]
        sets[name] = images
    return sets


def _noise_images(kind: str, count: int, shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 256, (count, *shape), dtype=np.uint8)
    if kind == "gaussian":
        return np.clip(rng.normal(128, 64, (count, *shape)), 0, 255).astype(np.uint8)
    raise ValueError(f"Unknown noise OOD set {kind!r}; valid values: gaussian, uniform.")


def _image_files(path: str, shape, subset, seed: int) -> np.ndarray:
    blobs = data_lib.read_image_blobs(path)
    if subset and len(blobs) > subset:
        keep = np.sort(np.random.default_rng(seed).permutation(len(blobs))[:subset])
        blobs = [blobs[i] for i in keep]
    names, data = zip(*blobs) if blobs else ((), ())
    if not data:
        raise DataNotFoundError(f"no image files in {path}")
    return data_lib.load_image_files(list(data), channels=shape[-1], image_size=shape[:2],
                                     names=list(names))


def evaluate_ood(predictors: dict[str, Predict], test_logits: dict[str, np.ndarray],
                 ood_sets: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """OOD detection metrics per set and model, and the MSP scores for the histograms."""
    results, msp_scores = {}, {}
    for set_name, images in ood_sets.items():
        results[set_name] = {"num_ood": int(len(images))}
        msp_scores[set_name] = {}
        for name, predict in predictors.items():
            p_in, p_out = _probs(test_logits[name]), _probs(predict(images))
            msp_in, msp_out = p_in.max(-1), p_out.max(-1)
            results[set_name][name] = {
                "msp": metrics.ood_metrics(msp_in, msp_out),
                "entropy": metrics.ood_metrics(np.asarray(metrics.negative_entropy(p_in)),
                                               np.asarray(metrics.negative_entropy(p_out))),
            }
            msp_scores[set_name][name] = (msp_in, msp_out)
    return results, msp_scores
