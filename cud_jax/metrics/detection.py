"""Out-of-distribution and misclassification detection from a scalar score per example.

Convention: a HIGHER score means "more likely in-distribution" (or "more likely correct"),
as for `max_softmax_prob` and `negative_entropy`. Scores of any shape are flattened.

The ranking metrics (`ood_auroc`, `ood_aupr`, `fpr_at_tpr`, `misclassification_auroc`) need
every score at once and are exact, so they run on the host in NumPy with float64 scores and
int64 counts (the pair count n_in * n_out passes int32, jnp's default, at ~46k x 46k).
They accept jax or numpy arrays but are NOT traceable: call them outside `jax.jit` (inside,
they raise a TypeError saying so). Ties are handled exactly, never broken by input order.
The score helpers `max_softmax_prob` and `negative_entropy` are jnp and work under `jit`.
"""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from cud_jax.losses import _validate


# ---------------------------------------------------------------------------------------
# Scores (jnp, jit-able): higher = more likely in-distribution.

def max_softmax_prob(probs) -> jax.Array:
    """max_k p_k per example (Hendrycks & Gimpel, 2017); higher = more confident."""
    return _max_prob(_validate.prob_array(probs, "probs"))


def negative_entropy(probs) -> jax.Array:
    """sum_k p_k log p_k = -H(p) per example, 0 log 0 = 0; higher = more confident.

    Negated so that, like `max_softmax_prob`, a higher score means in-distribution.
    """
    return _negative_entropy(_validate.prob_array(probs, "probs"))


# Jitted so an eager call compiles once per shape; inlined under an outer `jit`.
@jax.jit
def _max_prob(probs):
    return jnp.max(probs, axis=-1)


@jax.jit
def _negative_entropy(probs):
    return jnp.sum(xlogy(probs, probs), axis=-1)


# ---------------------------------------------------------------------------------------
# Host-side checks.

def _host_scores(x, name: str) -> np.ndarray:
    """Flattened float64 numpy copy of a score array, with the checks every metric needs."""
    if isinstance(x, jax.core.Tracer):
        raise TypeError(
            f"`{name}` is a traced value: the detection metrics run on the host in NumPy and "
            "cannot be called inside `jax.jit`/`vmap`; call them on concrete arrays."
        )
    x = np.asarray(x)
    # jnp.issubdtype also knows bfloat16, which numpy's issubdtype does not call floating.
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
            or x.dtype == bool):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    x = x.astype(np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"`{name}` is empty; these metrics need at least one score.")
    if np.isnan(x).any():
        raise ValueError(f"`{name}` contains NaN, which cannot be ranked; drop or fix it.")
    return x


def _host_correct(correct, num: int) -> np.ndarray:
    if isinstance(correct, jax.core.Tracer):
        raise TypeError("`correct` is a traced value: call this metric outside `jax.jit`.")
    correct = np.asarray(correct)
    flat = correct.reshape(-1)
    if flat.size != num:
        raise ValueError(
            f"`correct` has {flat.size} entries (shape {correct.shape}) but `confidence` has "
            f"{num}; they must match."
        )
    if correct.dtype != bool and not np.all((flat == 0) | (flat == 1)):
        raise ValueError("`correct` must be boolean or hold only 0 and 1.")
    return flat.astype(bool)


# ---------------------------------------------------------------------------------------
# Exact ranking metrics.

