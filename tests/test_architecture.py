"""The layering, as a test: apps import only the apps below them, and no module imports itself back through a
chain of imports — function-level imports included (they are imports all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["common", "metering", "catalog", "customers", "credits", "invoicing", "notifications"]
CONFIGURATION = "billing_site"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in [*LAYERS, CONFIGURATION]:
        for path in (ROOT / package).rglob("*.py") if (ROOT / package).is_dir() else []:
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules this module imports, anywhere in its body (resolving relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_apps_import_only_the_layers_below_them_and_never_the_configuration():
    problems = []
    for module, targets in _graph().items():
        app = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if app == CONFIGURATION or other == app:
                continue
            if other == CONFIGURATION:
                problems.append(f"{module} imports the configuration ({target})")
            elif LAYERS.index(other) > LAYERS.index(app):
                problems.append(f"{module} imports upward: {target}")
    assert not problems, "\n".join(sorted(problems))


def test_no_import_cycles_function_level_imports_included():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    # A package's __init__ that re-exports its own modules is not a cycle of the design; anything else is.
    real = [c for c in cycles if not all(m.startswith(min(c, key=len) + ".") or m == min(c, key=len) for m in c)]
    assert not real, "\n".join(" ⇄ ".join(c) for c in real)


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    source = "from .services import x\n\ndef f():\n    from invoicing.models import Invoice\n"
    path = tmp_path / "_probe_module.py"
    path.write_text(source)
    known = {"customers._probe_module", "customers.services", "invoicing.models"}
    assert _imports("customers._probe_module", path, known) == {"customers.services", "invoicing.models"}


def test_no_merge_conflict_markers_are_left_in_the_repository():
    """A merge once left ``<<<<<<<``/``>>>>>>>`` lines in the README's webhook table; catch any such leftover in the
    project's own text files."""
    suffixes = {".py", ".md", ".html", ".txt", ".yaml", ".yml", ".toml", ".cfg", ".css", ".js", ".sh", ""}
    skipped = {".git", ".venv", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache", "staticfiles"}
    markers = ("<<<<<<< ", ">>>>>>> ", "=======\n")
    found = []
    for path in ROOT.rglob("*"):
        if any(part in skipped for part in path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix not in suffixes or path.stat().st_size > 2_000_000:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(lines, 1):
            if line.startswith(markers[:2]) or (line == markers[2] and any(
                    other.startswith(markers[:2]) for other in lines[max(0, number - 40):number + 40])):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    assert found == []
