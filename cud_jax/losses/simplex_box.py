"""The Euclidean projection onto the simplex intersected with a box (PAPER.md section 3).

`project_simplex_box`: the projection onto {q : sum q = 1, lower <= q <= upper}.
q = clip(v + lam, lower, upper) with one scalar lam per row; three ways to find lam
(sort, a sort-free exact Newton iteration, plain bisection). Pure `jnp`, jit- and
vmap-friendly, class axis last, any leading batch shape; inputs pass through
`jax.lax.stop_gradient` (a target correction of frozen teacher quantities).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cud_jax.losses import _validate
from cud_jax.losses._projection_common import _broadcast_to_classes, _row_reduce

# Feasibility slack for the eager checks of `project_simplex_box`, in units of the dtype's
# machine epsilon: sum(lower) = 1 built from float32 probabilities may round to 1 + 1e-7.
_FEASIBILITY_ULPS = 64
# The "newton" method stops once |1 - g(lam)| is below this many ulps: measured noise of the
# float32 sum at the exact root was 0-8 ulps for |v| <= 16, K <= 1000 (38 for |v| ~ 4e3).
_RESIDUAL_ULPS = 8


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
