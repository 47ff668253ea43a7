"""The layout rules of docs/architecture.md, checked on every run: imports flow one way, no
import cycles (imports inside functions count), no module past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("release_contract", "compiler", "registry", "edge_agent")
MAX_LINES = 400

#: package prefix -> prefixes it must never import
FORBIDDEN = {
    "release_contract": ("compiler", "registry", "edge_agent"),
    "compiler": ("registry", "edge_agent"),
    "registry": ("edge_agent", "compiler"),
    "edge_agent": ("compiler", "registry"),
    "edge_agent.inference": ("edge_agent.publishing", "edge_agent.updating", "edge_agent.service", "edge_agent.cli"),
    "edge_agent.publishing": ("edge_agent.updating", "edge_agent.service", "edge_agent.cli"),
    "edge_agent.updating": ("edge_agent.service", "edge_agent.cli"),
    "edge_agent.capture": ("edge_agent.publishing", "edge_agent.updating", "edge_agent.service", "edge_agent.cli"),
}


def modules() -> Dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    """Project modules ``name`` imports anywhere in its file (function bodies included)."""
    out: Set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def graph() -> Dict[str, Set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_imports_follow_the_one_way_dependency_rule() -> None:
    bad = [
        f"{m} imports {t}"
        for m, targets in graph().items()
        for t in targets
        for prefix, banned in FORBIDDEN.items()
        if (m == prefix or m.startswith(prefix + ".")) and any(t == b or t.startswith(b + ".") for b in banned)
    ]
    assert bad == []


def test_there_is_no_import_cycle_even_through_function_level_imports() -> None:
    edges = graph()
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_no_module_is_longer_than_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from release_contract import files\n")
    known = {"m": module, "release_contract.files": module}
    assert imports_of("m", module, known) == {"release_contract.files"}
