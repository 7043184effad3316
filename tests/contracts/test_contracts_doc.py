"""docs/contracts.md lists every external function of every deployed contract, with who may
call it, and nothing that is not there.

The doc is parsed as markdown: a `## ` heading whose first word is a contract name (`## Market`,
`## PaymentToken (TUSD)`) opens that contract's section, up to the next `## ` heading; in it,
every table whose header's first cell is `function` lists one function per row, named in
backticks in the first cell (`withdraw(lease_id)`), with the columns function | who may call
it | what it does | guard notes. The set of names must equal the contract's compiled ABI
functions (state-changing and views, snekmate's exported ones included).

How a doc could still cheat, and what stops it:
- naming a function only in prose, or in another contract's table: only the first cell of a
  `function` table inside the contract's own section counts (`test_parser_*` below);
- listing a state-changing function as a view (to skip saying who may call it), or a view as
  guarded: the "who" cell of a view must be exactly "anyone (view)", and of nothing else;
- writing "anyone" for a guarded function: the contract's source is scanned for the usual
  access asserts (`msg.sender == ownable.owner`, `is_slasher[msg.sender]`, `msg.sender ==
  market`, ...) and the "who" cell must name that role; snekmate's exported functions carry
  their role in SNEKMATE_GUARDS (read from snekmate 0.1.2's source). A guard written in a way
  the scan does not know is not checked: the scan is a floor, not a proof.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera.chain.compiler import CONTRACT_NAMES, CONTRACTS_DIR, compile_contract

DOC = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
VIEW = "anyone (view)"

# snekmate functions a contract exports without defining them: the role their asserts need
# (ownable._check_owner, erc20.is_minter, access_control._check_role, timelock's self-call).
SNEKMATE_GUARDS = {
    "transfer_ownership": ("owner",),
    "renounce_ownership": ("owner",),
    "set_minter": ("owner",),
    "mint": ("minter",),
    "schedule": ("proposer",),
    "schedule_batch": ("proposer",),
    "cancel": ("canceller",),
    "execute": ("executor",),
    "execute_batch": ("executor",),
    "update_delay": ("timelock",),
    "grantRole": ("admin",),
    "revokeRole": ("admin",),
    "set_role_admin": ("admin",),
}

# An access check in a contract's own source (an assert, or the line that reads what an assert
# then checks), and the word the "who" cell must then contain.
SOURCE_GUARDS = (
    (re.compile(r"msg\.sender == ownable\.owner"), "owner"),
    (re.compile(r"is_slasher\[msg\.sender\]"), "slasher"),
    (re.compile(r"msg\.sender == market\b"), "Market"),
    (re.compile(r"msg\.sender == self\.settlement\b"), "Settlement"),
    (re.compile(r"msg\.sender == [\w.]*tenant\b"), "tenant"),
    (re.compile(r"msg\.sender == [\w.]*provider\b"), "provider"),
    (re.compile(r"is_validator\(msg\.sender\)"), "validator"),
    (re.compile(r"weight_of\(msg\.sender\)"), "validator"),
    (re.compile(r"(is|_check)_registered\(msg\.sender\)"), "registered"),
)


@dataclass(frozen=True)
class Row:
    function: str
    who: str
    does: str
    guard: str
    line: int


def _cells(line: str) -> list[str]:
    # split on unescaped pipes; drop the empty cells outside the leading and trailing pipe
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [part.strip() for part in parts[1:-1]]


def parse_doc(text: str, contracts) -> dict[str, list[Row]]:
    """Every `function` table row of every contract section, by contract."""
    tables: dict[str, list[Row]] = {}
    current: str | None = None
    header: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            words = line[3:].split()
            current = words[0] if words and words[0] in contracts else None
            if current is not None:
                tables.setdefault(current, [])
            header = None
            continue
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
            continue  # the separator row
        if current is None or not header or header[0].lower() != "function":
            continue
        assert len(cells) == 4, f"docs/contracts.md:{number}: a function row needs 4 cells, has {len(cells)}"
        names = re.findall(r"`([^`]+)`", cells[0])
        assert len(names) == 1, f"docs/contracts.md:{number}: name exactly one function per row"
        match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", names[0])
        assert match, f"docs/contracts.md:{number}: {names[0]!r} is not a function name"
        tables[current].append(Row(match.group(0), cells[1], cells[2], cells[3], number))
    return tables


def source_guards(name: str) -> dict[str, set[str]]:
    """External functions defined in `<name>.vy`, each with the roles its asserts name."""
    guards: dict[str, set[str]] = {}
    lines = (CONTRACTS_DIR / f"{name}.vy").read_text().splitlines()
    current: str | None = None
    external = False
    for line in lines:
        if line.startswith("@"):
            external = external or line.startswith("@external")
            current = None
            continue
        match = re.match(r"def (\w+)\(", line)
        if match:
            current = match.group(1) if external else None
            external = False
            if current:
                guards[current] = set()
            continue
        if line and not line[0].isspace() and not line.startswith(")"):
            current, external = None, False
            continue
        if current:
            guards[current] |= {word for pattern, word in SOURCE_GUARDS if pattern.search(line)}
    return guards


@pytest.fixture(scope="module")
def doc_tables() -> dict[str, list[Row]]:
    return parse_doc(DOC.read_text(), set(CONTRACT_NAMES))


@pytest.fixture(scope="module", params=CONTRACT_NAMES)
def contract(request):
    name = request.param
    abi = compile_contract(name).abi
    mutability = {item["name"]: item["stateMutability"] for item in abi if item["type"] == "function"}
    return name, mutability


def test_every_deployed_contract_has_a_function_table(doc_tables):
    missing = [name for name in CONTRACT_NAMES if not doc_tables.get(name)]
    assert not missing, f"docs/contracts.md has no `## <name>` section with a function table for {missing}"


def test_table_lists_exactly_the_abi(contract, doc_tables):
    name, mutability = contract
    documented = [row.function for row in doc_tables.get(name, [])]
    twice = sorted({fn for fn in documented if documented.count(fn) > 1})
    assert not twice, f"{name}: listed twice in docs/contracts.md: {twice}"
    missing = sorted(set(mutability) - set(documented))
    extra = sorted(set(documented) - set(mutability))
    assert not missing, f"{name}: ABI functions missing from docs/contracts.md: {missing}"
    assert not extra, f"{name}: docs/contracts.md lists functions the ABI does not have: {extra}"


def test_views_and_only_views_read_anyone_view(contract, doc_tables):
    name, mutability = contract
    for row in doc_tables.get(name, []):
        if row.function not in mutability:
            continue  # reported by test_table_lists_exactly_the_abi
        is_view = mutability[row.function] in ("view", "pure")
        where = f"docs/contracts.md:{row.line} {name}.{row.function}"
        if is_view:
            assert row.who == VIEW, f"{where} is a view: its 'who' cell must be {VIEW!r}"
        else:
            assert row.who and row.who != VIEW and "(view)" not in row.who, (
                f"{where} changes state: say who may call it")
        assert row.does, f"{where}: say what it does"


def test_who_names_the_role_the_code_asserts(contract, doc_tables):
    name, _ = contract
    own = source_guards(name)
    for row in doc_tables.get(name, []):
        roles = own.get(row.function)
        if roles is None:
            roles = set(SNEKMATE_GUARDS.get(row.function, ()))
        for role in roles:
            assert role.lower() in row.who.lower(), (
                f"docs/contracts.md:{row.line} {name}.{row.function}: the code requires the "
                f"caller to be {role!r}, the doc says {row.who!r}")


# ---------------------------------------------------------------- the parser itself

SAMPLE = """
# Title

