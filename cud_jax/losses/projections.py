"""Exact projections of a teacher distribution onto mass constraints (PAPER.md section 3).

Two solvers, both pure `jnp`, jit- and vmap-friendly, class axis last, any leading batch shape:

* `kl_projection`: the I-projection argmin_q KL(q || p) over the simplex subject to
  "at least alpha on the label neighbourhood N" and "at most eps on the wrong classes W".
  Closed form, O(K), no iterations.
* `project_simplex_box`: the Euclidean projection onto {q : sum q = 1, lower <= q <= upper}.
  q = clip(v + lam, lower, upper) with one scalar lam per row; three ways to find lam
  (sort, a sort-free exact Newton iteration, plain bisection).

With N = {y}, W = {k*}, alpha = p_y + delta and eps = p_k* - delta (delta from
`wclip_delta`), both return W-Clip's targets: W-Clip is the exact projection onto that set.

Both are target corrections of frozen teacher quantities: their inputs pass through
`jax.lax.stop_gradient`, so differentiating a loss that contains them gives zero gradient with
respect to those inputs (the solvers' loops and fused reductions define no derivative).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cud_jax.losses import _validate

# Feasibility slack for the eager checks of `project_simplex_box`, in units of the dtype's
# machine epsilon: sum(lower) = 1 built from float32 probabilities may round to 1 + 1e-7.
_FEASIBILITY_ULPS = 64
# The "newton" method stops once |1 - g(lam)| is below this many ulps: measured noise of the
# float32 sum at the exact root was 0-8 ulps for |v| <= 16, K <= 1000 (38 for |v| ~ 4e3).
_RESIDUAL_ULPS = 8


# ---------------------------------------------------------------------------------------------
# Shared argument handling.
# ---------------------------------------------------------------------------------------------


def _broadcast_to_classes(x, probs: jax.Array, name: str) -> jax.Array:
    """Broadcasts a `[..., K]`-like argument to `probs.shape` or raises naming `name`."""
    try:
        shape = jnp.broadcast_shapes(jnp.shape(x), probs.shape)
    except ValueError:
        shape = None
    if shape != probs.shape:
        raise ValueError(
            f"`{name}` has shape {jnp.shape(x)}, which does not broadcast to the shape of the "
            f"probabilities {probs.shape} (class axis last)."
        )
    return jnp.broadcast_to(x, probs.shape)


def _group_mask(mask, probs: jax.Array, name: str) -> jax.Array:
    if mask is None:
        return jnp.zeros(probs.shape, bool)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`{name}` must be a boolean mask over classes, got dtype {mask.dtype}.")
    return _broadcast_to_classes(mask, probs, name)


def _budget(x, probs: jax.Array, name: str) -> jax.Array:
    """A per-row scalar budget (`alpha`, `eps`) broadcast to the batch shape `probs.shape[:-1]`."""
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a real number or array, got dtype {x.dtype}.")
    batch = probs.shape[:-1]
    try:
        shape = jnp.broadcast_shapes(x.shape, batch)
    except ValueError:
        shape = None
    if shape != batch:
        raise ValueError(
            f"`{name}` has shape {x.shape}; it must be a scalar or broadcast to the batch shape "
            f"{batch} (one budget per row, no class axis)."
        )
    return jnp.broadcast_to(x.astype(probs.dtype), batch)


# ---------------------------------------------------------------------------------------------
# KL (I-)projection.
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Euclidean projection onto the simplex intersected with a box.
# ---------------------------------------------------------------------------------------------

_METHODS = ("auto", "sort", "newton", "bisection")


def project_simplex_box(v, lower, upper, *, method: str = "auto", num_steps: int = 50,
                        max_iterations: int = 64) -> jax.Array:
    """Exact Euclidean projection of `v` onto {q : sum_k q_k = 1, lower <= q <= upper}.

    The projection is q = clip(v + lam, lower, upper) with one scalar lam per row solving
    g(lam) = sum_k clip(v_k + lam, lower_k, upper_k) = 1; g is nondecreasing and piecewise
    linear with 2K breakpoints lower_k - v_k and upper_k - v_k.

    Methods:
      * `"sort"`: sorts the 2K breakpoints, finds the segment holding the root from cumulative
        sums of the slope, then solves that linear piece in closed form (an exact Newton step
        from the segment's midpoint with g re-evaluated directly, plus one more step that
        repairs a segment misplaced by rounding in the cumulative sums). O(K log K).
      * `"newton"`: sort-free and exact. A semismooth Newton iteration on g, started at the
        unbounded solution lam0 = (1 - sum v) / K and safeguarded by a bracket [lo, hi] with
        g(lo) <= 1 <= g(hi): a Newton step that would leave the bracket (or has no slope) is
        replaced by bisection. g is linear between breakpoints, so a Newton step that crosses
        no breakpoint lands exactly on the root; each pass counts the breakpoints below lam,
        which certifies that (exactly, without tolerances) at the next pass. A row also stops
        once |1 - g| is at the float rounding level (one last Newton step then finishes it)
        or when its bracket has collapsed to adjacent floats. Each iteration is one fused
        O(K) pass. Termination is bounded: every evaluation lies strictly inside the bracket
        and shrinks it, which also rules out cycling, and the loop is capped at
        `max_iterations` (64). Measured batch iteration counts (the batch waits for its
        slowest row): 1-2 around a probability vector with W-Clip-like bounds, 3 for dense
        random boxes, 5-10 for Gaussian v on the simplex, up to ~25 for adversarially
        spread breakpoints (|v| >> bound widths), where bisection steps take over.
      * `"bisection"`: `num_steps` bisection steps on [min(lower - v), max(upper - v)], then
        lam = midpoint. A reference; its error is the bracket width / 2**(num_steps + 1).
      * `"auto"`: `"newton"` on CPU, where XLA's sort is slow (benchmarks/bench_losses.py
        measured sort at ~100-300x a softmax of the same shape, newton at ~1-3x);
        `"sort"` on GPU/TPU, where a sort is a fast kernel and each `while_loop` iteration
        usually synchronises with the host (chosen by that reasoning, not yet measured on an
        accelerator). Decided from `jax.default_backend()` at trace time.

    Precision: lam and q are exact up to float rounding of v + lam, i.e. to a few ulps of
    max |v|; with |v| <= 1 (probabilities) that is ~1e-7 in float32.

    Infeasible boxes: when the arrays are concrete, sum(lower) > 1, sum(upper) < 1 or
    lower > upper (beyond a few ulps) raise a ValueError. Under `jit` nothing is checked:
    a row with sum(lower) > 1 returns `lower`, one with sum(upper) < 1 returns `upper`
    (the "closest" bound, not a point of the set); lower > upper gives an unspecified result.

    Args:
      v: `[..., K]` points to project (e.g. teacher probabilities).
      lower: per-class lower bounds, broadcastable to `v`.
      upper: per-class upper bounds, broadcastable to `v`.
      method: `"auto"`, `"sort"`, `"newton"` or `"bisection"`.
      num_steps: number of bisection steps for `"bisection"`.
      max_iterations: cap on the iterations of `"newton"`.

    Returns:
      `[..., K]` projections, each row summing to 1 and inside [lower, upper].
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    v = _validate.class_array(v, "v")
    # Python-scalar bounds are weakly typed and do not widen a float32 v.
    dtype = jnp.promote_types(jnp.result_type(v, lower, upper), jnp.float32)
    v = v.astype(dtype)
    lower = _broadcast_to_classes(jnp.asarray(lower, dtype), v, "lower")
    upper = _broadcast_to_classes(jnp.asarray(upper, dtype), v, "upper")
    _check_box(lower, upper)
    v, lower, upper = lax.stop_gradient((v, lower, upper))
    if method == "auto":
        method = "newton" if jax.default_backend() == "cpu" else "sort"
    return _project_simplex_box(v, lower, upper, method, num_steps, max_iterations)


