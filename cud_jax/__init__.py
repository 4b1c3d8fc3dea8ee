"""cud_jax: Calibrated Uncertainty Distillation in JAX/Flax.

The bottom layers import on their own:

    from cud_jax import losses, metrics
"""

__version__ = "0.1.0"
