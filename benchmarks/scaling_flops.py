"""FLOPs per example and parameter bytes of the models in docs/scaling.md, from XLA's cost model.

    python benchmarks/scaling_flops.py            # prints a markdown table, writes nothing

For each model: forward FLOPs (eval mode, as the frozen teacher runs inside the student
step), forward + backward FLOPs of a cross-entropy training step (the student, or the
teacher stage), and the parameter count (the gradient all-reduce moves 4 bytes each in
float32). Numbers come from `jax.jit(...).lower(...).cost_analysis()` on abstract inputs:
nothing is compiled or allocated, so BERT-base costs a few seconds on a laptop CPU. XLA
counts a multiply-add as 2 FLOPs. ResNet-50/18 are not in the registry (CIFAR families
only); docs/scaling.md uses published figures for them.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cud_jax import models
from cud_jax.train.state import split_model

BATCH = 8


def _abstract(create):
    model = nnx.eval_shape(create)
    return split_model(model)


def _flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def measure(name: str, create, inputs) -> dict:
    model_def, params, model_state = _abstract(create)
    labels = jax.ShapeDtypeStruct((inputs.shape[0],), jnp.int32)

    def forward(params, model_state, x):
        return model_def.apply(params, model_state, x, train=False)[0]

    def train_loss(params, model_state, x, y):
        logits, _ = model_def.apply(params, model_state, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    fwd = _flops(forward, params, model_state, inputs) / inputs.shape[0]
    fwd_bwd = _flops(jax.grad(train_loss), params, model_state, inputs, labels) / inputs.shape[0]
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    return {"model": name, "fwd": fwd, "fwd_bwd": fwd_bwd, "params": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq_len", type=int, default=64, help="tokens per text example")
    args = parser.parse_args()
    image = jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((BATCH, args.seq_len), jnp.int32)
    rows = []
    for name in ("resnet32x4", "resnet8x4"):
        rows.append(measure(name, lambda n=name: models.create_model(
            n, num_classes=100, rngs=nnx.Rngs(0)), image))
    for name, spec in (("BERT-base (12L-768)", "bert_small:L=12,H=768,A=12,I=3072"),
                       ("BERT 4L-256", "bert_small:L=4,H=256,A=4,I=1024")):
        rows.append(measure(name, lambda s=spec: models.create_text_model(
            s, num_classes=150, rngs=nnx.Rngs(0)), tokens))
    print("| model | input | fwd GFLOPs/ex | fwd+bwd GFLOPs/ex | bwd/fwd | params (M) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        what = "32x32x3" if r["model"].startswith("resnet") else f"{args.seq_len} tokens"
        print(f"| {r['model']} | {what} | {r['fwd'] / 1e9:.3f} | {r['fwd_bwd'] / 1e9:.3f} | "
              f"{(r['fwd_bwd'] - r['fwd']) / r['fwd']:.2f} | {r['params'] / 1e6:.2f} |")


if __name__ == "__main__":
    main()
