"""`tessera bridge ...`: relay messages between the chains of a network, move TUSD across, see
every route's state, and (guardian, owner) cancel a queued transfer, pause and unpause.

Registered by tessera.cli through `register_bridge(app)` (docs/bridge.md)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from web3 import Web3

from tessera.chain.accounts import resolve_account
from tessera.chain.bridge_committee import plan_recovery
from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.bridge_orders import BridgeOrders, fund_cancel, fund_claim
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain, tx_hash
from tessera.chain.devnet import bridge_confirmations
from tessera.chain.market import Market
from tessera.chain.network import Network, load_network
from tessera.chain.timelock import Timelock
from tessera.chain.token_bridge import StakeBridge, TokenBridge
from tessera.command_errors import run_guarded
from tessera.errors import BridgeError
from tessera.protocol.bridge import DEFAULT_CONFIRMATIONS
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    format_amount,
    parse_amount,
)
from tessera.relayer.order_refunds import CHECK_S

bridge_app = typer.Typer(help="Move TUSD or stake (TSTK) between the chains of a network, and "
                              "relay the bridge's messages.", no_args_is_help=True)
# --token: which bridge moves it
BRIDGES = {"TUSD": TokenBridge, "TSTK": StakeBridge}
console = Console()

NetworkOption = typer.Option(None, "--network", help="network file (default: the devnet's)")
ChainOption = typer.Option(..., "--chain", min=1, help="chain id whose bridge contracts to act on")


def _tusd(amount: int) -> str:
    return format_amount(amount, PAYMENT_DECIMALS, PAYMENT_SYMBOL)


def _tstk(amount: int) -> str:
    return format_amount(amount, STAKE_DECIMALS, STAKE_SYMBOL)


def _connect(network: Network, chain_id: int, account: str | None) -> Chain:
    chain = Chain(network.chain(chain_id), resolve_account(account) if account else None)
    chain.check_connected()
    return chain


def _address(what: str, value: str) -> str:
    try:
        address = Web3.to_checksum_address(value)
    except (ValueError, TypeError):
        raise ValueError(f"{what} is not an address: {value!r}") from None
    body = value[2:] if value[:2] in ("0x", "0X") else value
    if body != body.lower() and body != body.upper() and body != address[2:]:
        raise ValueError(f"{what} {value!r} has a wrong checksum (a mistyped character?): "
                         f"check it, or write it in lower case")
    return address


@bridge_app.command("relay")
def relay(account: str = typer.Option(..., "--account", help="pays the gas of deliveries: "
                                      "devnet:N, keystore:NAME or a 0x key"),
          network: Path = NetworkOption,
          state: Path = typer.Option(None, "--state", help="cursor and open messages (default: "
                                     "$TESSERA_HOME/relayer/<network>-<chain>.json)"),
          confirmations: int = typer.Option(None, min=0, max=100_000,
                                            help="blocks a message must be buried under: the "
                                            "source chain's finality (required off the devnet; "
                                            f"{DEFAULT_CONFIRMATIONS} on the devnet's chains)"),
          interval: float = typer.Option(0.5, min=0.05, max=60, help="seconds between polls"),
          refund_check_s: float = typer.Option(
              CHECK_S, "--refund-check-s", min=0.0, max=3_600,
              help="seconds between reads of what BridgeOrders owes the senders of orders "
                   "funded from a peer chain (each owed refund is sent back to that chain)"),
          once: bool = typer.Option(False, "--once", help="one poll, then exit")) -> None:
    """Carry every confirmed message, with a quorum of committee signatures, to its inbox;
    execute queued ones after their delay; send the refunds of orders funded from a peer chain
    back there. Restartable: nothing is lost or delivered twice."""
    from tessera.relayer.relay import Relayer

    def build() -> Relayer:
        net = load_network(network)
        for chain_net in net.chains():
            Chain(chain_net).check_connected()
        return Relayer(net, resolve_account(account), state,
                       bridge_confirmations(net, confirmations), refund_check_s=refund_check_s)

    relayer = run_guarded(build)
    stop = threading.Event()
    try:
        if once:
            run_guarded(relayer.poll_once)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            relayer.log("relaying", chains=list(relayer.chains), state=str(relayer.state_file))
            run_guarded(lambda: relayer.run(stop, interval))
    finally:
        relayer.close()
    done = relayer.state["done"]
    console.print(f"open: {len(relayer.state['open'])}, done: {json.dumps(done)}")


@bridge_app.command("send")
def send(to_chain: int = typer.Option(..., "--to-chain", min=1, help="destination chain id"),
         amount: str = typer.Option(..., "--amount", help="how much to move, e.g. 12.50"),
         token: str = typer.Option("TUSD", "--token", help="TUSD (payment; TokenBridge) or TSTK "
                                   "(stake; StakeBridge): a provider stakes on another chain by "
                                   "sending TSTK to the home chain"),
         recipient: str = typer.Option(None, "--recipient", help="who receives it there "
                                       "(default: the sending account)"),
         from_chain: int = typer.Option(None, "--from-chain", min=1, help="source chain id "
                                        "(default: the other chain of a two-chain network)"),
         network: Path = NetworkOption,
         account: str = typer.Option("devnet:5", "--account", help="devnet:N, keystore:NAME "
                                     "or a 0x key")) -> None:
    """Move TUSD or TSTK to another chain of the network (locked or burned here, released or
    minted there once the committee has attested it and a relayer has delivered it)."""
    def body():
        bridge_class = BRIDGES.get(token.upper())
        if bridge_class is None:
            raise ValueError(f"--token must be one of {', '.join(BRIDGES)}, got {token!r}")
        symbol, decimals = bridge_class.TOKEN.SYMBOL, bridge_class.TOKEN.DECIMALS
        try:
            units = parse_amount(amount, decimals, symbol=symbol)
        except ValueError as exc:
            raise ValueError(f"--amount: {exc}") from None
        if units == 0:
            raise ValueError("--amount must be above zero")
        net = load_network(network)
        ids = [c.chain_id for c in net.chains()]
        if to_chain not in ids:
            raise BridgeError(f"--to-chain {to_chain} is not a chain of network {net.name!r} "
                              f"({', '.join(map(str, ids))})")
        source = from_chain
        if source is None:
            others = [c for c in ids if c != to_chain]
            if len(others) != 1:
                raise BridgeError("--from-chain is needed: the network has more than two chains")
            source = others[0]
        if source == to_chain:
            raise BridgeError("--from-chain and --to-chain are the same chain")
        if source not in ids:
            raise BridgeError(f"--from-chain {source} is not a chain of network {net.name!r}")
        chain = _connect(net, source, account)
        if bridge_class.NAME not in chain.network.contracts:
            raise BridgeError(f"chain {source} has no {bridge_class.NAME}: {symbol} does not "
                              "cross in this network")
        to = _address("--recipient", recipient) if recipient else chain.address
        _not_a_contract_of(net.chain(to_chain), to)
        bridge = bridge_class(chain)
        message_id, receipts = bridge.send(to_chain, to, units)
        sent = BridgeOutbox(chain).sent_in(receipts[-1])
        return (source, to, bridge.token_wrapper.format(units), message_id,
                sent[0].message.nonce if sent else None, receipts[-1])

    source, to, moved, message_id, nonce, receipt = run_guarded(body)
    console.print(f"sent {moved} from chain {source} to {to} on chain {to_chain}")
    console.print(f"  message 0x{message_id.hex()} (nonce {nonce}), tx {tx_hash(receipt)}")
    console.print("  it arrives once the committee has attested it and a relayer delivers it "
                  "(`tessera bridge status`)")


def _not_a_contract_of(destination: Network, to: str) -> None:
    """Refuse a plain transfer to a contract the network file names on the destination: none of
    them can do anything with tokens sent that way (BridgeOrders takes a deposit only with an
    order's terms: `tessera job submit --pay-from-chain`), so they would be nobody's for ever."""
    for name, address in destination.contracts.items():
        if address.lower() == to.lower():
            hint = (": fund an order with `tessera job submit --pay-from-chain`" if name == "BridgeOrders"
                    else "")
            raise BridgeError(f"--recipient {to} is {name} on chain {destination.chain_id}: tokens sent "
                              f"there would be stuck for ever{hint}")


@bridge_app.command("status")
def status(network: Path = NetworkOption,
           as_json: bool = typer.Option(False, "--json", help="as JSON (amounts in base units "
                                        "of each bridge's token)")) -> None:
    """Each route's messages (sent, attested, delivered, queued, cancelled) and the bucket of
    each of its value senders (the source's TokenBridge and StakeBridge)."""
    from tessera.relayer.status import bridge_status

    doc = run_guarded(lambda: bridge_status(load_network(network)))
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    for c in doc["chains"]:
        flags = [w for w, on in (("inbox paused", c["inbox_paused"]),
                                 ("token bridge paused", c["token_bridge_paused"])) if on]
        console.print(f"chain {c['chain_id']} ({c['name']}): block {c['block']}, committee epoch "
                      f"{c['epoch']}, {c['sent']} sent" + (f" [{', '.join(flags)}]" if flags else ""))
    amount = {"TokenBridge": _tusd, "StakeBridge": _tstk}   # each value sender's token
    for r in doc["routes"]:
        value = ", ".join(amount.get(n, str)(v) for n, v in r["value_sent_by"].items())
        console.print(f"{r['source_chain']} -> {r['destination_chain']}: sent {r['sent']} "
                      f"({value}), attested {r['attested']}, delivered "
                      f"{r['delivered']}, queued {r['queued']}, cancelled {r['cancelled']}, "
                      f"waiting {r['waiting']}")
        for name, b in r["buckets"].items():
            f = amount.get(name, str)
            console.print(f"  {name} bucket: {f(b['available'])} of {f(b['capacity'])} available, "
                          f"refills {f(b['refill_per_s'])}/s; over {f(b['large_threshold'])} "
                          "waits the delay")


@bridge_app.command("cancel")
def cancel(chain_id: int = ChainOption,
           source_chain: int = typer.Option(..., "--source-chain", min=1,
                                            help="the chain the queued message came from"),
           nonce: int = typer.Option(..., "--nonce", min=0, help="its nonce on that chain"),
           network: Path = NetworkOption,
           account: str = typer.Option(..., "--account", help="the guardian or the owner")) -> None:
    """Guardian or owner: cancel a queued (large) transfer; its amount bounces back to the
    sender on the source chain."""
    def body():
        net = load_network(network)
        sent = BridgeOutbox(_connect(net, source_chain, None)).message(nonce)
        if sent.message.destination_chain != chain_id:
            raise BridgeError(f"message {nonce} of chain {source_chain} goes to chain "
                              f"{sent.message.destination_chain}, not {chain_id}")
        return sent, BridgeInbox(_connect(net, chain_id, account)).cancel(sent.message, sent.payload)

    sent, receipt = run_guarded(body)
    console.print(f"cancelled message 0x{sent.message.id.hex()} ({_tusd(sent.message.amount)}) on "
                  f"chain {chain_id}: tx {tx_hash(receipt)}; its bounce is a new message")


def _funding_id(text: str) -> bytes:
    value = text.removeprefix("0x")
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"a funding is named by its 32-byte message id (0x + 64 hex digits), "
                         f"not {text!r}")
    return bytes.fromhex(value)


def _orders(network: Path | None, account: str | None) -> BridgeOrders:
    net = load_network(network)
    if "BridgeOrders" not in net.contracts:
        raise BridgeError(f"network {net.name!r} has no BridgeOrders: no order is funded from "
                          "another chain there")
    return BridgeOrders(_connect(net, net.chain_id, account))


@bridge_app.command("order-status")
def order_status(message_id: str = typer.Argument(..., help="the deposit's message id (0x...)"),
                 network: Path = NetworkOption) -> None:
    """An order funded from another chain (tessera job submit --pay-from-chain): whether its
    deposit arrived, the order it opened, and what its sender is owed now."""
    def body():
        mid = _funding_id(message_id)
        orders = _orders(network, None)
        f = orders.funding(mid)
        state = ""
        if f.order_id and f.added_to == bytes(32):
            state = " (open)" if Market(orders.chain).order(f.order_id).open else " (closed)"
        return f, orders.owed(mid), state

    f, owed, state = run_guarded(body)
    if f.added_to != bytes(32):
        opened = (f"topped up a lease of order {f.order_id} (its rest comes back with that "
                  f"order's refunds, owed to deposit 0x{f.added_to.hex()})")
    elif f.order_id:
        opened = f"opened order {f.order_id}{state}"
    else:
        opened = ("opened no order and topped up nothing (refused, or the carrier of a cancel): "
                  "owed back whole")
    console.print(f"deposit {message_id}: {_tusd(f.amount)} from {f.sender} on chain "
                  f"{f.source_chain}; {opened}; returned so far {_tusd(f.returned)}; owed now "
                  f"{_tusd(owed)}")


@bridge_app.command("order-cancel")
def order_cancel(message_id: str = typer.Argument(..., help="the deposit's message id (0x...)"),
                 network: Path = NetworkOption,
                 account: str = typer.Option(..., "--account", help="the deposit's sender"),
                 from_chain: int = typer.Option(None, "--from-chain", min=1, help="send the "
                                                "cancel as a message from the chain the deposit "
                                                "came from (no gas needed at home)")) -> None:
    """The sender cancels the order its deposit opened: the unallocated deposit is owed back
    (the relayer sends it back; `order-claim` takes it here instead). Its leases go on. With
    --from-chain the cancel travels as a bridge message (a relayer delivers it); a sender that
    is a contract sends the same message itself (docs/bridge.md)."""
    def body():
        mid = _funding_id(message_id)
        if from_chain is None:
            return None, _orders(network, account).cancel_order(mid)
        net = load_network(network)
        _orders(network, None)                          # refuses a network without BridgeOrders
        cancel_id, _ = fund_cancel(_connect(net, from_chain, account),
                                   _connect(net, net.chain_id, None), mid)
        return cancel_id, None

    cancel_id, receipt = run_guarded(body)
    if receipt is not None:
        console.print(f"order cancelled: tx {tx_hash(receipt)}")
        return
    console.print(f"cancel sent from chain {from_chain} as message 0x{cancel_id.hex()}: the order "
                  f"closes when a relayer delivers it (`tessera bridge order-status "
                  f"{message_id}` shows it)")


@bridge_app.command("order-claim")
def order_claim(message_id: str = typer.Argument(..., help="the deposit's message id (0x...)"),
                network: Path = NetworkOption,
                account: str = typer.Option(..., "--account", help="the deposit's sender"),
                from_chain: int = typer.Option(None, "--from-chain", min=1, help="send the "
                                               "claim as a message from the chain the deposit "
                                               "came from (no gas needed at home)"),
                to: str = typer.Option(None, "--to", help="who receives it on the home chain "
                                       "(default: the sender's address there)")) -> None:
    """The sender takes what it is owed on the home chain instead of on its own (for when the
    way back is paused, closed or drained). With --from-chain the claim travels as a bridge
    message (a relayer delivers it); a sender that is a contract sends the same message itself."""
    def body():
        mid = _funding_id(message_id)
        if from_chain is None:
            orders = _orders(network, account)
            if to is not None:
                raise ValueError("--to goes with --from-chain (at home, the sender's own "
                                 "address receives it)")
            owed = orders.owed(mid)
            return owed, orders.claim_here(mid), None
        net = load_network(network)
        orders = _orders(network, None)
        peer = _connect(net, from_chain, account)
        recipient = _address("--to", to) if to is not None else peer.address
        claim_id, _ = fund_claim(peer, orders.chain, mid, recipient)
        return orders.owed(mid), None, (claim_id, recipient)

    owed, receipt, sent = run_guarded(body)
    if receipt is not None:
        console.print(f"claimed {_tusd(owed)} on the home chain: tx {tx_hash(receipt)}")
        return
    claim_id, recipient = sent
    console.print(f"claim of {_tusd(owed)} sent from chain {from_chain} as message "
                  f"0x{claim_id.hex()}: paid to {recipient} on the home chain when a relayer "
                  "delivers it")


def _switch(chain_id: int, network: Path | None, account: str, pause: bool) -> None:
    def body():
        chain = _connect(load_network(network), chain_id, account)
        inbox, token_bridge = BridgeInbox(chain), TokenBridge(chain)
        if pause:
            return [("inbox", inbox.pause()), ("token bridge", token_bridge.pause())]
        if "Timelock" in chain.network.contracts and inbox.owner() == Timelock(chain).address:
            return [(what, Timelock(chain).advance(name, "unpause"))
                    for what, name in (("inbox", "BridgeInbox"), ("token bridge", "TokenBridge"))]
        return [("inbox", inbox.unpause()), ("token bridge", token_bridge.unpause())]

    for what, done in run_guarded(body):
        if not isinstance(done, tuple):
            console.print(f"{what} on chain {chain_id} {'paused' if pause else 'unpaused'}: "
                          f"tx {tx_hash(done)}")
            continue
        step, ready_at, receipt = done   # the owner is the chain's Timelock
        tx = f": tx {tx_hash(receipt)}" if receipt else ""
        console.print({"scheduled": f"{what} unpause on chain {chain_id} scheduled through its "
                                    f"Timelock, executable from {ready_at} (Unix s): run "
                                    f"`tessera bridge unpause` again then{tx}",
                       "waiting": f"{what} unpause on chain {chain_id} waits its Timelock until "
                                  f"{ready_at} (Unix s)",
                       "executed": f"{what} on chain {chain_id} unpaused by its Timelock{tx}"}[step])


@bridge_app.command("pause")
def pause(chain_id: int = ChainOption, network: Path = NetworkOption,
          account: str = typer.Option(..., "--account", help="the guardian or the owner")) -> None:
    """Guardian or owner: stop delivery (inbox) and sending (TokenBridge) on one chain."""
    _switch(chain_id, network, account, pause=True)


@bridge_app.command("unpause")
def unpause(chain_id: int = ChainOption, network: Path = NetworkOption,
            account: str = typer.Option(..., "--account", help="the owner, or its Timelock's "
                                        "proposer and executor")) -> None:
    """Owner only: resume delivery and sending on one chain. Where the owner is the chain's
    Timelock, the first run schedules the unpause and a run after its delay executes it."""
    _switch(chain_id, network, account, pause=False)


@bridge_app.command("recover-committee")
def recover_committee(chain_id: int = ChainOption, network: Path = NetworkOption,
                      lost: list[str] = typer.Option([], "--lost", help="a member whose key is "
                                                     "lost (repeat the option for each)"),
                      account: str = typer.Option(..., "--account", help="the owner, or its "
                                                  "Timelock's proposer and executor")) -> None:
    """Owner only: replace a committee that can no longer sign (keys lost) once it has not
    rotated for the inbox's STALL_PERIOD (21 days; the validators renew a live one every 7).
    The new committee is the home validators' stake-weighted choice without the --lost keys;
    the old members it leaves out are retired from this inbox for good. Where the owner is the
    chain's Timelock, the first run schedules it and a run after the delay executes it."""
    def body():
        net = load_network(network)
        chain = _connect(net, chain_id, account)
        inbox = BridgeInbox(chain)
        plan = plan_recovery(_connect(net, net.chain_id, None), inbox,
                             [_address("--lost", a) for a in lost])
        now = chain.block_timestamp()
        timelocked = ("Timelock" in chain.network.contracts
                      and inbox.owner() == Timelock(chain).address)
        earliest = plan.stalled_since - (Timelock(chain).min_delay() if timelocked else 0)
        if now < earliest:
            raise BridgeError(
                f"the committee of chain {chain_id} last rotated at {inbox.rotated_at()} (Unix "
                f"s); recovery is allowed from {plan.stalled_since}, so it can be "
                f"{'scheduled' if timelocked else 'sent'} from {earliest}")
        args = (plan.epoch, plan.members, plan.weights, plan.lost)
        if not timelocked:
            return plan, ("executed", now, inbox.recover_committee(*args))
        return plan, Timelock(chain).advance("BridgeInbox", "recover_committee", *args)

    plan, (step, ready_at, receipt) = run_guarded(body)
    tx = f": tx {tx_hash(receipt)}" if receipt else ""
    what = (f"epoch {plan.epoch}'s committee on chain {chain_id} ({len(plan.members)} members; "
            f"retiring {', '.join(plan.lost) or 'nobody'})")
    console.print({"scheduled": f"recovery to {what} scheduled through its Timelock, executable "
                                f"from {ready_at} (Unix s): run the command again then{tx}",
                   "waiting": f"recovery to {what} waits its Timelock until {ready_at} (Unix s)",
                   "executed": f"recovered: {what}{tx}"}[step])


def register_bridge(app: typer.Typer) -> None:
    """Add `tessera bridge ...` to the main app."""
    app.add_typer(bridge_app, name="bridge")
