"""The layers import one way (README, "Architecture"): every `import gatfast...` in the
package, at module level or inside a function, is checked against the layer it sits in."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gatfast"

# What each layer may import from gatfast (besides itself). _version and the compiled
# _C sit below every layer.
ALLOWED = {
    "ops": set(),
    "gat": {"ops"},
    "attacks": {"ops"},
    "certify": {"ops"},
    "train": {"ops", "gat", "attacks", "certify"},
    "evaluation": {"ops", "gat", "attacks", "train", "certify"},
    "bench": {"ops", "gat", "attacks", "train"},
    "cli": {"ops", "gat", "attacks", "train", "evaluation", "bench", "certify"},
}
BELOW_ALL = {"_version", "_C"}
# The plain GAT step is the test oracle; only the benchmarks use it, as the baseline they time.
ORACLE_USERS = {"gat/reference.py": {"bench/step.py"}}


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return {"cli.py": "cli"}.get(rel.name)  # __init__, __main__ and _version stand above or below the layers


def gatfast_imports(path: Path):
    """(line, dotted module) of every gatfast import in the file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gatfast"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("gatfast"):
            if node.module == "gatfast":  # from gatfast import train, ops: each name is a module
                for alias in node.names:
                    yield node.lineno, f"gatfast.{alias.name}"
            else:
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_run_one_way(path):
    layer = layer_of(path)
    allowed = ALLOWED[layer] | BELOW_ALL | {layer}
    for line, module in gatfast_imports(path):
        parts = module.split(".")
        target = parts[1] if len(parts) > 1 else None
        assert target in allowed, f"{path.relative_to(PACKAGE)}:{line} imports {module} ({layer} may import " \
                                  f"{', '.join(sorted(ALLOWED[layer])) or 'no other layer'})"


def test_no_production_module_uses_the_gat_oracle():
    for path in MODULES:
        rel = str(path.relative_to(PACKAGE))
        for line, module in gatfast_imports(path):
            if module.startswith("gatfast.gat.reference") and rel != "gat/reference.py":
                assert rel in ORACLE_USERS["gat/reference.py"], f"{rel}:{line} imports the GAT test oracle"


def test_the_rule_would_catch_an_upward_import(tmp_path):
    bad = tmp_path / "upward.py"
    bad.write_text("from gatfast.train import load_run\n")
    assert [m for _, m in gatfast_imports(bad)] == ["gatfast.train.load_run"]
    assert "train" not in ALLOWED["attacks"]
