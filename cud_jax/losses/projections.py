"""The KL (I-)projection of a teacher distribution onto mass constraints (PAPER.md 3).

`kl_projection`: argmin_q KL(q || p) over the simplex subject to "at least alpha on the
label neighbourhood N" and "at most eps on the wrong classes W". Closed form, O(K), no
iterations; pure `jnp`, jit- and vmap-friendly, class axis last, any leading batch shape.
Its Euclidean counterpart is `cud_jax.losses.simplex_box.project_simplex_box`.

With N = {y}, W = {k*}, alpha = p_y + delta and eps = p_k* - delta (delta from
`wclip_delta`), both return W-Clip's targets: W-Clip is the exact projection onto that set.

Both are target corrections of frozen teacher quantities: their inputs pass through
`jax.lax.stop_gradient`, so differentiating a loss that contains them gives zero gradient with
respect to those inputs (the solvers' loops and fused reductions define no derivative).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cud_jax.losses import _validate
from cud_jax.losses._projection_common import _budget, _group_mask, _row_reduce
from cud_jax.losses.simplex_box import project_simplex_box  # noqa: F401  (one import path)



def kl_projection(probs, *, n_mask, alpha, w_mask, eps) -> jax.Array:
    """Exact I-projection of `probs` onto {q : sum_N q >= alpha, sum_W q <= eps}.

        q* = argmin_{q in simplex} KL(q || p)
             s.t. sum_{k in N} q_k >= alpha,   sum_{k in W} q_k <= eps

    KL(q || p) splits into a KL between the three group masses (N, W, rest R) plus, per group,
    a KL between within-group proportions; the latter is zero when q keeps p's proportions,
    so the optimum does. The group masses solve a 3-variable problem whose KKT conditions
    give Q_g = clip(t * P_g, bounds_g) for one scalar t: a piecewise-linear equation with
    two breakpoints, solved in closed form. Cost O(K) per row, no iterations.

    Edge cases (all exact, no Python branching on values):
      * Rows of `probs` are normalised first (the objective on the simplex only depends on
        p / sum p); an all-zero row is treated as the uniform distribution.
      * Empty groups: an empty N makes the alpha constraint vacuous (alpha is treated as 0);
        an empty W makes the eps constraint vacuous; an empty R is fine.
      * Budgets are clipped into the feasible range: alpha to [0, 1], eps to [0, 1]; and if
        every class is in W, eps is raised to 1 (all mass has to sit on W). After clipping
        the set is never empty (Q_N >= alpha and Q_W <= eps can always hold together).
      * Zero prior mass: a group with P_g = 0 that must receive mass (N with alpha > 0, or
        N and R when p lives entirely on W and eps + alpha < 1) makes every feasible KL
        infinite. We return the limit of the projections of (1 - s) p + s * uniform as
        s -> 0: the group gets the least mass the constraints force on it, spread uniformly
        over its classes; when two zero-mass groups must share mass, it is split as uniform
        over their classes (water-filling above N's floor alpha). Classes with p_k = 0 in a
        group of positive mass stay at exactly 0.

    Args:
      probs: `[..., K]` nonnegative probabilities (at temperature 1).
      n_mask: `[..., K]` boolean mask (broadcastable to `probs`) of the label neighbourhood N,
        or None for an empty N.
      alpha: scalar or `[...]` lower bound on the mass of N.
      w_mask: `[..., K]` boolean mask of the wrong classes W, disjoint from N, or None.
      eps: scalar or `[...]` upper bound on the mass of W.

    Returns:
      `[..., K]` projected probabilities q* (each row sums to 1).

    Raises:
      ValueError: on shape mismatches, or if N and W overlap (checked when the masks are
        concrete; under `jit` an overlap is not detected and the result is meaningless).
      TypeError: if a mask is not boolean.
    """
    probs = _validate.class_array(probs, "probs")
    n_mask = _group_mask(n_mask, probs, "n_mask")
    w_mask = _group_mask(w_mask, probs, "w_mask")
    if _validate._is_concrete(n_mask) and _validate._is_concrete(w_mask):
        overlap = np.asarray(n_mask & w_mask)
        if overlap.any():
            rows = np.argwhere(overlap)[:3].tolist()
            raise ValueError(
                "`n_mask` and `w_mask` must be disjoint (a class cannot be both in the label "
                f"neighbourhood N and in the wrong set W); they overlap at (index..., class) "
                f"{rows}. Drop the label from W, e.g. w_mask & ~n_mask."
            )
    alpha = _budget(alpha, probs, "alpha")
    eps = _budget(eps, probs, "eps")
    probs, alpha, eps = lax.stop_gradient((probs, alpha, eps))
    return _kl_projection(probs, n_mask, w_mask, alpha, eps)


# Jitted so that eager calls compile once per shape instead of dispatching op by op.
@jax.jit
def _kl_projection(probs, n_mask, w_mask, alpha, eps):
    dtype = probs.dtype
    r_mask = ~(n_mask | w_mask)

    # Group masses and sizes in one pass (class counts are exact in float up to 2**24).
    s_n, s_w, s_r, c_n, c_w = _row_reduce(
        (jnp.where(n_mask, probs, 0), jnp.where(w_mask, probs, 0), jnp.where(r_mask, probs, 0),
         n_mask.astype(dtype), w_mask.astype(dtype)), (jnp.add,) * 5, (0,) * 5)
    num_classes = probs.shape[-1]
    c_r = num_classes - c_n - c_w
    total = s_n + s_w + s_r
    # Normalised group masses; an all-zero row counts as uniform (the s -> 0 limit above).
    has_mass = total > 0
    safe_total = jnp.where(has_mass, total, 1.0)
    p_n = jnp.where(has_mass, s_n / safe_total, c_n / num_classes)
    p_w = jnp.where(has_mass, s_w / safe_total, c_w / num_classes)
    p_r = jnp.where(has_mass, s_r / safe_total, c_r / num_classes)

    # Feasible budgets (see the docstring).
    a = jnp.where(c_n > 0, jnp.clip(alpha, 0.0, 1.0), 0.0)
    e = jnp.where(c_n + c_r > 0, jnp.clip(eps, 0.0, 1.0), 1.0)

    q_n, q_w, q_r = _kl_group_masses(p_n, p_w, p_r, a, e)

    # p lives entirely on W and W may keep at most e < 1 - a: the rest must go to the
    # zero-mass groups N and R. Water-fill c per class above N's floor a:
    # max(a, c * c_n) + c * c_r = 1 - e.
    stuck = (p_n <= 0) & (p_r <= 0) & (a + e < 1)
    c_fill = jnp.minimum(
        jnp.where(c_r > 0, (1 - e - a) / jnp.where(c_r > 0, c_r, 1.0), jnp.inf),
        (1 - e) / jnp.maximum(c_n + c_r, 1.0),
    )
    q_n = jnp.where(stuck, jnp.maximum(a, c_fill * c_n), q_n)
    q_r = jnp.where(stuck, c_fill * c_r, q_r)
    q_w = jnp.where(stuck, e, q_w)

    # Back to classes: keep p's proportions inside a group with mass, uniform inside a group
    # without (the group's raw sum is 0 then, so every p_k in it is 0).
    def per_class(mass, raw_sum, count):
        scale = jnp.where(raw_sum > 0, mass / jnp.where(raw_sum > 0, raw_sum, 1.0), 0.0)
        uniform = jnp.where(raw_sum > 0, 0.0, mass / jnp.maximum(count, 1.0))
        return scale[..., None], uniform[..., None]

    scale_n, unif_n = per_class(q_n, s_n, c_n)
    scale_w, unif_w = per_class(q_w, s_w, c_w)
    scale_r, unif_r = per_class(q_r, s_r, c_r)
    scale = jnp.where(n_mask, scale_n, jnp.where(w_mask, scale_w, scale_r))
    uniform = jnp.where(n_mask, unif_n, jnp.where(w_mask, unif_w, unif_r))
    return probs * scale + uniform


def _kl_group_masses(p_n, p_w, p_r, a, e):
    """Group masses of the I-projection of (p_n, p_w, p_r) onto Q_N >= a, Q_W <= e.

    KKT: Q_N = max(a, t p_n), Q_W = min(e, t p_w), Q_R = t p_r with f(t) = sum Q = 1. f is
    nondecreasing and piecewise linear with breakpoints t1 = a / p_n (N leaves its floor)
    and t2 = e / p_w (W reaches its cap). Counting the breakpoints with f < 1 gives the
    segment that holds the root, and on each segment the masses have a closed form. A group
    with zero mass has an infinite breakpoint (N then stays at a, W at 0).
    """
    inf = jnp.asarray(jnp.inf, p_n.dtype)
    t1 = jnp.where(p_n > 0, a / jnp.where(p_n > 0, p_n, 1.0), inf)
    t2 = jnp.where(p_w > 0, e / jnp.where(p_w > 0, p_w, 1.0), inf)
    b1, b2 = jnp.minimum(t1, t2), jnp.maximum(t1, t2)

    def below_one(t):
        finite = jnp.isfinite(t)
        t = jnp.where(finite, t, 0.0)
        f = jnp.maximum(a, p_n * t) + jnp.minimum(e, p_w * t) + p_r * t
        return finite & (f < 1)

    seg1, seg2 = below_one(b1), below_one(b2)

    def ratio(num, den):
        return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)

    # Segment 0 (t <= b1): N at its floor a, W and R scaled together.
    t0 = ratio(1 - a, p_w + p_r)
    m0 = (a, p_w * t0, p_r * t0)
    # Segment 1 with t1 < t2: nothing binds, q = p.
    m1_free = (p_n, p_w, p_r)
    # Segment 1 with t2 <= t1: both bind, R takes the remainder.
    m1_both = (a, e, jnp.maximum(1 - a - e, 0.0))
    # Segment 2 (t >= b2): W at its cap e, N and R scaled together.
    t2s = ratio(1 - e, p_n + p_r)
    m2 = (p_n * t2s, e, p_r * t2s)

    n_first = t1 < t2
    out = []
    for k in range(3):
        mid = jnp.where(n_first, m1_free[k], m1_both[k])
        out.append(jnp.where(seg2, m2[k], jnp.where(seg1, mid, m0[k])))
    return tuple(out)
