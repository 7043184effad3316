"""The package's layering (docs/architecture.md), checked on the source: every import under
src/tessera points down the layers, roles never import one another, no two modules import each
other (directly or round a longer loop), protocol stays pure, roles reach contracts only
through the chain wrappers, and no module or class outgrows what one reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tessera"

# Layer of each top-level part of the package, bottom (0) to top. docs/architecture.md.
LAYERS = {
    "errors": 0, "command_errors": 0, "files": 0, "logs": 0, "contracts": 0, "http_limits": 0,
    "http_deadline": 0,
    "protocol": 1,
    "chain": 2, "compute": 2,
    "provider": 3, "tenant": 3, "validator": 3, "explorer": 3, "facilitator": 3,
    "relayer": 3,
    "cli": 4, "demo": 4, "demo_cheater": 4, "demo_agent": 4, "demo_bridge": 4, "daemons": 4,
    "testing": 4, "agent": 4,
}
# Parts of the same layer that must not import each other (siblings are independent).
SIBLINGS = {2: {"chain", "compute"},
            3: {"provider", "tenant", "validator", "explorer", "facilitator", "relayer"}}
# Third-party modules that mean I/O or heavy compute: protocol (pure rules) imports none of them.
PROTOCOL_FORBIDDEN = {"torch", "numpy", "httpx", "requests", "web3", "sqlalchemy", "fastapi",
                      "uvicorn", "subprocess", "socket", "sqlite3", "shutil", "os"}
MAX_MODULE_LINES, MAX_CLASS_LINES = 500, 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def imports(module: str) -> set[str]:
    """Every tessera module `module` imports, at the top or inside a function."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from tessera.x import y` imports module tessera.x.y when y is a module
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "tessera" and n != module)
    return found


def third_party(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots - {"tessera"}


def test_every_part_has_a_layer():
    unplaced = sorted({part(m) for m in MODULES if m != "tessera"} - set(LAYERS))
    assert not unplaced, f"add these to LAYERS and docs/architecture.md: {unplaced}"


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in graph.items():
        here = part(module)
        for target in sorted(targets):
            there = part(target)
            if here == there or there == "":
                continue
            if LAYERS[there] > LAYERS[here]:
                problems.append(f"{module} imports {target}: a layer above it")
            elif LAYERS[there] == LAYERS[here] and {here, there} <= SIBLINGS.get(LAYERS[here], set()):
                problems.append(f"{module} imports {target}: siblings stay independent")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = {m: {t for t in imports(m) if t in MODULES} for m in MODULES}


def test_imports_point_down_the_layers():
    assert layering_problems(GRAPH) == []


def test_the_checks_catch_what_they_are_for():
    """The rules above fail on a bad graph: an upward import, a sibling import, a cycle."""
    bad = {"tessera.protocol.money": {"tessera.chain.client"},
           "tessera.tenant.flow": {"tessera.explorer.db"},
           "tessera.chain.a": {"tessera.chain.b"}, "tessera.chain.b": {"tessera.chain.a"}}
    problems = layering_problems(bad)
    assert any("a layer above" in p for p in problems)
    assert any("siblings" in p for p in problems)
    assert cycles(bad) == [["tessera.chain.a", "tessera.chain.b"]]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part(m) == "protocol"))
def test_protocol_is_pure(module):
    assert not third_party(module) & PROTOCOL_FORBIDDEN
    text = MODULES[module].read_text()
    for io_call in ("open(", ".read_text(", ".read_bytes(", ".write_text(", ".write_bytes("):
        assert io_call not in text, f"{module} does I/O ({io_call})"


def test_roles_use_the_contract_wrappers():
    """Outside chain/, nobody calls a contract's functions directly: one wrapper per contract
    (chain/contract.py) decodes structs by field name and explains refusals."""
    offenders = [m for m in MODULES if part(m) not in ("chain", "testing")
                 and ".functions." in MODULES[m].read_text()]
    assert offenders == []


def test_modules_and_classes_stay_small():
    big = []
    for module, path in MODULES.items():
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            big.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big.append(f"{module}.{node.name}: {size} lines")
    assert big == []


def test_exceptions_live_in_one_module():
    """tessera/errors.py holds every exception class (one place to look, as web3.exceptions)."""
    errors = {n.name for n in ast.parse(MODULES["tessera.errors"].read_text()).body
              if isinstance(n, ast.ClassDef)}
    roots = errors | {"Exception", "ValueError", "RuntimeError", "LookupError"}
    elsewhere = [f"{m}.{node.name}" for m, p in MODULES.items() if m != "tessera.errors"
                 for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ClassDef)
                 and any(isinstance(b, ast.Name) and b.id in roots for b in node.bases)]
    assert elsewhere == []


def test_every_http_server_stops_within_its_graceful_shutdown():
    """uvicorn waits for open connections for ever by default: one client that pipelined
    requests and never read the answers kept a provider or the explorer from exiting on SIGTERM
    (review 27). Every server this package starts passes `timeout_graceful_shutdown`."""
    calls = []
    for path in (SRC / "tessera").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "uvicorn" and \
                    node.func.attr in ("run", "Config"):
                calls.append((path.name, {k.arg for k in node.keywords}))
    assert len(calls) >= 5, calls            # provider, validator, explorer, inference, facilitator
    assert [name for name, keywords in calls if "timeout_graceful_shutdown" not in keywords] == []
