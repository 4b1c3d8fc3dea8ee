"""Tests for cud_jax.losses.projections: the KL (I-)projection and the box-simplex projection."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from cud_jax import losses
from cud_jax.losses import simplex_box

METHODS = ("sort", "newton", "bisection", "auto")


def _random_probs(rng, shape, scale=2.0, zeros=0.0):
    p = np.exp(scale * rng.normal(size=shape))
    if zeros:
        p = np.where(rng.uniform(size=shape) < zeros, 0.0, p)
        p[..., 0] = np.where(p.sum(-1) == 0, 1.0, p[..., 0])
    return p / p.sum(-1, keepdims=True)


def _random_groups(rng, shape):
    """Disjoint N and W masks: each class goes to N, W or the rest with equal odds."""
    pick = rng.integers(0, 3, size=shape)
    return pick == 0, pick == 1


def _wclip_setup(probs, labels):
    """W-Clip's projection set: N = {y}, W = {k*} (only where W-Clip fires), its budgets."""
    num_classes = probs.shape[-1]
    delta = np.asarray(losses.wclip_delta(probs, labels))
    top = np.argmax(probs, -1)
    fires = top != labels
    p_y = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
    p_top = probs.max(-1)
    n_mask = np.eye(num_classes, dtype=bool)[labels]
    w_mask = np.eye(num_classes, dtype=bool)[top] & fires[..., None]
    return n_mask, w_mask, p_y + delta, np.where(fires, p_top - delta, 1.0), delta


def _kl(q, p):
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    pos = q > 0
    return float(np.sum(q[pos] * np.log(q[pos] / p[pos])))


# -------------------------------------------------------------------------------------------
# kl_projection
# -------------------------------------------------------------------------------------------


