"""The import rules of docs/architecture.md, checked on the source (every import statement, also the
ones inside functions: a lazy import is still a dependency).

1. Layers: a module imports only its own layer and the layers below it (``LAYERS``, lowest first);
   every module of the package has a layer.
2. ``ocrstream.train`` is imported by nothing in the package but itself (bench/ and tests/ may).
3. A service's package (``services/<name>/``) imports no other service's package; only the shared
   modules (``services/runtime.py``, ``wiring.py``, ``serve.py``) sit between them.
4. No import cycles, between modules or between packages.
5. docs/architecture.md's picture of the layers shows exactly ``LAYERS``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# source folder -> the import name it is mapped to (setuptools package-dir in pyproject.toml)
ROOTS = {"ocrstream": "ocrstream", "services": "ocrstream.services", "kernels": "ocrstream.kernels"}

# Lowest first. An entry names a module or a package (all modules below it).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core",
        (
            "ocrstream",  # the package's own __init__
            "ocrstream.errors",
            "ocrstream.config",
            "ocrstream.messages",
            "ocrstream.layout",
            "ocrstream.raster",
            "ocrstream.guard",
            "ocrstream.textdist",
            "ocrstream.ink",
            "ocrstream.provenance",
            "ocrstream.telemetry",
            "ocrstream.bus",
            "ocrstream.cache",
            "ocrstream.store",
        ),
    ),
    ("model", ("ocrstream.model", "ocrstream.kernels")),
    ("data", ("ocrstream.data",)),
    (
        "library",
        (
            "ocrstream.validation",
            "ocrstream.compression",
            "ocrstream.serving",
            "ocrstream.cluster",
            "ocrstream.backends",
        ),
    ),
    ("training", ("ocrstream.train",)),
    ("services", ("ocrstream.services",)),
    ("pipeline", ("ocrstream.pipeline",)),
    ("entry", ("ocrstream.cli", "ocrstream.__main__")),
)
SERVICE_SHARED = ("runtime", "wiring", "serve")  # services/<these>.py


def module_files(repo: Path) -> dict[str, Path]:
    """Import name -> source file of every module of the package."""
    out = {}
    for folder, name in ROOTS.items():
        for path in sorted((repo / folder).rglob("*.py")):
            parts = list(path.relative_to(repo / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([name, *parts])] = path
    return out


def _owner(name: str, modules: Iterable[str]) -> str | None:
    """The module an imported name lives in (``pkg.mod.func`` -> ``pkg.mod``)."""
    known = set(modules)
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(repo: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    files = module_files(repo)
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                # "from pkg import mod" imports the module pkg.mod when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for n in names:
                if n == "ocrstream" or n.startswith("ocrstream."):
                    owner = _owner(n, files)
                    if owner is not None and owner != mod:
                        deps.add(owner)
        graph[mod] = deps
    return graph


def layer_of(mod: str) -> int | None:
    best, rank = -1, None
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            below = m != "ocrstream" and mod.startswith(m + ".")  # the root entry is its __init__ only
            if (mod == m or below) and len(m) > best:
                best, rank = len(m), i
    return rank


def package_of(mod: str) -> str:
    """The unit of package cycles: ``ocrstream.<x>``; for services ``ocrstream.services.<x>``, whose
    ``main.py`` (the process entry, through ``serve``/``wiring``) counts on its own."""
    parts = mod.split(".")
    if parts[:2] != ["ocrstream", "services"]:
        return ".".join(parts[:2])
    return mod if parts[-1] == "main" else ".".join(parts[:3])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []
    work: list = []

    def enter(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        work.append((v, iter(sorted(graph[v]))))

    for root in sorted(graph):
        if root not in index:
            enter(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:  # v roots a component: everything above it on the stack
                    comp = stack[stack.index(v) :]
                    del stack[stack.index(v) :]
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif w not in index and w in graph:
                enter(w)
            elif w in stack:
                low[v] = min(low[v], index[w])
    return out


def violations(repo: Path = REPO) -> list[str]:
    """Every broken rule, one line each (empty: the tree keeps the rules)."""
    graph = import_graph(repo)
    out = []
    for mod in sorted(graph):
        if layer_of(mod) is None:
            out.append(f"{mod}: in no layer (add it to LAYERS in tests/test_import_rules.py)")
    for mod, deps in sorted(graph.items()):
        mine = layer_of(mod)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{mod} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]}): upward")
            if dep.startswith("ocrstream.train") and not mod.startswith("ocrstream.train"):
                out.append(f"{mod} imports {dep}: only ocrstream.train, bench/ and tests/ may")
            if mod.startswith("ocrstream.services.") and dep.startswith("ocrstream.services."):
                a, b = mod.split(".")[2], dep.split(".")[2]
                if a != b and a not in SERVICE_SHARED and b not in SERVICE_SHARED:
                    out.append(f"{mod} imports {dep}: one service into another")
    for comp in cycles(graph):
        out.append(f"import cycle between modules: {' <-> '.join(comp)}")
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        packages.setdefault(package_of(mod), set()).update(package_of(d) for d in deps)
    for p, deps in packages.items():
        deps.discard(p)
    for comp in cycles(packages):
        out.append(f"import cycle between packages: {' <-> '.join(comp)}")
    return out


def test_the_tree_keeps_the_import_rules():
    found = violations()
    assert not found, "\n".join(found)


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_checker_sees_lazy_relative_and_from_imports(tmp_path):
    """Each rule fires on a small tree that breaks it (the checker itself can fail)."""
    files = {
        "__init__.py": "",
        "errors.py": "def late():\n    from ocrstream.cli import main  # lazy, upward\n",
        "cli/__init__.py": "from ocrstream.train.loop import run\n",
        "train/__init__.py": "",
        "train/loop.py": "from ..model import deepseek_ocr\n",
        "model/__init__.py": "",
        "model/deepseek_ocr.py": "from . import config\n",
        "model/config.py": "from ocrstream.model import deepseek_ocr\n",
        "compression/__init__.py": "",
        "compression/curve.py": "from ocrstream.backends import pages\n",
        "backends/__init__.py": "",
        "backends/pages.py": "def f():\n    import ocrstream.compression.curve\n",
        "newthing.py": "",
    }
    _write_tree(tmp_path / "ocrstream", files)
    services = {
        "__init__.py": "",
        "wiring.py": "from ocrstream.services.decoder import handler\n",
        "decoder/__init__.py": "",
        "decoder/handler.py": "from ocrstream.services.encoder.handler import encode_pages\n",
        "encoder/__init__.py": "",
        "encoder/handler.py": "from ocrstream.services.runtime import Worker\n",
        "runtime.py": "",
    }
    _write_tree(tmp_path / "services", services)
    (tmp_path / "kernels").mkdir()
    found = "\n".join(violations(tmp_path))
    assert "ocrstream.errors (core) imports ocrstream.cli (entry): upward" in found
    assert "ocrstream.cli imports ocrstream.train.loop: only ocrstream.train" in found
    assert (
        "ocrstream.services.decoder.handler imports ocrstream.services.encoder.handler: one service" in found
    )
    assert "ocrstream.services.wiring imports" not in found  # the shared modules may
    assert "ocrstream.model.config <-> ocrstream.model.deepseek_ocr" in found
    assert "between modules: ocrstream.backends.pages <-> ocrstream.compression.curve" in found
    assert "between packages: ocrstream.backends <-> ocrstream.compression" in found
    assert "ocrstream.newthing: in no layer" in found
    assert "ocrstream.train.loop imports" not in found  # training may import the model


def docs_layers(text: str) -> list[tuple[str, set[str]]]:
    """The layer picture of docs/architecture.md ("Who may import whom"), top layer first."""
    block = text.split("## Who may import whom", 1)[1].split("```", 2)[1]
    layers: list[tuple[str, str]] = []
    for line in block.splitlines():
        if re.match(r" ?[a-z]", line):  # a layer's name starts its line; its modules may run on
            name, _, rest = line.strip().partition(" ")
            layers.append((name, rest))
        elif layers:
            layers[-1] = (layers[-1][0], layers[-1][1] + " " + line)
    out = []
    for name, body in layers:
        mods = {
            f"ocrstream.{m.strip()}"
            for group in re.findall(r"ocrstream\.\{([^}]*)\}", body)
            for m in group.split(",")
        }
        mods |= set(re.findall(r"ocrstream(?:\.[a-z_]+)+", re.sub(r"ocrstream\.\{[^}]*\}", "", body)))
        out.append((name, mods))
    return out


def test_the_architecture_picture_shows_these_layers():
    shown = docs_layers((REPO / "docs" / "architecture.md").read_text())
    want = [
        (name, {m for m in members if m != "ocrstream" and not m.startswith("ocrstream.__")})
        for name, members in reversed(LAYERS)
    ]
    assert shown == want
