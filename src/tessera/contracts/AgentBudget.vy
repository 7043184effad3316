# pragma version ~=0.4.3
"""
@title Tessera agent budget
@license GNU Affero General Public License v3.0 or later
@notice An owner deposits the payment token and grants an agent's session key a
        bounded right to pay from it: a budget per period (periods aligned at the
        grant's start), a cap per payment, the payees it may pay (listed, or any
        provider registered in the ProviderRegistry), a start and an expiry. The key
        signs an EIP-712 `AgentPayment` (grant, payee, amount, nonce, deadline) and
        anyone (the payee, a facilitator) submits it with `pay`; the contract checks
        every limit and refuses replays (one use per nonce and grant). The owner may
        pause, revoke and withdraw what is unspent at any time. Fields after
        Coinbase's SpendPermissionManager (allowance per period, start/end, revoke)
        and ERC-7715 permission requests.
        There are no owner powers: no admin, no upgrade, no fee, nothing to timelock.
@dev Invariant: IERC20(token).balanceOf(self) >= sum(balance_of[owner]) (equal unless
     someone sent tokens directly), and every owner can take their whole balance_of
     back with one `withdraw`. For every grant and every period, the sum of payments
     made in that period is at most the grant's budget.
"""

from ethereum.ercs import IERC20

from .interfaces import IProviderRegistry

from snekmate.utils import ecdsa

from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain


# One grant: what a session key may spend of its owner's balance.
struct Grant:
    owner: address
    key: address
    # Most the key may spend per period.
    budget: uint256
    # Period length in seconds; periods start at start + k * period.
    period: uint256
    # Most one payment may move.
    cap: uint256
    # The first second payments are valid.
    start: uint256
    # Payments are valid strictly before this timestamp.
    expiry: uint256
    # Any address registered in the ProviderRegistry is an allowed payee.
    any_provider: bool
    paused: bool
    revoked: bool
    # The start of the period `spent` counts (updated by the first payment of a period).
    period_start: uint256
    spent: uint256


event Deposited:
    owner: indexed(address)
    amount: uint256


event Withdrawn:
    owner: indexed(address)
    amount: uint256


event Granted:
    grant_id: indexed(uint256)
    owner: indexed(address)
    key: indexed(address)
    budget: uint256
    period: uint256
    cap: uint256
    start: uint256
    expiry: uint256
    any_provider: bool


event PayeeAllowed:
    grant_id: indexed(uint256)
    payee: indexed(address)


event GrantPaused:
    grant_id: indexed(uint256)
    paused: bool


event GrantRevoked:
    grant_id: indexed(uint256)


event AgentPaid:
    grant_id: indexed(uint256)
    owner: indexed(address)
    payee: indexed(address)
    key: address
    amount: uint256
    nonce: bytes32


PAYMENT_TYPEHASH: public(constant(bytes32)) = keccak256(
    "AgentPayment(uint256 grant,address payee,uint256 amount,bytes32 nonce,uint256 deadline)"
)
MAX_PAYEES: public(constant(uint256)) = 16

token: public(immutable(address))
registry: public(immutable(address))

grants: public(HashMap[uint256, Grant])
grant_count: public(uint256)
# owner => unspent deposit (shared by all the owner's grants)
balance_of: public(HashMap[address, uint256])
# grant id => nonce => used
nonce_used: public(HashMap[uint256, HashMap[bytes32, bool]])
# grant id => payee => listed at grant time
_listed: HashMap[uint256, HashMap[address, bool]]


@deploy
def __init__(token_: address, registry_: address, name_eip712_: String[50], version_eip712_: String[20]):
    """
    @notice No owner: the deployer gets no power over deposits or grants. The EIP-712
            domain of payments is (name_eip712_, version_eip712_, chain id, this contract).
    @param token_ The ERC-20 deposited and paid (the PaymentToken).
    @param registry_ The ProviderRegistry that `any_provider` grants consult.
    @param name_eip712_ The EIP-712 domain name.
    @param version_eip712_ The EIP-712 domain version.
    """
    assert token_ != empty(address), "zero token"
    assert registry_ != empty(address), "zero registry"
    eip712_domain_separator.__init__(name_eip712_, version_eip712_)
    token = token_
    registry = registry_


# ---------------------------------------------------------------- deposits


@external
@nonreentrant
def deposit(amount: uint256):
    """
    @notice Move `amount` of the caller's tokens in (approve this contract first); they
            fund every grant the caller has made or will make.
    @param amount The amount, in token base units.
    """
    assert amount > 0, "zero amount"
    self.balance_of[msg.sender] += amount
    log Deposited(owner=msg.sender, amount=amount)
    assert extcall IERC20(token).transferFrom(msg.sender, self, amount, default_return_value=True), "transfer failed"