class TestKLProjectionHandComputed:

    def test_only_n_binds(self):
        p = jnp.array([0.5, 0.3, 0.2])
        q = losses.kl_projection(p, n_mask=jnp.array([False, True, False]), alpha=0.5,
                                 w_mask=None, eps=1.0)
        np.testing.assert_allclose(q, [0.5 * 0.5 / 0.7, 0.5, 0.5 * 0.2 / 0.7], atol=1e-7)

    def test_only_w_binds(self):
        p = jnp.array([0.6, 0.3, 0.1])
        q = losses.kl_projection(p, n_mask=None, alpha=0.0,
                                 w_mask=jnp.array([True, False, False]), eps=0.4)
        # The removed 0.2 goes to the others in proportion: factor 0.6 / 0.4.
        np.testing.assert_allclose(q, [0.4, 0.45, 0.15], atol=1e-7)

    def test_both_bind(self):
        p = jnp.array([0.1, 0.6, 0.2, 0.1])
        q = losses.kl_projection(p, n_mask=jnp.array([True, False, False, False]), alpha=0.3,
                                 w_mask=jnp.array([False, True, False, False]), eps=0.3)
        np.testing.assert_allclose(q, [0.3, 0.3, 0.4 * 2 / 3, 0.4 / 3], atol=1e-7)

    def test_inactive_constraints_return_p(self):
        p = jnp.array([0.4, 0.1, 0.3, 0.2])
        q = losses.kl_projection(p, n_mask=jnp.array([True, False, False, True]), alpha=0.5,
                                 w_mask=jnp.array([False, True, False, False]), eps=0.2)
        np.testing.assert_allclose(q, p, atol=1e-7)

    def test_groups_keep_proportions(self):
        p = jnp.array([0.05, 0.15, 0.5, 0.2, 0.1])
        n = jnp.array([True, True, False, False, False])
        w = jnp.array([False, False, True, False, False])
        q = np.asarray(losses.kl_projection(p, n_mask=n, alpha=0.4, w_mask=w, eps=0.2))
        np.testing.assert_allclose(q[1] / q[0], 3.0, rtol=1e-6)
        np.testing.assert_allclose(q[3] / q[4], 2.0, rtol=1e-6)
        np.testing.assert_allclose([q[:2].sum(), q[2]], [0.4, 0.2], atol=1e-7)

    def test_zero_mass_group_gets_mass_uniformly(self):
        p = jnp.array([0.0, 0.0, 0.5, 0.5])
        q = losses.kl_projection(p, n_mask=jnp.array([True, True, False, False]), alpha=0.2,
                                 w_mask=None, eps=1.0)
        np.testing.assert_allclose(q, [0.1, 0.1, 0.4, 0.4], atol=1e-7)

    def test_zero_mass_classes_in_positive_group_stay_zero(self):
        p = jnp.array([0.0, 0.2, 0.0, 0.8])
        q = np.asarray(losses.kl_projection(p, n_mask=jnp.array([True, True, False, False]),
                                            alpha=0.5, w_mask=None, eps=1.0))
        np.testing.assert_allclose(q, [0.0, 0.5, 0.0, 0.5], atol=1e-7)
        assert q[0] == 0.0 and q[2] == 0.0

    def test_all_mass_on_w_fills_n_and_rest(self):
        # p lives on W only, W may keep 0.5, N needs 0.3: the missing 0.2 is water-filled
        # uniformly over N and R above N's floor (the smoothed-p limit).
        p = jnp.array([0.0, 1.0, 0.0])
        n = jnp.array([True, False, False])
        w = jnp.array([False, True, False])
        q = losses.kl_projection(p, n_mask=n, alpha=0.3, w_mask=w, eps=0.5)
        np.testing.assert_allclose(q, [0.3, 0.5, 0.2], atol=1e-7)
        q = losses.kl_projection(p, n_mask=n, alpha=0.1, w_mask=w, eps=0.5)
        np.testing.assert_allclose(q, [0.25, 0.5, 0.25], atol=1e-7)

    def test_empty_rest_group(self):
        p = jnp.array([0.2, 0.8])
        q = losses.kl_projection(p, n_mask=jnp.array([True, False]), alpha=0.5,
                                 w_mask=jnp.array([False, True]), eps=0.6)
        np.testing.assert_allclose(q, [0.5, 0.5], atol=1e-7)
        # Rest empty and N without mass: N takes what W must give up.
        q = losses.kl_projection(jnp.array([0.0, 1.0]), n_mask=jnp.array([True, False]),
                                 alpha=0.1, w_mask=jnp.array([False, True]), eps=0.6)
        np.testing.assert_allclose(q, [0.4, 0.6], atol=1e-7)

    def test_empty_groups_normalise(self):
        p = jnp.array([1.0, 3.0])
        q = losses.kl_projection(p, n_mask=None, alpha=0.9, w_mask=None, eps=0.0)
        np.testing.assert_allclose(q, [0.25, 0.75], atol=1e-7)

    def test_all_zero_row_is_uniform(self):
        q = losses.kl_projection(jnp.zeros(4), n_mask=jnp.array([True, False, False, False]),
                                 alpha=0.1, w_mask=None, eps=1.0)
        np.testing.assert_allclose(q, [0.25] * 4, atol=1e-7)

    def test_infeasible_budgets_are_clipped(self):
        p = jnp.array([0.2, 0.3, 0.5])
        n = jnp.array([True, True, False])
        q = losses.kl_projection(p, n_mask=n, alpha=1.5, w_mask=None, eps=1.0)
        np.testing.assert_allclose(q, [0.4, 0.6, 0.0], atol=1e-7)
        w = jnp.array([False, False, True])
        q = losses.kl_projection(p, n_mask=None, alpha=0.0, w_mask=w, eps=-0.1)
        np.testing.assert_allclose(q, [0.4, 0.6, 0.0], atol=1e-7)
        # Every class in W: eps cannot hold, all mass stays on W.
        q = losses.kl_projection(p, n_mask=None, alpha=0.0, w_mask=jnp.ones(3, bool), eps=0.3)
        np.testing.assert_allclose(q, p, atol=1e-7)
        # alpha > 0 with an empty N is vacuous.
        q = losses.kl_projection(p, n_mask=jnp.zeros(3, bool), alpha=0.7, w_mask=None, eps=1.0)
        np.testing.assert_allclose(q, p, atol=1e-7)


