"""CUD loss functions: pure JAX, per-example outputs, class axis last.

Teacher objectives, target corrections and student objectives of PAPER.md. Every function
accepts any leading batch shape, works under `jax.jit` and `jax.vmap`, computes in float32 or
wider, and returns one value (or one distribution) per example: the caller reduces.

Eager calls validate values (labels in range, probabilities on the simplex, temperature > 0);
under `jit` only shapes and dtypes are checked, unless the function is wrapped with
`checked`, which compiles the value checks in with `jax.experimental.checkify`.
"""
from cud_jax.losses.checks import checked

from cud_jax.losses.classification import (
    cross_entropy,
    entropy,
    focal_loss,
    label_smoothing_ce,
    probs_entropy,
)
from cud_jax.losses.distillation import (
    StudentTerms,
    cud_student_loss,
    dkd_loss,
    kd_loss,
    temper_probs,
)
from cud_jax.losses.dus import dus_gate, dus_teacher_loss
from cud_jax.losses.projections import kl_projection
from cud_jax.losses.simplex_box import project_simplex_box
from cud_jax.losses.targets import CORRECTIONS, CorrectedTargets, corrected_targets
from cud_jax.losses.wclip import WClipStats, top_class, wclip, wclip_delta, wclip_stats
from cud_jax.losses.temperature import fit_temperature, temperature_scale
