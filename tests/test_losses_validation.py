"""Value checks of the library (issue 14's table, library rows): eager validation of
probabilities and temperatures, and the opt-in checkify mode under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from cud_jax import losses, metrics

LOGITS = jnp.array([[2.0, 1.0, -1.0], [0.5, 3.0, 1.0], [1.0, 0.0, 4.0], [0.0, 2.0, 0.5]])
LABELS = jnp.array([0, 1, 2, 0])
PROBS = jax.nn.softmax(LOGITS, axis=-1)


# ------------------------------------------------------------- eager: table row 4
def test_wclip_rejects_rows_that_do_not_sum_to_one():
    three = jnp.ones((4, 3))  # entries in [0, 1], rows summing to 3
    with pytest.raises(ValueError, match=r"rows must sum to 1.*\[3, 3\]"):
        losses.wclip(three, LABELS)
    with pytest.raises(ValueError, match="must sum to 1"):
        losses.wclip_stats(np.asarray(three), np.asarray(LABELS))


def test_kd_loss_rejects_teacher_logits_and_names_the_fix():
    for fn in (lambda t: losses.kd_loss(LOGITS, t, temperature=2.0),
               lambda t: losses.dkd_loss(LOGITS, t, LABELS, temperature=2.0),
               lambda t: losses.cud_student_loss(LOGITS, t, LABELS, temperature=2.0)):
        with pytest.raises(ValueError, match=r"teacher_probs.*pass softmax\(logits\)"):
            fn(LOGITS)
    # The same logits as probabilities are accepted.
    assert np.isfinite(losses.kd_loss(LOGITS, PROBS, temperature=2.0)).all()


@pytest.mark.parametrize("fn", [metrics.ece, metrics.mce, metrics.adaptive_ece,
                                metrics.classwise_ece, metrics.nll, metrics.brier])
def test_probability_metrics_reject_logits(fn):
    with pytest.raises(ValueError, match=r"pass softmax\(logits\)"):
        fn(np.asarray(LOGITS), np.asarray(LABELS))
    assert np.isfinite(fn(PROBS, LABELS)).all()


def test_other_probability_inputs_are_checked():
    with pytest.raises(ValueError, match="student_probs"):
        metrics.teacher_student_kl(PROBS, LOGITS)
    with pytest.raises(ValueError, match="probs"):
        metrics.max_softmax_prob(LOGITS)
    with pytest.raises(ValueError, match="probs"):
        losses.probs_entropy(PROBS / 2)
    with pytest.raises(ValueError, match="NaN"):
        metrics.ece(PROBS.at[1, 0].set(jnp.nan), LABELS)


@pytest.mark.parametrize("temperature", [np.float32(-1.0), np.array(-2.0), jnp.array(-0.5),
                                         np.float64(0.0), float("nan"), np.array([-1.0])])
def test_any_concrete_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_loss(LOGITS, PROBS, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        losses.cud_student_loss(LOGITS, PROBS, LABELS, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        losses.temperature_scale(LOGITS, temperature)


def test_tolerance_follows_the_input_dtype_and_masks_exempt_padding():
    # A bfloat16 softmax sums to 1 only within a few bfloat16 ulps: still accepted.
    bf16 = jax.nn.softmax(jnp.asarray(np.random.default_rng(0).normal(size=(64, 77)) * 3,
                                      jnp.bfloat16), axis=-1)
    assert np.isfinite(metrics.ece(bf16, jnp.zeros(64, jnp.int32)))
    # Padded rows (zeros, label -1) are fine when masked out, rejected when kept.
    padded = np.concatenate([np.asarray(PROBS), np.zeros((2, 3), np.float32)])
    labels = np.concatenate([np.asarray(LABELS), [-1, -1]])
    mask = np.arange(6) < 4
    acc = metrics.CalibrationAccumulator.empty(3).update(padded, labels, mask)
    np.testing.assert_allclose(acc.result()["ece"], metrics.ece(PROBS, LABELS), rtol=1e-6)
    with pytest.raises(ValueError, match="must sum to 1"):
        metrics.CalibrationAccumulator.empty(3).update(padded, np.maximum(labels, 0))


# ------------------------------------------------------ under jit: table row 5
def test_jit_skips_value_checks_without_a_device_transfer():
    # The trainer's step calls these under jit: no check may read values back to the host.
    step = jax.jit(lambda z, p, y: losses.cud_student_loss(z, p, y, temperature=2.0).mean()
                   + metrics.ece(p, y))
    with jax.transfer_guard_device_to_host("disallow"):
        out = step(LOGITS, PROBS, LABELS)
    assert np.isfinite(float(out))


def test_checked_raises_under_jit_on_out_of_range_labels():
    bad = jnp.array([0, 1, 7, 0])
    # Without checks, jit silently returns a plausible number (the 0.076).
    assert np.isfinite(jax.jit(metrics.ece, static_argnames="num_bins")(PROBS, bad))
    ece = losses.checked(metrics.ece, static_argnames="num_bins")
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels.*\[0, 3\).*7"):
        ece(PROBS, bad, num_bins=10)
    with pytest.raises(checkify.JaxRuntimeError, match="labels"):
        losses.checked(losses.cross_entropy)(LOGITS, bad)
    np.testing.assert_allclose(ece(PROBS, LABELS, num_bins=10),
                               metrics.ece(PROBS, LABELS, num_bins=10), rtol=1e-6)


def test_checked_raises_under_jit_on_nan_and_non_simplex_inputs():
    kd = losses.checked(losses.kd_loss)
    with pytest.raises(checkify.JaxRuntimeError, match=r"pass softmax\(logits\)"):
        kd(LOGITS, LOGITS, temperature=2.0)
    with pytest.raises(checkify.JaxRuntimeError, match="sum to 1"):
        losses.checked(losses.wclip)(jnp.ones((4, 3)), LABELS)
    with pytest.raises(checkify.JaxRuntimeError, match="NaN"):
        kd(LOGITS.at[0, 0].set(jnp.nan), PROBS, temperature=2.0)
    with pytest.raises(checkify.JaxRuntimeError, match="temperature"):
        kd(LOGITS, PROBS, temperature=jnp.float32(-1.0))
    np.testing.assert_allclose(kd(0.5 * LOGITS, PROBS, temperature=2.0),
                               losses.kd_loss(0.5 * LOGITS, PROBS, temperature=2.0), rtol=1e-5)


def test_checked_covers_a_whole_step_and_respects_masks():
    def step(z, p, y, mask):
        acc = metrics.CalibrationAccumulator.empty(3).update(p, y, mask)
        loss = losses.cud_student_loss(z, p, y, temperature=2.0)
        return jnp.sum(jnp.where(mask, loss, 0.0)), acc.bin_count

    padded_p = jnp.concatenate([PROBS, jnp.zeros((2, 3))])
    padded_z = jnp.concatenate([LOGITS, jnp.zeros((2, 3))])
    mask = jnp.arange(6) < 4
    checked_step = losses.checked(step)
    labels = jnp.array([0, 1, 2, 0, -1, -1])
    # The accumulator exempts the masked padding; the loss does not take a mask, so its
    # teacher_probs check sees the all-zero padded rows.
    with pytest.raises(checkify.JaxRuntimeError, match="teacher_probs"):
        checked_step(padded_z, padded_p, labels, mask)
    with pytest.raises(checkify.JaxRuntimeError, match="labels"):
        checked_step(LOGITS, PROBS, LABELS.at[0].set(3), jnp.ones(4, bool))
    loss, count = checked_step(LOGITS, PROBS, LABELS, jnp.ones(4, bool))
    assert int(count.sum()) == 4 and np.isfinite(loss)
