"""The layering of docs/architecture.md, checked on the source: the grid core imports no
backend, the GPU engine nothing of the CPU engine or of the API layer, no module reaches into
another's private attributes, the library holds no test-only code, and every decision the code
cites by name is one the document has."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIMCORE = ROOT / "simcore"
DOC = ROOT / "docs" / "architecture.md"


def _imports(path):
    """The modules ``path`` imports, as absolute dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("module,forbidden", [
    ("grid/core.py", ("simcore.grid.cpu", "simcore.grid.cpu_gemm", "simcore.grid.cuda", "simcore.mlp")),
    ("grid/cuda.py", ("simcore.grid.cpu", "simcore.grid.cpu_gemm", "simcore.mlp")),
    ("grid/cpu.py", ("simcore.grid.cuda", "simcore.mlp")),
    ("grid/cpu_gemm.py", ("simcore.grid.cuda", "simcore.mlp")),
    ("grid/result.py", ("simcore.grid.cpu", "simcore.grid.cpu_gemm", "simcore.grid.cuda")),
    ("layout.py", ("simcore.",)),
])
def test_layers_import_only_downwards(module, forbidden):
    bad = sorted(i for i in _imports(SIMCORE / module) if any(i == f or i.startswith(f + ".")
                                                                or (f.endswith(".") and i.startswith(f))
                                                                for f in forbidden))
    assert not bad, f"simcore/{module} imports {bad}"


def _own_private_names(tree):
    """Private names a module defines itself: its functions and classes, class attributes and
    attributes it sets on ``self``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_")}


def test_no_module_uses_another_modules_private_attributes():
    """``obj._name`` only for a name the module defines itself (numba's cache locators and
    linking module are the exceptions: simcore extends the first, see simcore/_cache.py, and
    marks its formulas alwaysinline in the second, see simcore/_jit.py)."""
    bad = []
    for path in sorted(list(SIMCORE.rglob("*.py")) + list((ROOT / "studies").rglob("*.py"))):
        tree = ast.parse(path.read_text())
        own = _own_private_names(tree) | {"_locator_classes", "_get_module_for_linking"}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr not in own):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["grid/cuda.py", "grid/core.py", "layout.py"])
def test_the_library_holds_no_test_only_code(module):
    """Every public function of the engine's modules is called by the library itself (the GPU
    building blocks that only the tests drive live in tests/cuda_blocks.py)."""
    tree = ast.parse((SIMCORE / module).read_text())
    public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    rest = "\n".join(p.read_text() for p in SIMCORE.rglob("*.py") if p != SIMCORE / module)
    own = (SIMCORE / module).read_text()
    unused = [name for name in public
              if not re.search(rf"\b{name}\b", rest) and len(re.findall(rf"\b{name}\b", own)) < 2]
    assert not unused, f"simcore/{module}: {unused} are called by nothing in simcore"


def test_the_studies_import():
    """A moved constant breaks ``studies`` at import; say so here rather than in every study test."""
    import importlib
    for path in sorted((ROOT / "studies").glob("[!_]*.py")):
        importlib.import_module(f"studies.{path.stem}")


def test_decisions_are_cited_by_name_and_exist():
    doc = DOC.read_text()
    names = set(re.findall(r"^\*\*(.+?)\.\*\*", doc, re.M))
    assert len(names) >= 10, names
    cited = set()
    for path in SIMCORE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bdecision \d", text), f"{path}: cite decisions by name"
        for m in re.finditer(r"docs/architecture\.md,\s+\*([^*]+)\*", text):
            cited.add(re.sub(r"\s+", " ", m.group(1)))
    assert cited, "the code cites no decision"
    assert cited <= names, f"cited but not in docs/architecture.md: {cited - names}"