## Market

Prose naming `withdraw` and `cancel_order` does not count.

| function | who may call it | what it does | guard notes |
| --- | --- | --- | --- |
| `close_lease(lease_id)` | the lease's tenant or provider | ends the lease | once |
| `fee_bps` | anyone (view) | the fee | |

| field | meaning |
| --- | --- |
| `paid` | not a function table |

### Sub-heading

| function | who may call it | what it does | guard notes |
| --- | --- | --- | --- |
| `top_up` | the lease's tenant | adds budget | while open |

## Settlement

| function | who may call it | what it does | guard notes |
| --- | --- | --- | --- |
| `withdraw` | nobody | not the Market's | |

## Owner powers

| function | who may call it | what it does | guard notes |
| --- | --- | --- | --- |
| `set_fee_bps` | owner | outside any contract section | |
"""


def test_parser_counts_only_function_tables_in_the_contracts_own_section():
    tables = parse_doc(SAMPLE, {"Market", "Settlement"})
    assert [row.function for row in tables["Market"]] == ["close_lease", "fee_bps", "top_up"]
    assert [row.function for row in tables["Settlement"]] == ["withdraw"]
    assert set(tables) == {"Market", "Settlement"}
    assert tables["Market"][0].who == "the lease's tenant or provider"
    assert tables["Market"][0].guard == "once"


def test_parser_refuses_rows_it_cannot_read():
    bad_cells = "## Market\n\n| function | who |\n| --- | --- |\n| `withdraw` | provider |\n"
    with pytest.raises(AssertionError, match="4 cells"):
        parse_doc(bad_cells, {"Market"})
    two_names = ("## Market\n\n| function | who | does | guard |\n| --- | --- | --- | --- |\n"
                 "| `withdraw`, `top_up` | party | pays | |\n")
    with pytest.raises(AssertionError, match="exactly one function"):
        parse_doc(two_names, {"Market"})


def test_source_scan_finds_the_access_asserts():
    market = source_guards("Market")
    assert market["set_fee_bps"] == {"owner"}
    assert market["refund_tenant"] == {"Settlement"}
    assert market["close_lease"] == {"tenant", "provider"}
    assert market["claim_downtime"] == set()  # anyone
    assert source_guards("Settlement")["close_refund"] == {"Market"}
    assert "slasher" in source_guards("ProviderRegistry")["slash"]
