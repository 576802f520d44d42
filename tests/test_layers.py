"""DESIGN.md's layer table, checked over the real imports (module level and inside functions alike):
`tui/`, `robot/` -> `knack/` -> `storage/` -> `collector/`, the storage rooms kept apart, no import loop,
and contract objects touched only inside the web3 ledger."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("knack", "collector", "storage", "robot", "tui")

# (importer prefix, project modules it may import). The most specific prefix applies.
ALLOWED = {
    "collector": ("collector",),
    "storage.content": ("storage.content", "storage.sqlite"),
    "storage.ledger": ("storage.ledger", "collector.identity"),  # a signing domain is the identity module's type
    "storage.outbox": ("storage.outbox", "storage.content", "storage.ledger", "storage.sqlite", "collector"),
    "storage.validator": ("storage", "collector"),
    "storage.sqlite": (),
    "storage": ("storage",),
    "knack": ("knack", "storage", "collector"),
    "robot": ("robot", "knack", "storage", "collector"),
    "tui": ("tui", "knack", "storage", "collector"),
}
# The command line is the composition root's entry, not a library: nothing imports it back.
NEVER = {"robot": ("knack.cli", "knack.commands"), "tui": ("knack.cli", "knack.commands")}
# The app shows what the session reports; it touches no hardware or network library itself.
THIRD_PARTY_NEVER = {"tui": ("cv2", "serial", "web3", "eth_account", "eth_tester", "ipfshttpclient", "onnxruntime")}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """Every module `name` imports (absolute, resolved to the deepest known module), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in known else base, node.lineno))
    return out


def rule_for(name: str, table: dict) -> tuple:
    best = max((p for p in table if name == p or name.startswith(p + ".")), key=len, default=None)
    return table.get(best, ())


def inside(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}, known


def test_every_import_between_layers_points_the_way_the_layer_table_says(graph):
    edges, known = graph
    wrong = []
    for name, imported in edges.items():
        for target, line in imported:
            if not inside(target, PACKAGES):
                continue
            if not inside(target, rule_for(name, ALLOWED)) or inside(target, rule_for(name, NEVER)):
                wrong.append(f"{known[name].relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports against DESIGN.md's layer table:\n" + "\n".join(wrong)


def test_the_app_imports_no_hardware_or_network_library(graph):
    edges, known = graph
    wrong = [
        f"{known[name].relative_to(ROOT)}:{line} imports {target}"
        for name, imported in edges.items()
        for target, line in imported
        if inside(target, rule_for(name, THIRD_PARTY_NEVER))
    ]
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_import_each_other_through_any_loop(graph):
    edges, _ = graph
    project = {n: {t for t, _ in imported if t in edges and t != n} for n, imported in edges.items()}
    # A package's __init__ that re-exports its own modules is one unit with them, not a loop.
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in project[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                loops.append(sorted(members))

    for node in project:
        if node not in index:
            visit(node)
    assert not loops, f"import loops: {loops}"


def test_only_the_web3_ledger_touches_contract_functions_and_events():
    allowed = {ROOT / "storage" / "ledger" / "web3_ledger.py"}
    contracts = ROOT / "storage" / "ledger" / "contracts"  # the contracts' own gas tooling
    wrong = []
    for path in modules().values():
        if path in allowed or contracts in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("functions", "events")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "ev"))
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The rules above would pass on an empty graph: show that a collector module importing storage is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from storage.outbox.states import Outbox\n")
    [(target, line)] = imports_of("collector.bad", bad, {"storage.outbox.states"})
    assert target == "storage.outbox.states" and line == 2
    assert not inside(target, rule_for("collector.bad", ALLOWED))