@external
@nonreentrant
def withdraw(amount: uint256):
    """
    @notice The caller takes back `amount` of their unspent deposit, at any time (grants
            keep their limits but can only pay from what is left).
    @param amount The amount, in token base units.
    """
    assert amount > 0, "zero amount"
    assert amount <= self.balance_of[msg.sender], "owner balance"
    self.balance_of[msg.sender] -= amount
    log Withdrawn(owner=msg.sender, amount=amount)
    assert extcall IERC20(token).transfer(msg.sender, amount, default_return_value=True), "transfer failed"


# ---------------------------------------------------------------- grants


@external
def grant(
    key: address,
    budget: uint256,
    period: uint256,
    cap: uint256,
    start: uint256,
    expiry: uint256,
    payees: DynArray[address, MAX_PAYEES],
    any_provider: bool,
) -> uint256:
    """
    @notice The caller (the grant's owner) lets session key `key` pay from the caller's
            balance within these limits. The limits cannot be changed afterwards: revoke
            and grant again.
    @param key The session key that signs payments.
    @param budget Most the key may spend per period, in token base units.
    @param period The period length, in seconds (periods start at start + k * period).
    @param cap Most one payment may move.
    @param start The first timestamp payments are valid.
    @param expiry Payments are valid strictly before this timestamp (after `start`).
    @param payees The payees the key may pay (at most MAX_PAYEES).
    @param any_provider Also allow any provider registered in the ProviderRegistry.
    @return uint256 The grant id (ids start at 1).
    """
    assert key != empty(address), "zero key"
    assert budget > 0, "zero budget"
    assert period > 0, "zero period"
    assert cap > 0, "zero cap"
    assert expiry > start, "expiry not after start"
    assert any_provider or len(payees) > 0, "no payees"
    grant_id: uint256 = self.grant_count + 1
    self.grant_count = grant_id
    self.grants[grant_id] = Grant(
        owner=msg.sender,
        key=key,
        budget=budget,
        period=period,
        cap=cap,
        start=start,
        expiry=expiry,
        any_provider=any_provider,
        paused=False,
        revoked=False,
        period_start=start,
        spent=0,
    )
    log Granted(
        grant_id=grant_id,
        owner=msg.sender,
        key=key,
        budget=budget,
        period=period,
        cap=cap,
        start=start,
        expiry=expiry,
        any_provider=any_provider,
    )
    for payee: address in payees:
        assert payee != empty(address), "zero payee"
        # paid to itself, tokens would stay here with no owner's balance left to claim them
        assert payee != self, "payee is this contract"
        if not self._listed[grant_id][payee]:
            self._listed[grant_id][payee] = True
            log PayeeAllowed(grant_id=grant_id, payee=payee)
    return grant_id


@external
def set_paused(grant_id: uint256, paused: bool):
    """
    @notice The grant's owner pauses (no payment passes) or resumes it.
    @param grant_id The grant.
    @param paused True to pause, False to resume.
    """
    assert self.grants[grant_id].owner == msg.sender, "not grant owner"
    self.grants[grant_id].paused = paused
    log GrantPaused(grant_id=grant_id, paused=paused)


@external
def revoke(grant_id: uint256):
    """
    @notice The grant's owner ends it for good: no payment passes afterwards.
    @param grant_id The grant.
    """
    assert self.grants[grant_id].owner == msg.sender, "not grant owner"
    assert not self.grants[grant_id].revoked, "revoked"
    self.grants[grant_id].revoked = True
    log GrantRevoked(grant_id=grant_id)


# ---------------------------------------------------------------- payments


@internal
@view
def _period_start(g: Grant) -> uint256:
    # Only meaningful once g.start <= block.timestamp.
    return g.start + (block.timestamp - g.start) // g.period * g.period


@internal
@view
def _spent_now(g: Grant) -> uint256:
    if block.timestamp < g.start or g.period_start != self._period_start(g):
        return 0
    return g.spent


@internal
@view
def _payee_allowed(grant_id: uint256, any_provider: bool, payee: address) -> bool:
    if self._listed[grant_id][payee]:
        return True
    return any_provider and staticcall IProviderRegistry(registry).is_registered(payee)


@internal
@view
def _payment_digest(grant_id: uint256, payee: address, amount: uint256, nonce: bytes32, deadline: uint256) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(PAYMENT_TYPEHASH, grant_id, payee, amount, nonce, deadline))
    return eip712_domain_separator._hash_typed_data_v4(struct_hash)


