"""Compares two `report.json` files value by value (the redesign's equivalence check).

    python benchmarks/compare_reports.py BEFORE/report.json AFTER/report.json

Prints every leaf that differs, with NLL fields (any key containing `nll`) listed apart:
the reports compute NLL from logits since the redesign, so those are expected to move
where the old float32-probability NLL was inexact. Fields only the second report has (new
fields) are listed apart too. The `environment` block (versions, devices, time of the run)
is skipped. Exit status 0 when no field of the first report differs outside NLL.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

SKIPPED = ("environment",)


def flatten(tree, prefix: str = "") -> dict:
    """`{dotted.path: leaf}` of a JSON tree (list items by index)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare(before: dict, after: dict) -> tuple[list, list, list, int]:
    """(differences outside NLL, NLL differences, new fields, leaves compared); each entry
    is `(path, before, after)`, with `<missing>` for a leaf only one side has."""
    a = {k: v for k, v in flatten(before).items() if k.split(".")[0] not in SKIPPED}
    b = {k: v for k, v in flatten(after).items() if k.split(".")[0] not in SKIPPED}
    other, nll, added = [], [], []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, "<missing>"), b.get(path, "<missing>")
        if path not in a:
            added.append((path, va, vb))
        elif not _same(va, vb):
            (nll if "nll" in path.split(".")[-1] else other).append((path, va, vb))
    return other, nll, added, len(a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    args = parser.parse_args()
    with open(args.before, encoding="utf-8") as f:
        before = json.load(f)
    with open(args.after, encoding="utf-8") as f:
        after = json.load(f)
    other, nll, added, count = compare(before, after)
    print(f"{count} leaves of {args.before} compared (environment skipped).")
    print(f"Differences outside NLL fields: {len(other)}")
    for path, va, vb in other:
        print(f"  {path}: {va!r} -> {vb!r}")
    print(f"NLL fields that differ: {len(nll)}")
    for path, va, vb in nll:
        print(f"  {path}: {va!r} -> {vb!r}")
    print(f"New fields (only in {args.after}): {len(added)}")
    for path, _, vb in added:
        print(f"  {path}: {vb!r}")
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main())