def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(s_pos > s_neg) + 1/2 P(s_pos == s_neg), counted exactly (Mann-Whitney U / (n m))."""
    negative = np.sort(negative)
    below = np.searchsorted(negative, positive, side="left")     # negatives strictly lower
    at_or_below = np.searchsorted(negative, positive, side="right")
    # 2U = sum(below + at_or_below) = 2 * #(pos > neg) + #(pos == neg); an exact integer.
    twice_u = int(np.sum(below, dtype=np.int64)) + int(np.sum(at_or_below, dtype=np.int64))
    # Python int / int is correctly rounded, so the only error is the final rounding.
    return twice_u / (2 * positive.size * negative.size)


def ood_auroc(scores_in, scores_out) -> float:
    """Area under the ROC curve for telling in-distribution from OOD examples by score.

    Equals P(score_in > score_out) + 1/2 P(score_in == score_out) over all (in, out) pairs:
    the Mann-Whitney U statistic divided by n_in * n_out, counted exactly, so a tie counts as
    1/2. Symmetric: taking OOD as the positive class with negated scores gives the same value.

    Args:
      scores_in: in-distribution scores, any shape (higher = more in-distribution).
      scores_out: OOD scores, any shape.

    Returns:
      Python float in [0, 1]; 0.5 is chance.
    """
    return _auroc(_host_scores(scores_in, "scores_in"), _host_scores(scores_out, "scores_out"))


def _average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """AP = sum_t (R_t - R_{t-1}) P_t over distinct thresholds t, ties entering together."""
    scores = np.concatenate([positive, negative])
    is_positive = np.concatenate([np.ones(positive.size, bool), np.zeros(negative.size, bool)])
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order]
    true_pos = np.cumsum(is_positive, dtype=np.int64)
    # Keep only the last example of each run of equal scores: predicting "positive" for
    # score >= t admits the whole tied run at once, so there is one operating point per
    # distinct score, and the result cannot depend on how the sort ordered the ties.
    last_of_run = np.append(scores[1:] != scores[:-1], True)
    true_pos = true_pos[last_of_run]
    predicted = (np.flatnonzero(last_of_run) + 1).astype(np.int64)
    precision = true_pos / predicted
    recall_gain = np.diff(true_pos, prepend=0) / positive.size
    return float(np.sum(recall_gain * precision))


def ood_aupr(scores_in, scores_out, *, positive: str = "in") -> float:
    """Area under the precision-recall curve, as average precision with ties grouped.

    AP = sum_t (R_t - R_{t-1}) * P_t over the distinct score values t in descending order,
    where an example is predicted positive when its score (negated for positive="out") is
    >= t, and R_t, P_t are recall and precision there. All examples tied at t enter at the
    same threshold, so ties are counted exactly and never broken by input order. This is the
    step-wise (non-interpolated) AP of scikit-learn's `average_precision_score`.

    Args:
      scores_in: in-distribution scores, any shape (higher = more in-distribution).
      scores_out: OOD scores, any shape.
      positive: "in" (default; "AUPR-In": in-distribution is the positive class, ranked by
        score) or "out" ("AUPR-Out": OOD is the positive class, ranked by negated score).

    Returns:
      Python float in (0, 1]; chance level is the positive fraction.
    """
    scores_in = _host_scores(scores_in, "scores_in")
    scores_out = _host_scores(scores_out, "scores_out")
    if positive == "in":
        return _average_precision(scores_in, scores_out)
    if positive == "out":
        return _average_precision(-scores_out, -scores_in)
    raise ValueError(f'`positive` must be "in" or "out", got {positive!r}.')


def _tpr_fraction(tpr) -> fractions.Fraction:
    """`tpr` as the exact decimal it prints as (0.95 -> 19/20), in (0, 1]."""
    try:
        value = fractions.Fraction(str(tpr))
    except (ValueError, TypeError):
        raise ValueError(f"`tpr` must be a number in (0, 1], got {tpr!r}.") from None
    if not 0 < value <= 1:
        raise ValueError(f"`tpr` must lie in (0, 1], got {tpr!r}.")
    return value


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
    """False-positive rate on OOD data at the threshold keeping a `tpr` fraction of in-data.

    Definition, exactly: with n = len(scores_in), let k = ceil(tpr * n) computed in exact
    rational arithmetic on the decimal `tpr` prints as (0.95 is 19/20, so n = 20 gives
    k = 19, not 20 from float error), and let t be the k-th largest in-distribution score.
    t is the highest threshold for which the rule "in-distribution iff score >= t" keeps at
    least k of the n in-distribution examples. The result is the fraction of OOD scores >= t;
    OOD scores tied with t count as false positives, and in-distribution ties at t may make
    the true TPR exceed `tpr`.

    Args:
      scores_in: in-distribution scores, any shape (higher = more in-distribution).
      scores_out: OOD scores, any shape.
      tpr: target true-positive rate in (0, 1].

    Returns:
      Python float in [0, 1]; lower is better.
    """
    fraction = _tpr_fraction(tpr)
    scores_in = _host_scores(scores_in, "scores_in")
    scores_out = _host_scores(scores_out, "scores_out")
    num_in = scores_in.size
    k = -((-fraction.numerator * num_in) // fraction.denominator)  # exact ceil
    threshold = np.sort(scores_in)[num_in - k]  # k-th largest
    return int(np.count_nonzero(scores_out >= threshold)) / scores_out.size


def fpr_at_95_tpr(scores_in, scores_out) -> float:
    """`fpr_at_tpr` at 95% TPR: the fraction of OOD scores >= the 95%-TPR threshold."""
    return fpr_at_tpr(scores_in, scores_out, 0.95)


def misclassification_auroc(confidence, correct) -> float:
    """AUROC for telling correct from wrong predictions by confidence (higher = correct).

    Correct examples are the positives: equals `ood_auroc(confidence[correct],
    confidence[~correct])`, with ties counted as 1/2.

    Args:
      confidence: scores, any shape, e.g. `max_softmax_prob(probs)`.
      correct: same number of entries, bool or 0/1 (e.g. `accuracy(probs, labels)`).

    Returns:
      Python float; NaN when every prediction is correct or every one is wrong (AUROC is
      undefined then, and that can legitimately happen on a small evaluation set).
    """
    confidence = _host_scores(confidence, "confidence")
    correct = _host_correct(correct, confidence.size)
    if correct.all() or not correct.any():
        return float("nan")
    return _auroc(confidence[correct], confidence[~correct])


def ood_metrics(scores_in, scores_out) -> dict[str, float]:
    """All OOD detection numbers at once: auroc, aupr_in, aupr_out, fpr_at_95_tpr."""
    scores_in = _host_scores(scores_in, "scores_in")
    scores_out = _host_scores(scores_out, "scores_out")
    return {
        "auroc": _auroc(scores_in, scores_out),
        "aupr_in": _average_precision(scores_in, scores_out),
        "aupr_out": _average_precision(-scores_out, -scores_in),
        "fpr_at_95_tpr": fpr_at_95_tpr(scores_in, scores_out),
    }