class TestKLProjectionProperties:

    @pytest.mark.parametrize("num_classes", [2, 5, 40])
    def test_feasible_on_random_inputs(self, num_classes):
        rng = np.random.default_rng(num_classes)
        p = _random_probs(rng, (256, num_classes), zeros=0.2)
        n, w = _random_groups(rng, p.shape)
        alpha, eps = rng.uniform(0, 1, 256), rng.uniform(0, 1, 256)
        q = np.asarray(losses.kl_projection(p, n_mask=n, alpha=alpha, w_mask=w, eps=eps))
        assert np.isfinite(q).all() and (q >= 0).all()
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-6)
        has_n = n.any(-1)
        assert (np.where(has_n, (q * n).sum(-1) - alpha, 0.0) >= -1e-6).all()
        all_w = w.all(-1)
        assert (np.where(all_w, 0.0, (q * w).sum(-1) - eps) <= 1e-6).all()

    def test_idempotent(self):
        rng = np.random.default_rng(1)
        p = _random_probs(rng, (128, 7), zeros=0.1)
        n, w = _random_groups(rng, p.shape)
        alpha, eps = rng.uniform(0, 1, 128), rng.uniform(0, 1, 128)
        q = losses.kl_projection(p, n_mask=n, alpha=alpha, w_mask=w, eps=eps)
        q2 = losses.kl_projection(q, n_mask=n, alpha=alpha, w_mask=w, eps=eps)
        np.testing.assert_allclose(q2, q, atol=1e-6)

    @pytest.mark.parametrize("num_classes", [3, 4, 6, 8])
    def test_optimal_against_slsqp(self, x64, num_classes):
        rng = np.random.default_rng(100 + num_classes)
        for _ in range(6):
            p = _random_probs(rng, (num_classes,), scale=1.0)
            n, w = _random_groups(rng, p.shape)
            alpha, eps = rng.uniform(0, 1), rng.uniform(0, 1)
            q = np.asarray(losses.kl_projection(jnp.asarray(p), n_mask=n, alpha=alpha,
                                                w_mask=w, eps=eps))
            assert q.dtype == np.float64
            cons = [{"type": "eq", "fun": lambda x: x.sum() - 1.0,
                     "jac": lambda x: np.ones_like(x)}]
            if n.any():
                cons.append({"type": "ineq", "fun": lambda x, n=n, a=alpha: x[n].sum() - a,
                             "jac": lambda x, n=n: n.astype(float)})
            if w.any() and not w.all():
                cons.append({"type": "ineq", "fun": lambda x, w=w, e=eps: e - x[w].sum(),
                             "jac": lambda x, w=w: -w.astype(float)})
            res = optimize.minimize(
                lambda x, p=p: np.sum(x * np.log(x / p)), np.full(num_classes, 1 / num_classes),
                jac=lambda x, p=p: np.log(x / p) + 1.0, method="SLSQP", constraints=cons,
                bounds=[(1e-14, 1.0)] * num_classes, options={"ftol": 1e-12, "maxiter": 1000})
            assert res.success, res.message
            np.testing.assert_allclose(q, res.x, atol=1e-6)
            assert _kl(q, p) <= _kl(res.x, p) + 1e-10

    def test_batch_shapes_jit_and_vmap(self):
        rng = np.random.default_rng(2)
        p = _random_probs(rng, (2, 3, 6))
        n, w = _random_groups(rng, p.shape)
        alpha, eps = rng.uniform(0, 1, (2, 3)), rng.uniform(0, 1, (2, 3))
        eager = losses.kl_projection(p, n_mask=n, alpha=alpha, w_mask=w, eps=eps)
        chex.assert_shape(eager, (2, 3, 6))
        jitted = jax.jit(lambda *a: losses.kl_projection(
            a[0], n_mask=a[1], alpha=a[2], w_mask=a[3], eps=a[4]))(p, n, alpha, w, eps)
        mapped = jax.vmap(lambda *a: losses.kl_projection(
            a[0], n_mask=a[1], alpha=a[2], w_mask=a[3], eps=a[4]))(p, n, alpha, w, eps)
        np.testing.assert_allclose(jitted, eager, atol=1e-7)
        np.testing.assert_allclose(mapped, eager, atol=1e-7)
        # Row-wise application agrees with the batched call.
        row = losses.kl_projection(p[1, 2], n_mask=n[1, 2], alpha=alpha[1, 2], w_mask=w[1, 2],
                                   eps=eps[1, 2])
        np.testing.assert_allclose(row, eager[1, 2], atol=1e-7)

    def test_shared_masks_broadcast(self):
        rng = np.random.default_rng(3)
        p = _random_probs(rng, (5, 4))
        n = np.array([True, False, False, False])
        q = losses.kl_projection(p, n_mask=n, alpha=0.5, w_mask=None, eps=1.0)
        np.testing.assert_allclose(np.asarray(q)[:, 0], np.maximum(p[:, 0], 0.5), atol=1e-6)

    @pytest.mark.parametrize("num_classes", [2, 1000])
    def test_extreme_sizes_and_zeros(self, num_classes):
        rng = np.random.default_rng(num_classes)
        p = _random_probs(rng, (64, num_classes), scale=6.0, zeros=0.5)
        p[0] = 0.0
        p[1] = np.eye(num_classes)[0]
        n, w = _random_groups(rng, p.shape)
        q = np.asarray(losses.kl_projection(p.astype(np.float32), n_mask=n, alpha=0.6,
                                            w_mask=w, eps=0.05))
        assert np.isfinite(q).all() and (q >= 0).all()
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)

    def test_no_gradient_flows_into_the_targets(self):
        p = jnp.array([0.5, 0.3, 0.2])

        def loss(x):
            q = losses.kl_projection(jax.nn.softmax(x), n_mask=jnp.array([False, False, True]),
                                     alpha=0.5, w_mask=None, eps=1.0)
            r = losses.project_simplex_box(jax.nn.softmax(x), 0.0, jnp.array([0.3, 1.0, 1.0]))
            return jnp.sum((q + r) * x)

        grad = jax.grad(loss)(jnp.log(p))
        expected_q = [0.5 * 0.5 / 0.8, 0.3 * 0.5 / 0.8, 0.5]
        expected_r = [0.3, 0.4, 0.3]
        np.testing.assert_allclose(grad, np.add(expected_q, expected_r), atol=1e-6)

    def test_bfloat16_computes_in_float32(self):
        p = jnp.array([0.5, 0.3, 0.2], jnp.bfloat16)
        q = losses.kl_projection(p, n_mask=jnp.array([False, False, True]), alpha=0.5,
                                 w_mask=None, eps=1.0)
        assert q.dtype == jnp.float32


