"""The agent's record of what it did: one JSON line per decision, payment, refusal and tenant
step, each with its transaction hash where one exists, and the same line for a person on the
console. The file is appended to and flushed line by line, so a run that is killed keeps what
it did up to then (and a later run of the same agent adds to it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

# What the console shows for each kind of record.
_STYLE = {"decision": "cyan", "payment": "green", "refusal": "yellow", "stop": "bold",
          "error": "bold red"}


def _plain(value: Any) -> Any:
    """JSON-ready: bytes as 0x hex, paths and other objects as text."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class AgentLog:
    """Appends records to `path` (JSON lines) and prints them on `console`."""

    def __init__(self, path: Path, console: Console, agent: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.console = console
        self.agent = agent
        self.records: list[dict] = []

    def record(self, kind: str, message: str, **fields: Any) -> dict:
        """One record: `kind` (decision, payment, refusal, tenant, stop, ...), a sentence for a
        person, and fields for a program (`tx` where a transaction was sent)."""
        entry = {"time": round(time.time(), 3), "agent": self.agent, "kind": kind,
                 "message": message, **_plain(fields)}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        self.records.append(entry)
        tx = f" (tx {entry['tx']})" if entry.get("tx") else ""
        style = _STYLE.get(kind, "")
        label = f"[{style}]{kind}[/]" if style else kind
        self.console.print(f"[dim]agent[/] {label}: {escape(message)}{tx}", highlight=False)
        return entry

    def decision(self, message: str, **fields: Any) -> dict:
        return self.record("decision", message, **fields)

    def tenant_event(self, event: str, data: dict) -> None:
        """The tenant SDK's events (order posted, lease created, results verified, lease
        closed, ...), each with its transaction(s): handed to `Tenant(on_event=...)`."""
        txs = data.get("txs")
        tx = data.get("tx") or (txs[-1] if txs else None)
        what = ", ".join(f"{k} {v}" for k, v in data.items()
                         if k in ("order_id", "lease_id", "provider", "escrow", "count",
                                  "refund", "provider_amount"))
        self.record("tenant", f"{event}" + (f": {what}" if what else ""), event=event,
                    tx=tx, **{k: v for k, v in data.items() if k != "tx"})
