"""Imports flow one way: data -> train -> evaluate -> report, over a foundation that imports none of them.

A unit is a subpackage of ift (``ift.train``) or one of its top-level modules (``ift.losses``). Every import counts,
function-level ones included (tests/pipeline/test_pipeline_deps.py's static reader), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

from pathlib import Path

from test_pipeline_deps import SRC, imported_modules

# Lower index = lower layer; a unit may import its own layer's units (without a cycle) and lower layers only.
LAYERS = (
    # the foundation: file and path helpers, the method registry and grid names, the loss maths, checkpoints
    {"ift", "ift.paths", "ift.io", "ift.numerics", "ift.methods", "ift.grid", "ift.logprobs", "ift.losses",
     "ift.checkpoints", "ift.generation", "ift.tracking", "ift.world", "ift.real_model"},
    {"ift.data"},
    {"ift.train", "ift.frozen_lake"},
    {"ift.evaluate"},
    {"ift.report"},
    {"ift.selection", "ift.fingerprint", "ift.bench", "ift.study"},  # applications that drive the layers below
)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def unit_edges(src: Path = SRC) -> dict[str, set[str]]:
    """unit -> the other units it imports, from every .py file under src/ift."""
    edges: dict[str, set[str]] = {}
    for path in sorted((src / "ift").rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts)
        package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
        here = unit_of(module.removesuffix(".__init__"))
        targets = {unit_of(name) for name in imported_modules(path, package)}
        edges.setdefault(here, set()).update(target for target in targets if target not in (here, "ift"))
    return edges


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"{unit} is in no layer of tests/pipeline/test_import_layers.py: place it")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the unit graph as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = "open"
        for target in sorted(edges.get(unit, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target] if target in path else [unit, target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[unit] = "done"
        return None

    for unit in sorted(edges):
        if unit not in state and (cycle := visit(unit, [unit])):
            return cycle
    return None


def test_every_unit_has_a_layer():
    for unit in unit_edges():
        layer_of(unit)


def test_no_import_cycle_between_units():
    cycle = find_cycle(unit_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_unit_imports_a_higher_layer():
    upward = [f"{unit} (layer {layer_of(unit)}) imports {target} (layer {layer_of(target)})"
              for unit, targets in unit_edges().items() for target in sorted(targets)
              if layer_of(target) > layer_of(unit)]
    assert not upward, "\n".join(upward)


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The graph reader sees a function-level import, and find_cycle reports the cycle it makes."""
    package = tmp_path / "ift"
    for unit, body in {"train": "def f():\n    from ift.evaluate import g\n", "evaluate": "from ift.train import f\n"}.items():
        (package / unit).mkdir(parents=True)
        (package / unit / "__init__.py").write_text(body)
    (package / "__init__.py").write_text("")
    edges = unit_edges(tmp_path)
    assert edges["ift.train"] == {"ift.evaluate"} and edges["ift.evaluate"] == {"ift.train"}
    assert find_cycle(edges) in (["ift.train", "ift.evaluate", "ift.train"], ["ift.evaluate", "ift.train", "ift.evaluate"])
    assert layer_of("ift.train") < layer_of("ift.evaluate")
