# pragma version ~=0.4.3
"""
@title Tessera verified settlement
@license GNU Affero General Public License v3.0 or later
@notice A `verified` Market order's leases accrue pay by time like any lease, but their
        provider is paid only for time whose training round is final in `Verification`.
        The Market holds the escrow; this contract holds each verified lease's release
        state and walks its job's rounds (`release`): a round's pay becomes the provider's
        once the round is final, or, if the round is proven to cheat for this lease, goes
        back to the tenant at once (through `Market.refund_tenant`). Past the last posted
        round, pay for time older than `release_delay` is released too, so a tenant who
        stops posting roots cannot freeze pay; Verification bounds the rounds a root may
        skip (MAX_ROUND_GAP), so the walk grows only with the roots posted. The Market asks
        `released_earned` before it pays the provider, `excess` before it refunds the tenant,
        and takes `close_refund` when the lease closes. See docs/verification.md.
@dev A verified lease's escrow in the Market is budget - paid - downtime_refunded -
        releases[lease].refunded, open or closed. Every refund is capped by `excess`, so
        what the provider may still be paid stays covered.
"""

from .interfaces import IMarket
from .interfaces import IVerification

from .interfaces import ISettlement
implements: ISettlement

import lease_stream


event PayReleased:
    lease_id: indexed(uint256)
    provider: indexed(address)
    from_round: uint256
    to_round: uint256
    released_until: uint256
    # Gross pay by time newly payable (downtime, if any was claimed, is netted at withdrawal).
    amount: uint256
    # Gross pay of the proven rounds walked, and the part of it sent to the tenant now.
    withheld: uint256
    refund: uint256


# A round's pay (or, with round_index = the rounds posted, the time after the last root) that
# goes back to the tenant: the round was proven to cheat for the lease, or, `forfeited`, the
# lease's provider was proven to cheat in another round (Verification.cheated) before this pay
# was released.
event RoundRefunded:
    lease_id: indexed(uint256)
    tenant: indexed(address)
    round_index: indexed(uint256)
    amount: uint256
    refund: uint256
    forfeited: bool


MAX_RELEASE_ROUNDS: public(constant(uint256)) = 64

market: public(immutable(address))
verification: public(immutable(address))
# Seconds after Verification's challenge window before pay for time no root covers is released.
root_grace: public(immutable(uint256))
# Verification's challenge_window + root_grace.
release_delay: public(immutable(uint256))

releases: public(HashMap[uint256, ISettlement.Release])


@deploy
def __init__(market_: address, verification_: address, root_grace_: uint256):
    """
    @notice The Market's owner then calls `Market.set_settlement` with this address.
    @param market_ The Market whose verified leases this settles.
    @param verification_ The Verification contract whose rounds release pay (for `market_`).
    @param root_grace_ Seconds added to its challenge window to make `release_delay`.
    """
    assert market_ != empty(address) and verification_ != empty(address), "settlement: zero address"
    assert staticcall IVerification(verification_).market() == market_, "settlement: verification is for another market"
    market = market_
    verification = verification_
    root_grace = root_grace_
    release_delay = staticcall IVerification(verification_).challenge_window() + root_grace_


@internal
@view
def _lease(lease_id: uint256) -> IMarket.Lease:
    lease: IMarket.Lease = staticcall IMarket(market).leases(lease_id)
    assert lease.tenant != empty(address), "settlement: unknown lease"
    assert staticcall IMarket(market).verified(lease.order_id), "settlement: lease not verified"
    return lease


@internal
@view
def _released_earned(lease: IMarket.Lease, rel: ISettlement.Release) -> uint256:
    # Pay for released, unproven, live time: all the provider may be paid so far.
    gross: uint256 = lease_stream.accrued_at(lease, rel.until)
    if gross <= rel.proven + lease.downtime:
        return 0
    return gross - rel.proven - lease.downtime


@internal
@view
def _excess(lease: IMarket.Lease, rel: ISettlement.Release) -> uint256:
    # What the lease holds beyond the most its provider could still be paid (all of its time
    # released unproven: up to the close, or the whole budget while open). The subtraction
    # reverting would mean the escrow does not cover the provider's claims.
    horizon: uint256 = lease.budget
    if lease.closed_at != 0:
        horizon = lease_stream.accrued_at(lease, lease.closed_at)
    reserve: uint256 = 0
    if horizon > rel.proven + lease.downtime + lease.paid:
        reserve = horizon - rel.proven - lease.downtime - lease.paid
    return lease.budget - lease.paid - lease.downtime_refunded - rel.refunded - reserve


@internal
@view
def _withhold(lease: IMarket.Lease, rel: ISettlement.Release, amount: uint256) -> (ISettlement.Release, uint256):
    # `amount` of the lease's pay is never the provider's: the release state with it withheld,
    # and what goes back to the tenant now (capped by what the lease holds beyond the
    # provider's claims).
    out: ISettlement.Release = rel
    out.proven += amount
    back: uint256 = min(amount, self._excess(lease, out))
    out.refunded += back
    return out, back


