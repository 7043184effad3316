"""What each contract holds, by the tokens' Transfer logs, against what parties can claim (pure).

`holdings` sets, per contract and token, `held` (Transfer logs in minus out) against `owed` (the
claims its own events leave open, with the per-lease ledgers of protocol/ledger.py for the
Market, and each owner's unspent deposit for the AgentBudget); `surplus` > 0 is money with no way
out, < 0 a shortfall. `holding_problems` words both for the audit. The token flows behind every
claim are listed in protocol/ledger.py. `agent_payment_problems` checks that every agent payment
moved what its event says (protocol/agent_payments.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from tessera.protocol.agent_payments import EXACT, agent_payments
from tessera.protocol.events import EventRecord
from tessera.protocol.ledger import (
    TOKENS,
    Claim,
    LeaseLedger,
    amount_json,
    amount_text,
    exact_amount,
    lease_ledgers,
)
from tessera.protocol.money import slash_split


@dataclass
class Holding:
    """What one contract holds of one token: by the token's Transfer logs (`held`) and by the
    contracts' own events (`owed`: the sum of `claims`)."""
    contract: str
    address: str
    token: str                  # "PaymentToken" or "StakeToken"
    held: int = 0
    claims: list[Claim] = field(default_factory=list)
    transfers: int = 0          # Transfer logs in or out
    # Plain transfers in: into the contract in a transaction where the contract itself emitted
    # no event (a holder's `transfer`, not a protocol call). Listed so that a person can tell a
    # donation (anyone can strand 1 base unit for the price of a transfer) from a stranding bug.
    unsolicited: int = 0
    unsolicited_txs: list[str] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return TOKENS[self.token][0]

    @property
    def decimals(self) -> int:
        return TOKENS[self.token][1]

    @property
    def owed(self) -> int:
        return sum(c.amount for c in self.claims)

    @property
    def surplus(self) -> int:
        """held - owed: > 0 is money no call can pay out, < 0 claims the tokens do not cover."""
        return self.held - self.owed

    def breakdown(self) -> dict[str, int]:
        """owed by kind of claim."""
        out: dict[str, int] = defaultdict(int)
        for c in self.claims:
            out[c.kind] += c.amount
        return dict(out)

    def show(self, amount: int) -> str:
        return amount_text(amount, self.token)

    def to_json(self) -> dict:
        """JSON-safe: every amount as {"amount": "2.2 TUSD", "base_units": 2200000}."""
        t = self.token
        return {"contract": self.contract, "address": self.address, "token": t,
                "symbol": self.symbol, "decimals": self.decimals, "transfers": self.transfers,
                "held": amount_json(self.held, t), "owed": amount_json(self.owed, t),
                "surplus": amount_json(self.surplus, t),
                "unsolicited": amount_json(self.unsolicited, t),
                "unsolicited_txs": list(self.unsolicited_txs),
                "owed_by_kind": {k: amount_json(v, t) for k, v in sorted(self.breakdown().items())}}


def holdings(records: Iterable[EventRecord], addresses: dict[str, str],
             as_of: int | None = None,
             ledgers: dict[int, LeaseLedger] | None = None) -> list[Holding]:
    """What every contract in `addresses` ({contract name: address}) holds of each token, by
    the tokens' Transfer logs, against what its events say parties can claim. One Holding per
    (contract, token), tokens' own addresses included (tokens sent there have no way out)."""
    records = sorted(records, key=lambda r: r.order)
    if ledgers is None:
        ledgers = lease_ledgers(records, as_of)
    by_address = {addr.lower(): name for name, addr in addresses.items()}
    rows = {(name, token): Holding(name, addr, token)
            for name, addr in addresses.items() for token in TOKENS}
    emitted = {(r.tx_hash, r.contract) for r in records}      # which contracts acted in a tx
    for r in records:
        if r.event != "Transfer" or r.contract not in TOKENS:
            continue
        value = int(r.args["value"])
        for side, sign in (("sender", -1), ("receiver", 1)):
            name = by_address.get(str(r.args[side]).lower())
            if name is not None:
                row = rows[(name, r.contract)]
                row.held += sign * value
                row.transfers += 1
                if sign > 0 and value and (r.tx_hash, name) not in emitted:
                    row.unsolicited += value
                    row.unsolicited_txs.append(r.tx_hash)
    claims = _claims(records, ledgers)
    for (name, token), found in claims.items():
        if (name, token) in rows:
            rows[(name, token)].claims = found
    return list(rows.values())


