"""Report figures (PNG, matplotlib's Agg backend, so no display is needed).

* `reliability.png`: per model, the reliability diagram (accuracy per confidence bin against
  the diagonal) above the confidence histogram.
* `shift.png`: accuracy and ECE against corruption severity, one line per model.
* `ood_<set>.png`: histograms of the maximum softmax probability on in-distribution test
  inputs and on the OOD set, per model.
"""

from __future__ import annotations

import os

import numpy as np

from cud_jax import metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_figure(path: str, probs_by_model: dict, labels: np.ndarray,
                       num_bins: int = 15) -> None:
    """Reliability diagrams with confidence histograms, one column per model."""
    plt = _pyplot()
    names = list(probs_by_model)
    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for col, name in enumerate(names):
        probs = probs_by_model[name]
        diagram = metrics.reliability_diagram(probs, labels, num_bins=num_bins)
        edges = np.asarray(diagram.edges)
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        accuracy = np.nan_to_num(np.asarray(diagram.accuracy))
        confidence = np.asarray(diagram.confidence)
        top = axes[0, col]
        top.bar(centers, accuracy, width=width, edgecolor="black", label="accuracy")
        # Mean confidence per bin as markers: bars above them are under-confident bins,
        # bars below them over-confident ones.
        top.plot(centers, confidence, "o", color="tab:red", ms=4, label="mean confidence")
        top.plot([0, 1], [0, 1], "k--", lw=1)
        ece = float(metrics.ece(probs, labels, num_bins=num_bins))
        top.set_title(f"{name}: ECE {ece:.3f}")
        top.set_ylabel("accuracy")
        top.set_ylim(0, 1)
        top.legend(loc="upper left", fontsize=8)
        bottom = axes[1, col]
        bottom.bar(centers, np.asarray(diagram.count) / len(labels), width=width,
                   edgecolor="black")
        bottom.set_xlabel("confidence")
        bottom.set_ylabel("fraction")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shift_figure(path: str, by_severity: dict) -> None:
    """Accuracy and ECE against severity (0 = clean). `by_severity[model][sev] = metrics`."""
    plt = _pyplot()
    fig, (ax_acc, ax_ece) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, rows in by_severity.items():
        severities = sorted(rows, key=int)
        x = [int(s) for s in severities]
        ax_acc.plot(x, [rows[s]["accuracy"] for s in severities], "o-", label=name)
        ax_ece.plot(x, [rows[s]["ece"] for s in severities], "o-", label=name)
    for ax, title in ((ax_acc, "accuracy"), (ax_ece, "ECE")):
        ax.set_xlabel("corruption severity (0 = clean)")
        ax.set_title(f"{title} under shift (mean over corruptions)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ood_figure(path: str, set_name: str, scores: dict) -> None:
    """MSP histograms: `scores[model] = (in_scores, out_scores)`."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3), squeeze=False)
    bins = np.linspace(0, 1, 31)
    for ax, (name, (s_in, s_out)) in zip(axes[0], scores.items()):
        ax.hist(s_in, bins=bins, alpha=0.6, density=True, label="in-distribution test")
        ax.hist(s_out, bins=bins, alpha=0.6, density=True, label=f"OOD: {set_name}")
        ax.set_title(name)
        ax.set_xlabel("max softmax probability")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_path(workdir: str, name: str) -> str:
    os.makedirs(workdir, exist_ok=True)
    return os.path.join(workdir, name)
