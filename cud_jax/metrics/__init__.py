"""Evaluation metrics: pure functions and streaming accumulators (DESIGN.md layer 2).

* Per example (jnp, jit/vmap-able, class axis last, any leading batch shape): `accuracy`,
  `nll`, `nll_from_logits`, `brier`, `agreement`, `teacher_student_kl`, and the scores `max_softmax_prob` and
  `negative_entropy` (higher = more likely in-distribution).
* Calibration over a batch (jnp, jit-able with `num_bins` static): `ece`, `mce`,
  `classwise_ece`, `adaptive_ece`, `reliability_diagram`.
* Detection (host NumPy, exact with ties, not jit-able): `ood_auroc`, `ood_aupr`,
  `fpr_at_95_tpr` / `fpr_at_tpr`, `misclassification_auroc`, `ood_metrics`.
* Paired comparison (host NumPy): `paired_bootstrap`, the difference of a metric between two
  methods on the same test examples with a bootstrap interval, per seed and pooled.
* Streaming: `CalibrationAccumulator` (jit-able pytree of sums, masks for padded batches)
  and `ScoreCollector` (host buffer for the metrics that need every score).
"""

from cud_jax.losses.checks import checked  # runtime value checks under jit, as for losses
from cud_jax.metrics.calibration import (
    ReliabilityDiagram,
    adaptive_ece,
    adaptive_ece_from_confidence,
    classwise_ece,
    ece,
    mce,
    reliability_diagram,
)
from cud_jax.metrics.classification import NLL_FLOOR, accuracy, brier, nll, nll_from_logits
from cud_jax.metrics.detection import (
    fpr_at_95_tpr,
    fpr_at_tpr,
    max_softmax_prob,
    misclassification_auroc,
    negative_entropy,
    ood_aupr,
    ood_auroc,
    ood_metrics,
)
from cud_jax.metrics.distillation import agreement, teacher_student_kl
from cud_jax.metrics.paired import PairedInterval, PairedResult, paired_bootstrap
from cud_jax.metrics.streaming import CalibrationAccumulator, CompensatedSum, ScoreCollector
