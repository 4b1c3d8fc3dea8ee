"""Functional train state around an NNX model.

The hot steps are pure functions of arrays: the model is split once into a static graph
definition and two pytrees, its parameters (`nnx.Param`) and everything else it carries
(BatchNorm statistics, dropout RNG counters). Training and evaluation use two graph
definitions of the same module (BatchNorm on batch vs running statistics, dropout on vs
off), so the mode is decided at trace time, not by flags inside the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, so it can be jitted and saved."""

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static halves of a split NNX model: one graph definition per mode."""

    train_graph: Any
    eval_graph: Any

    def apply(self, params, model_state, images, *, train: bool):
        """Runs the model; returns float32 logits and the updated non-parameter state."""
        # copy=True: fresh Variables owned by the current trace (BatchNorm mutates them under
        # jax.grad, a deeper trace than the one that unflattened the state pytrees).
        model = nnx.merge(self.train_graph if train else self.eval_graph, params, model_state,
                          copy=True)
        logits = model(images)
        _, _, new_state = nnx.split(model, nnx.Param, ...)
        return logits.astype(jnp.float32), new_state


def split_model(model: nnx.Module) -> tuple[ModelDef, Any, Any]:
    """Splits an NNX module into (ModelDef, params, model_state)."""
    model.eval()
    eval_graph, _, _ = nnx.split(model, nnx.Param, ...)
    model.train()
    train_graph, params, model_state = nnx.split(model, nnx.Param, ...)
    return ModelDef(train_graph, eval_graph), params, model_state


def create_train_state(params, model_state, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 with the optimiser initialised on `params`."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params))