def _claims(records: list[EventRecord],
            ledgers: dict[int, LeaseLedger]) -> dict[tuple[str, str], list[Claim]]:
    """Every claim on every contract, from its own events (Transfer logs not used)."""
    orders: dict[int, list] = {}                       # id -> [tenant, deposit, allocated, open]
    payers: dict[int, str] = {}                        # order id -> who paid it (create_order_for)
    stakes = {"ProviderRegistry": defaultdict(lambda: [0, 0]),   # who -> [stake, unbonding]
              "Validators": defaultdict(lambda: [0, 0])}
    bonds: dict[int, tuple[str, int]] = {}             # open challenge -> (challenger, bond)
    liveness_bonds: dict[int, list] = {}               # open Uptime challenge -> [challenger,
                                                       # bond left]
    pools: dict[int, int] = {}                          # decided challenge -> voter pool left
    rewards: dict[tuple[str, int], int] = {}            # hardware (provider, epoch) -> pool left
    deposits: dict[str, int] = defaultdict(int)        # AgentBudget owner -> unspent deposit
    budget = {"Deposited": 1, "Withdrawn": -1, "AgentPaid": -1}
    staking = {("ProviderRegistry", "ProviderRegistered"): ("provider", "stake", "add"),
               ("ProviderRegistry", "StakeAdded"): ("provider", "amount", "add"),
               ("ProviderRegistry", "UnbondRequested"): ("provider", "amount", "unbond"),
               ("ProviderRegistry", "StakeWithdrawn"): ("provider", "amount", "withdraw"),
               ("ProviderRegistry", "Slashed"): ("provider", "amount", "slash"),
               ("Validators", "ValidatorRegistered"): ("validator", "stake", "add"),
               ("Validators", "ValidatorStakeAdded"): ("validator", "amount", "add"),
               ("Validators", "ValidatorUnbondRequested"): ("validator", "amount", "unbond"),
               ("Validators", "ValidatorStakeWithdrawn"): ("validator", "amount", "withdraw"),
               ("Validators", "ValidatorSlashed"): ("validator", "amount", "slash")}
    for r in records:
        a = r.args
        key = (r.contract, r.event)
        if r.contract == "AgentBudget" and r.event in budget:
            deposits[a["owner"]] += budget[r.event] * int(a["amount"])
        elif key in staking:
            who_field, amount_field, action = staking[key]
            bucket = stakes[r.contract][a[who_field]]
            amount = int(a[amount_field])
            if action == "add":
                bucket[0] += amount
            elif action == "unbond":
                bucket[0] -= amount
                bucket[1] += amount
            elif action == "withdraw":
                bucket[1] -= amount
            else:
                from_stake, from_unbonding = slash_split(amount, bucket[0])
                bucket[0] -= from_stake
                bucket[1] -= from_unbonding
        elif key == ("Market", "OrderCreated"):
            orders[int(a["order_id"])] = [a["tenant"], int(a["deposit"]), 0, True]
        elif key == ("Market", "OrderSponsored"):   # its refunds go to the payer
            payers[int(a["order_id"])] = a["payer"]
        elif key == ("Market", "LeaseCreated") and int(a["order_id"]) in orders:
            orders[int(a["order_id"])][2] += int(a["budget"])
        elif key == ("Market", "OrderCancelled") and int(a["order_id"]) in orders:
            orders[int(a["order_id"])][3] = False
        elif key == ("Verification", "ChallengeOpened"):
            bonds[int(a["challenge_id"])] = (a["challenger"], int(a["bond"]))
        elif key == ("Verification", "ChallengeResolved"):
            bonds.pop(int(a["challenge_id"]), None)
            pools[int(a["challenge_id"])] = int(a["to_voters"])
        elif key == ("Verification", "RewardClaimed"):
            pools[int(a["challenge_id"])] = pools.get(int(a["challenge_id"]), 0) - int(a["amount"])
        elif key == ("Uptime", "InclusionsChallenged"):
            liveness_bonds[int(a["challenge_id"])] = [a["challenger"], int(a["bond"])]
        elif key == ("Uptime", "InclusionAnswered") and int(a["challenge_id"]) in liveness_bonds:
            liveness_bonds[int(a["challenge_id"])][1] -= int(a["to_answerer"])   # paid out at once
        elif key == ("Uptime", "ChallengeResolved"):
            liveness_bonds.pop(int(a["challenge_id"]), None)   # the rest returned, the slash shared out
        elif key == ("HardwareReports", "HardwareSlashed"):
            rewards[(a["provider"], int(a["epoch"]))] = int(a["reward_pool"])
        elif key == ("HardwareReports", "HardwareRewardClaimed"):
            k = (a["provider"], int(a["epoch"]))
            rewards[k] = rewards.get(k, 0) - int(a["amount"])

    out: dict[tuple[str, str], list[Claim]] = defaultdict(list)
    market = out[("Market", "PaymentToken")]
    for oid, (tenant, deposit, allocated, is_open) in sorted(orders.items()):
        if is_open and deposit != allocated:
            party, who = ("payer", payers[oid]) if oid in payers else ("tenant", tenant)
            market.append(Claim("order deposit", party, who, deposit - allocated,
                                f"Market.cancel_order({oid})"))
    for lid in sorted(ledgers):
        payer = payers.get(ledgers[lid].order_id)
        market.extend(replace(c, party="payer", address=payer) if payer and c.party == "tenant"
                      else c for c in ledgers[lid].claims)
    for contract, who in (("ProviderRegistry", "provider"), ("Validators", "validator")):
        found = out[(contract, "StakeToken")]
        for address, (stake, unbonding) in sorted(stakes[contract].items()):
            if stake:
                found.append(Claim(f"{who} stake", who, address, stake,
                                   f"{contract}.request_unbond, then withdraw_unbonded"))
            if unbonding:
                found.append(Claim(f"{who} unbonding", who, address, unbonding,
                                   f"{contract}.withdraw_unbonded (after the unbonding period)"))
    agent_budget = out[("AgentBudget", "PaymentToken")]
    for owner, unspent in sorted(deposits.items()):
        if unspent:
            agent_budget.append(Claim("agent budget deposit", "owner", owner, unspent,
                                      "AgentBudget.withdraw(amount), by the owner, any time"))
    verification = out[("Verification", "StakeToken")]
    for cid, (challenger, bond) in sorted(bonds.items()):
        verification.append(Claim("challenge bond", "challenger (or provider, if rejected)",
                                  challenger, bond, f"Verification.resolve({cid})"))
    for cid, pool in sorted(pools.items()):
        if pool:
            verification.append(Claim("voter rewards", "winning voters", "", pool,
                                      f"Verification.claim_reward({cid})"))
    uptime = out[("Uptime", "StakeToken")]
    for cid, (challenger, left) in sorted(liveness_bonds.items()):
        if left:
            uptime.append(Claim(
                "liveness challenge bond", "answerers (the answer fee per beat shown), then the "
                "challenger (the rest, whatever the outcome)", challenger, left,
                f"Uptime.answer_challenge({cid}, ...) until the answer window ends, then "
                f"resolve_challenge({cid})"))
    hardware = out[("HardwareReports", "StakeToken")]
    for (provider, epoch), pool in sorted(rewards.items()):
        if pool:
            hardware.append(Claim("hardware rewards", "reporters", "", pool,
                                  f"HardwareReports.claim({provider}, {epoch})"))
    return out