@partial(jax.jit, static_argnums=(3, 4, 5))
def _project_simplex_box(v, lower, upper, method, num_steps, max_iterations):
    if method == "sort":
        lam = _lam_sort(v, lower, upper)
    elif method == "newton":
        lam, _ = _lam_newton(v, lower, upper, max_iterations)
    else:
        lam = _lam_bisection(v, lower, upper, num_steps)
    return jnp.clip(v + lam[..., None], lower, upper)


def _check_box(lower: jax.Array, upper: jax.Array) -> None:
    """Raises on a concretely infeasible box (skipped under tracing)."""
    if not (_validate._is_concrete(lower) and _validate._is_concrete(upper)) or not lower.size:
        return
    lo, hi = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    slack = _FEASIBILITY_ULPS * float(jnp.finfo(lower.dtype).eps)
    if (lo > hi + slack * np.maximum(1.0, np.abs(hi))).any():
        idx = np.argwhere(lo > hi + slack * np.maximum(1.0, np.abs(hi)))[0].tolist()
        raise ValueError(f"`lower` exceeds `upper` at (index..., class) {idx}: empty box.")
    for name, sums, bad in (("lower", lo.sum(-1), lambda s: s > 1 + slack * lo.shape[-1]),
                            ("upper", hi.sum(-1), lambda s: s < 1 - slack * hi.shape[-1])):
        if bad(sums).any():
            row = np.argwhere(np.atleast_1d(bad(sums)))[0].tolist()
            value = np.atleast_1d(sums)[tuple(row)] if np.ndim(sums) else float(sums)
            raise ValueError(
                f"The box is infeasible: sum(`{name}`) over classes is {value:.8g} at row "
                f"{row}, but the simplex needs sum(lower) <= 1 <= sum(upper)."
            )