# -------------------------------------------------------------------------------------------
# project_simplex_box
# -------------------------------------------------------------------------------------------


class TestProjectSimplexBoxHandComputed:

    @pytest.mark.parametrize("method", METHODS)
    def test_small_cases(self, method):
        def proj(v, lo, hi):
            return np.asarray(losses.project_simplex_box(v, lo, hi, method=method))

        np.testing.assert_allclose(proj(jnp.array([0.5, 0.3, 0.2]), 0.0, 1.0), [0.5, 0.3, 0.2],
                                   atol=1e-6)
        np.testing.assert_allclose(proj(jnp.array([0.6, 0.6, 0.6]), 0.0, 1.0), [1 / 3] * 3,
                                   atol=1e-6)
        np.testing.assert_allclose(proj(jnp.array([2.0, 0.0, 0.0]), 0.0, 1.0), [1, 0, 0],
                                   atol=1e-6)
        # Cap at 0.6 on class 0; lam = -0.1 moves class 1 to 0.4 and class 2 onto its floor.
        np.testing.assert_allclose(
            proj(jnp.array([0.9, 0.5, 0.0]), 0.0, jnp.array([0.6, 1.0, 1.0])), [0.6, 0.4, 0.0],
            atol=1e-6)
        # Cap at 0.4 on class 0; the removed 0.3 would be spread evenly (lam = 0.15) but the
        # floor 0.3 of class 2 binds first: lam = 0.1.
        np.testing.assert_allclose(
            proj(jnp.array([0.7, 0.2, 0.1]), jnp.array([0.0, 0.0, 0.3]),
                 jnp.array([0.4, 1.0, 1.0])), [0.4, 0.3, 0.3], atol=1e-6)
        # K = 1: the only point is q = 1.
        np.testing.assert_allclose(proj(jnp.array([0.3]), 0.0, 1.0), [1.0], atol=1e-6)