def holding_problems(rows: Iterable[Holding],
                     accepted: dict[tuple[str, str], int] | None = None) -> list[str]:
    """One line per contract and token whose holdings differ from what parties can claim.

    `accepted` ({(contract, token symbol): base units}) is stuck money a person has looked at and
    accepted (a donation nobody can undo): a surplus of exactly that is not a problem, any other
    surplus still is, so a later stranding is still caught."""
    accepted = accepted or {}
    out = []
    for h in rows:
        known = accepted.get((h.contract, h.symbol), 0)
        if h.surplus > 0 and h.surplus != known:
            claimable = (f"parties can claim only {h.show(h.owed)}" if h.owed
                         else "no party can claim any of it")
            line = (f"{h.contract} ({h.address}) holds {h.show(h.held)} but {claimable}: "
                    f"{h.show(h.surplus)} has no way out")
            if known:
                line += f" ({h.show(known)} of it accepted as stuck)"
            if h.unsolicited:
                txs = ", ".join(h.unsolicited_txs[:3]) + (" ..." if len(h.unsolicited_txs) > 3 else "")
                line += (f"; {h.show(h.unsolicited)} came in by plain transfers, not protocol calls "
                         f"(tx {txs}): once checked, accept it with --accept-stuck "
                         f"{h.contract}:{h.symbol}:{exact_amount(h.surplus, h.token).split()[0]}")
            out.append(line)
        elif h.surplus < 0:
            out.append(f"{h.contract} ({h.address}) holds {h.show(h.held)} but owes "
                       f"{h.show(h.owed)}: a shortfall of {h.show(-h.surplus)}")
        elif known and h.surplus == 0:
            out.append(f"{h.contract}: {h.show(known)} accepted as stuck, but it holds no stuck "
                       f"{h.symbol}: the acceptance is out of date")
    for (contract, symbol), _ in accepted.items():
        if not any(h.contract == contract and h.symbol == symbol for h in rows):
            out.append(f"--accept-stuck names {contract}:{symbol}, which the audit does not hold")
    return out