@external
@nonreentrant
def pay(grant_id: uint256, payee: address, amount: uint256, nonce: bytes32, deadline: uint256, signature: Bytes[65]):
    """
    @notice Anyone submits a payment signed by the grant's session key: `amount` moves
            from this contract to `payee` and the owner's balance drops by it. Checks, in
            this order (the revert reason names the first that fails): the grant exists,
            is not revoked, not paused, started, not expired; the deadline has not passed;
            0 < amount <= cap; the period's spending stays within the budget; the payee is
            allowed; the nonce is unused; the owner's balance covers it; the signature is
            the key's.
    @param grant_id The grant.
    @param payee Who is paid.
    @param amount The amount, in token base units.
    @param nonce A 32-byte nonce, usable once per grant.
    @param deadline The last timestamp the payment may be submitted.
    @param signature The key's 65-byte (r, s, v) EIP-712 signature of the AgentPayment.
    """
    g: Grant = self.grants[grant_id]
    assert g.owner != empty(address), "unknown grant"
    assert not g.revoked, "revoked"
    assert not g.paused, "paused"
    assert block.timestamp >= g.start, "not started"
    assert block.timestamp < g.expiry, "expired"
    assert block.timestamp <= deadline, "deadline passed"
    assert amount > 0, "zero amount"
    assert amount <= g.cap, "over cap"
    current: uint256 = self._period_start(g)
    spent: uint256 = g.spent
    if g.period_start != current:
        spent = 0
    # spent <= budget always holds, so the subtraction cannot underflow.
    assert amount <= g.budget - spent, "over period budget"
    assert self._payee_allowed(grant_id, g.any_provider, payee), "payee not allowed"
    assert not self.nonce_used[grant_id][nonce], "nonce used"
    assert amount <= self.balance_of[g.owner], "owner balance"

    # Shape checks first, so that malformed signatures read "bad signature" (the `s` bound
    # is snekmate's malleability threshold, EIP-2); snekmate's generic "ecdsa: ..." message
    # remains only for well-shaped signatures whose point cannot be recovered.
    assert len(signature) == 65, "bad signature"
    sig_v: uint256 = convert(slice(signature, 64, 1), uint256)
    sig_s: uint256 = extract32(signature, 32, output_type=uint256)
    assert (sig_v == 27 or sig_v == 28) and sig_s <= ecdsa._MALLEABILITY_THRESHOLD, "bad signature"
    signer: address = ecdsa._recover_sig(self._payment_digest(grant_id, payee, amount, nonce, deadline), signature)
    assert signer != empty(address) and signer == g.key, "bad signature"

    self.nonce_used[grant_id][nonce] = True
    if g.period_start != current:
        self.grants[grant_id].period_start = current
    self.grants[grant_id].spent = spent + amount
    self.balance_of[g.owner] -= amount
    log AgentPaid(grant_id=grant_id, owner=g.owner, payee=payee, key=g.key, amount=amount, nonce=nonce)
    assert extcall IERC20(token).transfer(payee, amount, default_return_value=True), "transfer failed"


# ---------------------------------------------------------------- views


@external
@view
def payee_allowed(grant_id: uint256, payee: address) -> bool:
    """
    @notice Whether the grant's key may pay `payee`: listed at grant time, or the grant
            allows any provider and `payee` is registered in the ProviderRegistry.
    @param grant_id The grant.
    @param payee The address asked about.
    @return bool True if allowed.
    """
    return self._payee_allowed(grant_id, self.grants[grant_id].any_provider, payee)


@external
@view
def spent_in_period(grant_id: uint256) -> uint256:
    """
    @notice What the grant's key has spent in the current period (0 before the start).
    @param grant_id The grant.
    @return uint256 The amount, in token base units.
    """
    return self._spent_now(self.grants[grant_id])


@external
@view
def available(grant_id: uint256) -> uint256:
    """
    @notice The most one payment can move now: min(cap, budget - spent this period,
            owner balance), or 0 when the grant is unknown, revoked, paused, not started
            or expired.
    @param grant_id The grant.
    @return uint256 The amount, in token base units.
    """
    g: Grant = self.grants[grant_id]
    if g.owner == empty(address) or g.revoked or g.paused:
        return 0
    if block.timestamp < g.start or block.timestamp >= g.expiry:
        return 0
    return min(min(g.cap, g.budget - self._spent_now(g)), self.balance_of[g.owner])


@external
@view
def payment_digest(grant_id: uint256, payee: address, amount: uint256, nonce: bytes32, deadline: uint256) -> bytes32:
    """
    @notice The EIP-712 digest the session key signs; for cross-checking off-chain hashing.
    @param grant_id The grant.
    @param payee Who is paid.
    @param amount The amount, in token base units.
    @param nonce The payment's nonce.
    @param deadline The last timestamp the payment may be submitted.
    @return bytes32 The digest of the `AgentPayment`.
    """
    return self._payment_digest(grant_id, payee, amount, nonce, deadline)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator of payments, for the current chain.
    @return bytes32 The domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()