def _random_box(rng, shape, kind):
    """Random (v, lower, upper) with sum(lower) <= 1 <= sum(upper)."""
    k = shape[-1]
    if kind == "simplex":
        v = rng.normal(size=shape) * 0.5
        return v, np.zeros(shape), np.ones(shape)
    if kind == "box":
        v = rng.uniform(-0.5, 1.0, size=shape) * 2 / k
        lower = rng.uniform(0, 1, size=shape) / k
        width = rng.uniform(0, 3, size=shape) / k
        # Widen where needed so that sum(upper) >= 1 (small K can fall short).
        short = 1.2 - lower.sum(-1, keepdims=True)
        width *= np.maximum(1.0, short / width.sum(-1, keepdims=True))
        return v, lower, lower + width
    # "probs": probabilities with a few pinned classes, as target corrections produce.
    v = _random_probs(rng, shape, zeros=0.1)
    lower = np.where(rng.uniform(size=shape) < 0.1, v + rng.uniform(0, 0.3, shape) / k, 0.0)
    upper = np.where(rng.uniform(size=shape) < 0.1, v * rng.uniform(0, 1, shape), 1.0)
    upper = np.maximum(upper, lower)
    lower *= np.minimum(1.0, 1.0 / np.maximum(lower.sum(-1, keepdims=True), 1.0))
    return v, lower, upper


class TestProjectSimplexBoxProperties:

    @pytest.mark.parametrize("kind", ["simplex", "box", "probs"])
    @pytest.mark.parametrize("num_classes", [2, 10, 1000])
    def test_methods_agree_and_feasible(self, kind, num_classes):
        rng = np.random.default_rng(num_classes)
        v, lo, hi = (x.astype(np.float32) for x in _random_box(rng, (64, num_classes), kind))
        with jax.enable_x64(True):
            ref = np.asarray(losses.project_simplex_box(*(jnp.asarray(x, jnp.float64)
                                                          for x in (v, lo, hi)), method="sort"))
        for method in METHODS:
            q = np.asarray(losses.project_simplex_box(v, lo, hi, method=method))
            assert q.dtype == np.float32
            assert np.isfinite(q).all()
            np.testing.assert_allclose(q, ref, atol=1e-6, err_msg=method)
            assert (q >= lo).all() and (q <= hi).all()
            # float32 rounding of a K-term sum, whose order depends on the compiled kernel
            np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)

    @pytest.mark.parametrize("num_classes", [3, 5, 8])
    def test_optimal_against_slsqp(self, x64, num_classes):
        rng = np.random.default_rng(200 + num_classes)
        for kind in ("simplex", "box", "probs"):
            v, lo, hi = _random_box(rng, (4, num_classes), kind)
            qs = {m: np.asarray(losses.project_simplex_box(jnp.asarray(v), lo, hi, method=m))
                  for m in METHODS}
            for i in range(4):
                res = optimize.minimize(
                    lambda x, c=v[i]: 0.5 * np.sum((x - c) ** 2), np.clip(v[i], lo[i], hi[i]),
                    jac=lambda x, c=v[i]: x - c, method="SLSQP",
                    constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0,
                                  "jac": lambda x: np.ones_like(x)}],
                    bounds=list(zip(lo[i], hi[i])), options={"ftol": 1e-12, "maxiter": 1000})
                assert res.success, res.message
                for method, q in qs.items():
                    np.testing.assert_allclose(q[i], res.x, atol=1e-6, err_msg=method)

    @pytest.mark.parametrize("method", METHODS)
    def test_idempotent(self, method):
        rng = np.random.default_rng(4)
        v, lo, hi = _random_box(rng, (32, 12), "box")
        q = losses.project_simplex_box(v, lo, hi, method=method)
        np.testing.assert_allclose(losses.project_simplex_box(q, lo, hi, method=method), q,
                                   atol=1e-6)

    @pytest.mark.parametrize("method", METHODS)
    def test_batch_shapes_jit_and_vmap(self, method):
        rng = np.random.default_rng(5)
        v, lo, hi = (x.reshape(2, 3, 7) for x in _random_box(rng, (6, 7), "probs"))
        def f(a, b, c):
            return losses.project_simplex_box(a, b, c, method=method)

        eager = f(v, lo, hi)
        chex.assert_shape(eager, (2, 3, 7))
        np.testing.assert_allclose(jax.jit(f)(v, lo, hi), eager, atol=1e-6)
        np.testing.assert_allclose(jax.vmap(jax.vmap(f))(v, lo, hi), eager, atol=1e-6)
        np.testing.assert_allclose(f(v[1, 2], lo[1, 2], hi[1, 2]), eager[1, 2], atol=1e-6)

    def test_newton_iterations_are_few_and_bounded(self):
        rng = np.random.default_rng(6)
        solve = jax.jit(simplex_box._lam_newton, static_argnums=3)
        v, lo, hi = (jnp.asarray(x, jnp.float32) for x in _random_box(rng, (256, 100), "box"))
        _, iterations = solve(v, lo, hi, 64)
        assert int(iterations) <= 30
        # The cap is honoured even when it stops the rows early.
        _, capped = solve(v, lo, hi, 2)
        assert int(capped) == 2
        # Around a probability vector with non-binding bounds one pass settles lam = 0.
        p = jnp.asarray(_random_probs(rng, (256, 100)), jnp.float32)
        _, iterations = solve(p, 0.0 * p, jnp.ones_like(p), 64)
        assert int(iterations) <= 2

    def test_many_classes_unpacked_counts(self):
        # K >= 2**15 keeps the Newton breakpoint counts in separate int32 arrays.
        rng = np.random.default_rng(9)
        v = jnp.asarray(_random_probs(rng, (2, 40000), scale=1.0) + 1e-6 * rng.normal(
            size=(2, 40000)), jnp.float32)
        upper = jnp.where(jnp.arange(40000) == 3, 1e-6, 1.0)
        q_newton = losses.project_simplex_box(v, 0.0, upper, method="newton")
        q_sort = losses.project_simplex_box(v, 0.0, upper, method="sort")
        np.testing.assert_allclose(q_newton, q_sort, atol=1e-7)
        np.testing.assert_allclose(np.asarray(q_newton).sum(-1), 1.0, atol=1e-5)

    def test_bisection_steps(self):
        v = jnp.array([0.9, 0.5, 0.0])
        coarse = losses.project_simplex_box(v, 0.0, 1.0, method="bisection", num_steps=2)
        fine = losses.project_simplex_box(v, 0.0, 1.0, method="bisection")
        np.testing.assert_allclose(fine, [0.7, 0.3, 0.0], atol=1e-6)
        assert np.abs(np.asarray(coarse) - [0.7, 0.3, 0.0]).max() > 1e-3

    @pytest.mark.parametrize("method", METHODS)
    def test_infeasible_box_under_jit_returns_nearest_bound(self, method):
        f = jax.jit(lambda v, lo, hi: losses.project_simplex_box(v, lo, hi, method=method))
        v = jnp.array([0.2, 0.5, 0.3])
        np.testing.assert_allclose(f(v, jnp.full(3, 0.5), 1.0), [0.5] * 3, atol=1e-6)
        np.testing.assert_allclose(f(v, 0.0, jnp.full(3, 0.2)), [0.2] * 3, atol=1e-6)