def agent_payment_problems(records: Iterable[EventRecord], addresses: dict[str, str]) -> list[str]:
    """One line per agent payment that did not move what its event says: an `AgentPaid` without
    a PaymentToken Transfer of its amount from the AgentBudget to its payee in the same
    transaction, or an EIP-3009 `AuthorizationUsed` without the Transfer it made (a reader that
    missed it would miss the payment)."""
    records = sorted(records, key=lambda r: r.order)
    budget = addresses.get("AgentBudget", "").lower()
    sent: dict[str, list[tuple[str, int]]] = defaultdict(list)   # tx -> budget's (to, value)
    authorizations: dict[str, list[EventRecord]] = defaultdict(list)
    for r in records:
        if r.contract == "PaymentToken" and r.event == "Transfer" and budget \
                and str(r.args["sender"]).lower() == budget:
            sent[r.tx_hash].append((str(r.args["receiver"]).lower(), int(r.args["value"])))
        elif r.contract == "PaymentToken" and r.event == "AuthorizationUsed":
            authorizations[r.tx_hash].append(r)
    out = []
    exact: dict[str, int] = defaultdict(int)
    for p in agent_payments(records):
        if p.scheme == EXACT:
            exact[p.tx_hash] += 1
            continue
        match = (p.payee.lower(), p.amount)
        if match in sent[p.tx_hash]:
            sent[p.tx_hash].remove(match)
        else:
            out.append(f"AgentBudget: AgentPaid in tx {p.tx_hash} says {amount_text(p.amount)} to "
                       f"{p.payee} (grant {p.grant_id}), but no Transfer of that amount from the "
                       "AgentBudget to the payee is in that transaction")
    for tx, found in sorted(authorizations.items()):
        for r in found[exact[tx]:]:
            out.append(f"PaymentToken: AuthorizationUsed by {r.args['authorizer']} in tx {tx} has no "
                       "Transfer from the authorizer after it in that transaction: its payment was "
                       "not read")
    return out
