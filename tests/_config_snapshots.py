"""Snapshots of the resolved recipes in configs/, for tests/test_configs.py.

    python tests/_config_snapshots.py    # rewrites tests/data/config_snapshots.json

The fixture holds, for each config file, its default config in full (every field, flattened
to `a.b.c`, as `[value, type]`) and, for each argument string in CASES, only the fields that
differ from that default. The test resolves every case again and compares every field, so a
change to how a recipe is written cannot change what it resolves to without showing here.
"""

from __future__ import annotations

import json
import os
import sys

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This checkout's cud_jax (also when run as a script, whatever copy is installed).
sys.path.insert(0, REPO)
from cud_jax.configs import load_config_file  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "data", "config_snapshots.json")

_CIFAR = ["", "pair=wrn_40_2-wrn_16_2,method=kd", "pair=resnet32x4-shufflenetv2",
          "pair=vgg13-mobilenetv2,method=dkd,teacher_loss=ce", "pair=resnet56-resnet20,method=dkd",
          "pair=resnet32x4-shufflenetv1,teacher_loss=label_smoothing", "method=ce"]
_TEXT = ["", "offline=1", "student=6l,method=kd,teacher_loss=ce", "method=dkd",
         "offline=1,method=dkd", "student=4l_scratch", "offline=1,student=paraphrase_l3",
         "offline=true,student=minilm3,teacher_loss=focal", "student=bert:/tmp/my_bert",
         "offline=0,method=ce"]
#: Argument strings resolved per config file ("" is the default, `get_config(None)`).
CASES = {"quickstart": [""], "cifar100": _CIFAR, "cifar10": _CIFAR,
         **{name: _TEXT for name in ("clinc150", "banking77", "trec", "agnews", "massive")}}


def load(name: str, arg=None) -> ml_collections.ConfigDict:
    """`configs/<name>.py`'s `get_config(arg)`, loaded as the command line loads it."""
    return load_config_file(os.path.join(REPO, "configs", f"{name}.py"), arg)


def _leaf(value, kind) -> list:
    if isinstance(value, tuple):
        value = list(value)
    elif isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    return [value, kind.__name__]


def flatten(config, prefix: str = "") -> dict:
    """Every field of `config` as `{"a.b.c": [value, type name]}` (JSON-ready)."""
    out = {}
    for name in sorted(config.keys()):
        value = config[name]
        if isinstance(value, ml_collections.ConfigDict) and value.keys():
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            kind = config.get_type(name) if isinstance(config, ml_collections.ConfigDict) \
                else type(value)
            out[f"{prefix}{name}"] = _leaf(value, kind)
    return out


def resolve(name: str, arg: str) -> dict:
    return json.loads(json.dumps(flatten(load(name, arg or None))))


def snapshot() -> dict:
    """`{name: {"": full default, arg: {field: leaf, or None where the field is gone}}}`."""
    out = {}
    for name, args in CASES.items():
        default = resolve(name, "")
        out[name] = {"": default}
        for arg in args:
            if arg:
                flat = resolve(name, arg)
                out[name][arg] = {k: flat.get(k) for k in sorted(set(flat) | set(default))
                                  if flat.get(k) != default.get(k)}
    return out


def expected(snap: dict, name: str, arg: str) -> dict:
    """The full flattened config that `snap` records for `name` with `arg`."""
    full = dict(snap[name][""])
    for key, leaf in snap[name].get(arg, {}).items():
        if leaf is None:
            full.pop(key, None)
        else:
            full[key] = leaf
    return full


if __name__ == "__main__":
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    snap = snapshot()
    with open(FIXTURE, "w", encoding="utf-8") as f:  # one line a field, for readable diffs
        f.write("{\n" + ",\n".join(
            f"{json.dumps(name)}: {{\n" + ",\n".join(
                f"{json.dumps(arg)}: {{\n" + ",\n".join(
                    f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}"
                    for k, v in fields.items()) + "}" for arg, fields in cases.items()) + "}"
            for name, cases in snap.items()) + "}\n")
    print(f"wrote {FIXTURE}")