@external
@view
def released_earned(lease_id: uint256) -> uint256:
    """
    @notice The gross pay of released, unproven, live time: all the provider may be paid so far
            (the Market pays it less what was paid).
    @param lease_id The verified lease.
    @return uint256 The amount, in payment-token base units.
    """
    return self._released_earned(self._lease(lease_id), self.releases[lease_id])


@external
@view
def excess(lease_id: uint256) -> uint256:
    """
    @notice What the lease's escrow holds beyond the most its provider could still be paid:
            the cap of every refund of a verified lease.
    @param lease_id The verified lease.
    @return uint256 The amount, in payment-token base units.
    """
    return self._excess(self._lease(lease_id), self.releases[lease_id])


@external
def close_refund(lease_id: uint256) -> uint256:
    """
    @notice The Market, closing a verified lease (its close and pay already recorded), takes
            what goes back to the tenant now: all the escrow beyond the provider's claims.
    @param lease_id The verified lease, just closed.
    @return uint256 The refund, in payment-token base units (the Market sends it).
    """
    assert msg.sender == market, "settlement: caller is not the market"
    rel: ISettlement.Release = self.releases[lease_id]
    refund: uint256 = self._excess(self._lease(lease_id), rel)
    self.releases[lease_id].refunded = rel.refunded + refund
    return refund


@external
@nonreentrant
def release(lease_id: uint256, up_to_round: uint256):
    """
    @notice Anyone releases a verified lease's pay, round by round of its job (the order),
            from `releases(lease).next_round` (or the job's first round) up to, not including,
            `up_to_round` (at most MAX_RELEASE_ROUNDS at once). Each round whose interval holds
            pay of this lease (from the previous round's root, or the lease start, to this
            round's root, clamped to the close) must be final in Verification; its pay becomes
            the provider's, or, if `proven` for this lease, goes back to the tenant now (capped
            by what the lease holds beyond the provider's claims). Once every posted round is
            walked, pay for time older than `release_delay` is released too. The provider then
            takes it with `Market.withdraw`.
    @param lease_id The verified lease.
    @param up_to_round The first round not walked (at most Verification's `rounds_posted(job)`).
    """
    lease: IMarket.Lease = self._lease(lease_id)
    rel: ISettlement.Release = self.releases[lease_id]
    job: uint256 = lease.order_id
    posted: uint256 = staticcall IVerification(verification).rounds_posted(job)
    first: uint256 = max(rel.next_round, staticcall IVerification(verification).first_round(job))
    assert up_to_round <= posted, "settlement: round not posted"
    # (first <= Verification.MAX_FIRST_ROUND + posts * MAX_ROUND_GAP: no overflow; written as a
    # difference anyway.)
    assert up_to_round <= first or up_to_round - first <= MAX_RELEASE_ROUNDS, "settlement: too many rounds at once"
    end: uint256 = lease_stream.end(lease)
    until: uint256 = max(rel.until, lease.start)
    before: uint256 = until
    released: uint256 = 0
    withheld: uint256 = 0
    refund: uint256 = 0
    # A lease whose provider was proven to cheat (in any round) is paid nothing more: every
    # round walked from then on goes back to the tenant, so a cheat caught costs the cheater
    # all of its pay still held, not one round's.
    cheated: bool = staticcall IVerification(verification).cheated(lease_id)
    for i: uint256 in range(MAX_RELEASE_ROUNDS):
        r: uint256 = first + i
        if r >= up_to_round:
            break
        t: uint256 = min((staticcall IVerification(verification).rounds(job, r)).posted_at, end)
        if t > until:
            assert staticcall IVerification(verification).round_finalized(job, r), "settlement: round not final"
            amount: uint256 = lease_stream.accrued_at(lease, t) - lease_stream.accrued_at(lease, until)
            proven: bool = staticcall IVerification(verification).proven(job, r, lease_id)
            if proven or cheated:
                back: uint256 = 0
                rel, back = self._withhold(lease, rel, amount)
                withheld += amount
                refund += back
                log RoundRefunded(lease_id=lease_id, tenant=lease.tenant, round_index=r, amount=amount, refund=back, forfeited=not proven)
            else:
                released += amount
            until = t
    rel.next_round = max(first, up_to_round)
    if rel.next_round == posted and block.timestamp > release_delay:
        tail: uint256 = min(end, block.timestamp - release_delay)
        if tail > until:
            amount: uint256 = lease_stream.accrued_at(lease, tail) - lease_stream.accrued_at(lease, until)
            if cheated:
                back: uint256 = 0
                rel, back = self._withhold(lease, rel, amount)
                withheld += amount
                refund += back
                log RoundRefunded(lease_id=lease_id, tenant=lease.tenant, round_index=posted, amount=amount, refund=back, forfeited=True)
            else:
                released += amount
            until = tail
    rel.until = until
    assert rel.next_round > first or until > before, "settlement: nothing to release"
    self.releases[lease_id] = rel
    log PayReleased(
        lease_id=lease_id,
        provider=lease.provider,
        from_round=first,
        to_round=rel.next_round,
        released_until=until,
        amount=released,
        withheld=withheld,
        refund=refund,
    )
    if refund > 0:
        extcall IMarket(market).refund_tenant(lease_id, refund)