# -------------------------------------------------------------------------------------------
# The section-3 facts: W-Clip is the projection, and the W-only ablations.
# -------------------------------------------------------------------------------------------


class TestWClipIsTheProjection:

    @pytest.mark.parametrize("num_classes", [2, 10, 100])
    def test_both_solvers_return_wclip(self, num_classes):
        rng = np.random.default_rng(7 + num_classes)
        probs = _random_probs(rng, (256, num_classes), scale=2.0, zeros=0.1).astype(np.float32)
        labels = rng.integers(0, num_classes, 256)
        expected = np.asarray(losses.wclip(probs, labels))
        n_mask, w_mask, alpha, eps, delta = _wclip_setup(probs, labels)
        assert (delta > 0).mean() > 0.3  # the test exercises firing rows
        q_kl = losses.kl_projection(probs, n_mask=n_mask, alpha=alpha, w_mask=w_mask, eps=eps)
        np.testing.assert_allclose(q_kl, expected, atol=1e-6)
        # Euclidean: lower = p_y + delta at y, upper = p_k* - delta at k*.
        lower = np.where(n_mask, alpha[:, None], 0.0)
        upper = np.where(w_mask, eps[:, None], 1.0)
        for method in METHODS:
            q_box = losses.project_simplex_box(probs, lower, upper, method=method)
            np.testing.assert_allclose(q_box, expected, atol=1e-6, err_msg=method)

    def test_wclip_top_class_ties_match_argmax(self):
        # wclip finds k* with a max and an index-min (faster than argmax on CPU); ties must
        # still pick the first maximal class, as jnp.argmax does.
        probs = jnp.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]])
        labels = jnp.array([2, 0, 0])
        q = losses.wclip(probs, labels)
        expected = [[0.4 - 0.14, 0.4, 0.2 + 0.14], [0.2 + 0.14, 0.4 - 0.14, 0.4],
                    [0.1 + 0.4, 0.1, 0.8 - 0.4]]
        np.testing.assert_allclose(q, expected, atol=1e-6)

    def test_w_only_kl_spreads_proportionally_euclid_evenly(self):
        probs = jnp.array([0.1, 0.6, 0.2, 0.1])
        w = jnp.array([False, True, False, False])
        q_kl = np.asarray(losses.kl_projection(probs, n_mask=None, alpha=0.0, w_mask=w, eps=0.3))
        q_eu = np.asarray(losses.project_simplex_box(probs, 0.0, jnp.where(w, 0.3, 1.0)))
        # 0.3 is removed from class 1 in both.
        np.testing.assert_allclose([q_kl[1], q_eu[1]], [0.3, 0.3], atol=1e-6)
        others = np.array([0, 2, 3])
        np.testing.assert_allclose(q_kl[others], np.asarray(probs)[others] * 0.7 / 0.4,
                                   atol=1e-6)
        np.testing.assert_allclose(q_eu[others], np.asarray(probs)[others] + 0.1, atol=1e-6)

    def test_w_only_euclid_evenly_up_to_bounds(self):
        # Removing 0.6 from class 0: an even 0.2 each would push class 1 above its cap of
        # 0.3, so class 1 stops at 0.3 and classes 2, 3 share the rest evenly.
        probs = jnp.array([0.8, 0.2, 0.0, 0.0])
        q = losses.project_simplex_box(probs, 0.0, jnp.array([0.2, 0.3, 1.0, 1.0]))
        np.testing.assert_allclose(q, [0.2, 0.3, 0.25, 0.25], atol=1e-6)