def _row_reduce(operands, combiners, inits):
    """Several reductions over the class axis as one variadic `lax.reduce`.

    XLA:CPU runs a variadic reduce as one vectorised loop, whereas separate `jnp` reductions
    over the same inputs get multi-output fused into a loop that measured ~30x slower.
    """
    inits = tuple(jnp.asarray(i, x.dtype) for i, x in zip(inits, operands))
    return lax.reduce(tuple(operands), inits,
                      lambda a, b: tuple(f(x, y) for f, x, y in zip(combiners, a, b)),
                      (operands[0].ndim - 1,))


def _select_min(a, b):
    # A select, not lax.min: min/max with NaN propagation vectorise worse inside a variadic
    # reduce on XLA:CPU (measured ~2x slower). Inputs here are never NaN for valid boxes.
    return jnp.where(a < b, a, b)


def _select_max(a, b):
    return jnp.where(a > b, a, b)


def _lam_newton(v, lower, upper, max_iterations: int):
    """lam of the `"newton"` method, and the number of loop iterations the batch needed."""
    batch = v.shape[:-1]
    dtype = v.dtype
    # Bracket: g(lo) = sum(lower) <= 1 <= sum(upper) = g(hi). Start at the solution without
    # bounds, (1 - sum v) / K: exact whenever no bound binds, and lam = 0 for W-Clip-like
    # boxes around a probability vector, where one pass then settles the row.
    lo, hi, total = _row_reduce((lower - v, upper - v, v), (_select_min, _select_max, jnp.add),
                                (jnp.inf, -jnp.inf, 0.0))
    lam0 = jnp.clip((1 - total) / v.shape[-1], lo, hi)
    tol = _RESIDUAL_ULPS * jnp.finfo(dtype).eps

    def cond(state):
        it, _, _, _, _, done, _, _, _ = state
        return (it < max_iterations) & ~jnp.all(done)

    def body(state):
        it, lam, prev_lam, prev_lower, prev_upper, done, prev_newton, lo, hi = state
        g, at_lower, at_upper = _newton_pass(v, lower, upper, lam)
        gt_l, ge_l = _unpack(at_lower)
        gt_u, ge_u = _unpack(at_upper)
        p_gt_l, p_ge_l = _unpack(prev_lower)
        p_gt_u, p_ge_u = _unpack(prev_upper)
        # Breakpoints strictly between prev_lam and lam. Moving right: those b with
        # prev_lam < b < lam, i.e. count(b < lam) - count(b <= prev_lam).
        crossed = jnp.where(lam > prev_lam, (gt_l - p_ge_l) + (gt_u - p_ge_u),
                            (p_gt_l - ge_l) + (p_gt_u - ge_u))
        # A Newton step that crossed no breakpoint stayed on one linear piece: exact root.
        exact = prev_newton & (crossed == 0)
        residual = 1 - g
        lo = jnp.where(residual > 0, lam, lo)
        hi = jnp.where(residual < 0, lam, hi)
        # One-sided slope towards the root: the number of coordinates free on that side.
        slope = jnp.where(residual > 0, ge_l - ge_u, gt_l - gt_u)
        step = lam + residual / jnp.maximum(slope, 1).astype(dtype)
        newton = (slope > 0) & (step > lo) & (step < hi)
        candidate = jnp.where(newton, step, 0.5 * (lo + hi))
        # Rounding noise: g sums K rounded terms, so near the root 1 - g is a few ulps of
        # noise, and steps driven by it could bounce inside a bracket of a few ulps. At that
        # level one last step (which moves lam by at most |residual|) finishes the row.
        # candidate == lam: the bracket has collapsed to adjacent floats.
        settled = (jnp.abs(residual) <= tol) & ~exact
        stop = done | exact | settled | (candidate == lam)
        final = jnp.where(settled & (slope > 0), step, lam)
        return (it + 1, jnp.where(done, lam, jnp.where(stop, final, candidate)),
                jnp.where(stop, prev_lam, lam), at_lower, at_upper, stop, newton, lo, hi)

    zeros = jnp.zeros(batch, jnp.int32)
    if v.shape[-1] >= 2**15:
        zeros = (zeros, zeros)
    state = (jnp.zeros((), jnp.int32), lam0, lam0, zeros, zeros, jnp.zeros(batch, bool),
             jnp.zeros(batch, bool), lo, hi)
    state = lax.while_loop(cond, body, state)
    return state[1], state[0]


