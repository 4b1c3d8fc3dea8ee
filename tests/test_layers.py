"""The package's import graph points downward (DESIGN.md's layer list).

Every `cud_jax` import of every module is read with `ast` (top-level and inside functions),
so a lazy import cannot hide an upward dependency.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cud_jax"

#: Bottom to top: a module may import its own package and any package of a lower layer.
LAYERS = {
    "errors": 0, "package_paths": 0,
    "losses": 1,
    "metrics": 2,
    "models": 3,
    "data": 4,
    "parallel": 5,
    "train": 6,
    "evaluate": 7,
    # The run itself and the entry points: may import anything below.
    "pipeline": 8, "sweep_pipeline": 8, "main": 8, "compare": 8, "configs": 8,
    "config_check": 8,
    # Tools beside the run: PyTorch checkpoints in, Hugging Face folders out.
    "interop": 8, "convert": 8,
}
#: Imports that the layer order allows but the design rules out.
FORBIDDEN = {
    ("data", "models"),  # data sources know nothing of models
    ("evaluate", "train.loop"),  # evaluation never drives training
    ("evaluate", "train.pipeline"),
}


def _unit(module: str) -> str:
    """`cud_jax.train.loop` -> `train`; `cud_jax` alone -> `` (the package docstring)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every `cud_jax...` import in a file; `from cud_jax.a import b`
    gives `cud_jax.a.b` (b may be a module or a name in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("cud_jax")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "cud_jax" or node.module.startswith("cud_jax.")):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def upward_imports(package: pathlib.Path = PACKAGE) -> list[str]:
    """Every import from a module into a higher layer (or a forbidden one), as messages."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts)
        unit = _unit(module)
        if unit == "__init__" or unit == "":
            continue
        if unit not in LAYERS:
            problems.append(f"{module}: not in the layer list of tests/test_layers.py")
            continue
        for line, target in _imports(path):
            other = _unit(target)
            if other in ("", unit):
                continue
            if other not in LAYERS:
                problems.append(f"{module}:{line} imports {target}, which has no layer")
            elif LAYERS[other] > LAYERS[unit]:
                problems.append(f"{module}:{line} imports {target} (layer {LAYERS[other]}) "
                                f"from layer {LAYERS[unit]}")
            inner = ".".join(target.split(".")[1:3])
            if (unit, other) in FORBIDDEN or (unit, inner) in FORBIDDEN:
                problems.append(f"{module}:{line} imports {target}, which the design forbids")
    return problems


def test_no_upward_imports():
    assert upward_imports() == []


def test_checker_sees_an_upward_import(tmp_path):
    """The check itself: a lazy import of the trainer from losses is reported."""
    fake = tmp_path / "cud_jax"
    (fake / "losses").mkdir(parents=True)
    (fake / "data").mkdir()
    (fake / "losses" / "bad.py").write_text(
        "def f():\n    from cud_jax.train import loop\n    return loop\n")
    (fake / "data" / "bad.py").write_text("from cud_jax import models\n")
    problems = upward_imports(fake)
    assert len(problems) == 2
    assert "cud_jax.losses.bad:2 imports cud_jax.train.loop" in problems[1]
    assert "design forbids" in problems[0]


@pytest.mark.parametrize("package", ["losses", "metrics"])
def test_bottom_layers_import_without_the_trainer(package):
    """`from cud_jax import losses` users never pay for (or need) the trainer's imports."""
    for path in (PACKAGE / package).rglob("*.py"):
        for _, target in _imports(path):
            assert _unit(target) in ("losses", "metrics", "errors"), (path, target)