# -------------------------------------------------------------------------------------------
# Bad input.
# -------------------------------------------------------------------------------------------


class TestBadInput:

    def test_kl_overlapping_masks(self):
        with pytest.raises(ValueError, match="disjoint"):
            losses.kl_projection(jnp.array([0.5, 0.5]), n_mask=jnp.array([True, False]),
                                 alpha=0.5, w_mask=jnp.array([True, True]), eps=0.1)

    def test_kl_mask_shape_and_dtype(self):
        p = jnp.full((4, 3), 1 / 3)
        with pytest.raises(ValueError, match="n_mask"):
            losses.kl_projection(p, n_mask=jnp.ones((4, 2), bool), alpha=0.5, w_mask=None,
                                 eps=1.0)
        with pytest.raises(TypeError, match="w_mask"):
            losses.kl_projection(p, n_mask=None, alpha=0.5, w_mask=jnp.ones((4, 3)), eps=1.0)

    def test_kl_budget_shape(self):
        p = jnp.full((4, 3), 1 / 3)
        with pytest.raises(ValueError, match="alpha"):
            losses.kl_projection(p, n_mask=None, alpha=jnp.ones((4, 3)), w_mask=None, eps=1.0)
        with pytest.raises(ValueError, match="eps"):
            losses.kl_projection(p, n_mask=None, alpha=0.0, w_mask=None, eps=jnp.ones(3))

    def test_box_shapes(self):
        v = jnp.full((4, 3), 1 / 3)
        with pytest.raises(ValueError, match="lower"):
            losses.project_simplex_box(v, jnp.zeros((4, 2)), 1.0)
        with pytest.raises(ValueError, match="upper"):
            losses.project_simplex_box(v, 0.0, jnp.ones((5, 3)))
        with pytest.raises(ValueError, match="method"):
            losses.project_simplex_box(v, 0.0, 1.0, method="quick")

    def test_box_infeasible_when_concrete(self):
        v = jnp.full((2, 3), 1 / 3)
        with pytest.raises(ValueError, match="sum\\(`lower`\\)"):
            losses.project_simplex_box(v, jnp.array([[0.1, 0.1, 0.1], [0.5, 0.5, 0.1]]), 1.0)
        with pytest.raises(ValueError, match="sum\\(`upper`\\)"):
            losses.project_simplex_box(v, 0.0, jnp.full((2, 3), 0.3))
        with pytest.raises(ValueError, match="exceeds"):
            losses.project_simplex_box(v, jnp.array([0.5, 0.0, 0.0]), jnp.array([0.4, 1, 1]))
        # Boxes that are feasible only up to float rounding are accepted.
        p = _random_probs(np.random.default_rng(8), (16, 50)).astype(np.float32)
        np.testing.assert_allclose(losses.project_simplex_box(p, p, p), p, atol=1e-6)