def _newton_pass(v, lower, upper, lam):
    """g(lam) and the breakpoint counts at lam, in one fused pass over the classes.

    With t = v + lam, lower_k - v_k < lam <=> t_k > lower_k, and so on. Counting `>` and `>=`
    separately gives both one-sided slopes and exact counts of breakpoints in open intervals.
    Each pair of counts is packed into one int32 (`>` + `>=` * 2**16) to save reduction
    outputs: fewer outputs run measurably faster on XLA:CPU.
    """
    t = v + lam[..., None]
    q = jnp.clip(t, lower, upper)
    pairs = ((t > lower, t >= lower), (t > upper, t >= upper))
    if t.shape[-1] >= 2**15:  # counts would not fit in 15 bits: keep them apart
        g, *counts = _row_reduce((q,) + tuple(m.astype(jnp.int32) for p in pairs for m in p),
                                 (jnp.add,) * 5, (0,) * 5)
        return g, (counts[0], counts[1]), (counts[2], counts[3])
    packed = tuple(gt.astype(jnp.int32) + (ge.astype(jnp.int32) << 16) for gt, ge in pairs)
    return _row_reduce((q,) + packed, (jnp.add,) * 3, (0,) * 3)


def _unpack(counts):
    """(count of `>`, count of `>=`) from `_newton_pass`'s packed or unpacked form."""
    if isinstance(counts, tuple):
        return counts
    return counts & 0xFFFF, counts >> 16


def _lam_sort(v, lower, upper) -> jax.Array:
    num_classes = v.shape[-1]
    breakpoints = jnp.concatenate([lower - v, upper - v], axis=-1)
    # Crossing lower_k - v_k adds coordinate k to the free set (+1 slope); crossing
    # upper_k - v_k removes it (-1).
    jumps = jnp.concatenate([jnp.ones(v.shape, v.dtype), -jnp.ones(v.shape, v.dtype)], axis=-1)
    points, jumps = lax.sort((breakpoints, jumps), dimension=breakpoints.ndim - 1, num_keys=1)
    slopes = jnp.cumsum(jumps, axis=-1)  # slope just right of each sorted breakpoint
    rises = slopes[..., :-1] * jnp.diff(points, axis=-1)
    g_at = jnp.sum(lower, axis=-1, keepdims=True) + jnp.concatenate(
        [jnp.zeros(v.shape[:-1] + (1,), v.dtype), jnp.cumsum(rises, axis=-1)], axis=-1)
    # The root lies between the last breakpoint with g < 1 and the next one. Start from the
    # middle of that segment: at a breakpoint itself, v + (lower - v) may round to either
    # side of lower, and the one-sided slope there would be wrong.
    below = jnp.sum(g_at < 1, axis=-1)
    last = 2 * num_classes - 1
    left = jnp.take_along_axis(points, jnp.clip(below - 1, 0, last)[..., None], axis=-1)[..., 0]
    right = jnp.take_along_axis(points, jnp.clip(below, 0, last)[..., None], axis=-1)[..., 0]
    start = jnp.where(below == 0, right, jnp.where(below > last, left, 0.5 * (left + right)))
    lam = _newton_step(v, lower, upper, start)
    # The cumulative sums carry rounding; if it picked a neighbouring segment, one more exact
    # step from inside the correct one repairs it (and is a no-op otherwise).
    return _newton_step(v, lower, upper, lam)


def _newton_step(v, lower, upper, lam):
    g, at_lower, at_upper = _newton_pass(v, lower, upper, lam)
    (gt_l, ge_l), (gt_u, ge_u) = _unpack(at_lower), _unpack(at_upper)
    residual = 1 - g
    slope = jnp.where(residual > 0, ge_l - ge_u, gt_l - gt_u)
    return jnp.where(slope > 0, lam + residual / jnp.maximum(slope, 1).astype(v.dtype), lam)


def _lam_bisection(v, lower, upper, num_steps: int) -> jax.Array:
    lo = jnp.min(lower - v, axis=-1)
    hi = jnp.max(upper - v, axis=-1)

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = jnp.sum(jnp.clip(v + mid[..., None], lower, upper), axis=-1) < 1
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = lax.fori_loop(0, num_steps, body, (lo, hi))
    return 0.5 * (lo + hi)
