# pragma version ~=0.4.3
"""
@title Tessera forgery slasher
@license GNU Affero General Public License v3.0 or later
@notice Carries out, on the home chain, the slash for a proven bridge forgery
        (docs/bridge.md, "A forger's slash"): a committee member's attestation of a message
        id that its source outbox never emitted. The proof is checked by that outbox
        (`BridgeOutbox.prove_forgery`), which then reports it here: directly when the
        source is the home chain, as a bridge message (kind 1, no value) from the source's
        outbox when it is a peer chain. The forger, if it is a registered validator, loses
        its whole stake (active and unbonding): `reward_bps` of it to the prover, the rest
        to the Market's treasury. A slashed validator has no weight, so the next committee
        rotation leaves it out. It is also the Validators' withdraw guard: a member of the
        current committee cannot withdraw its stake. No owner: nothing here can be changed
        after deployment.
@dev The forger could prove its own forgery to take the prover's share: it still loses the
     rest, so the reward stays a fraction.
"""

from ethereum.ercs import IERC20

from .interfaces import IValidators

from .interfaces import IBridgeReceiver
implements: IBridgeReceiver


interface IBridgeInbox:
    def outbox_of(source_chain: uint256) -> address: view
    def epoch() -> uint256: view
    def weight_of(epoch: uint256, member: address) -> uint256: view


interface IMarket:
    def treasury() -> address: view


# Validators.Validator, field for field (its public `validators` getter)
struct ValidatorRecord:
    stake: uint256
    unbonding: uint256
    unbond_release: uint256
    registered_at: uint256
    slashed_total: uint256
    endpoint: String[256]


interface IValidatorRecords:
    def validators(addr: address) -> ValidatorRecord: view


event ForgerySlashed:
    signer: indexed(address)
    message_id: indexed(bytes32)
    epoch: uint256
    source_chain: uint256
    taken: uint256
    prover: address
    reward: uint256


KIND_FORGERY: constant(uint8) = 1
BPS: constant(uint256) = 10_000
MAX_PAYLOAD: constant(uint256) = 512

validators: public(immutable(address))
# this chain's BridgeInbox (delivers peer outboxes' reports) and BridgeOutbox (local reports)
inbox: public(immutable(address))
outbox: public(immutable(address))
# its treasury (read at each slash: the owner may change it) receives the rest
market: public(immutable(address))
reward_bps: public(immutable(uint256))
# keccak256(abi_encode(source chain, signer, message id, epoch)) => carried out
slashed: public(HashMap[bytes32, bool])


@deploy
def __init__(validators_: address, inbox_: address, outbox_: address, market_: address, reward_bps_: uint256):
    """
    @notice Needs the Validators contract's slasher role (granted by its owner).
    @param validators_ The Validators contract whose members form the bridge committee.
    @param inbox_ This chain's BridgeInbox.
    @param outbox_ This chain's BridgeOutbox.
    @param market_ The Market, whose treasury receives the slash less the prover's reward.
    @param reward_bps_ The prover's share of what is taken, in basis points (at most 5,000).
    """
    assert validators_ != empty(address) and inbox_ != empty(address) and outbox_ != empty(address), "zero address"
    assert market_ != empty(address), "zero market"
    assert reward_bps_ <= BPS // 2, "reward over half"
    validators = validators_
    inbox = inbox_
    outbox = outbox_
    market = market_
    reward_bps = reward_bps_


@internal
def _slash(source_chain: uint256, signer: address, message_id: bytes32, epoch: uint256, prover: address):
    key: bytes32 = keccak256(abi_encode(source_chain, signer, message_id, epoch))
    assert not self.slashed[key], "already slashed"
    self.slashed[key] = True
    taken: uint256 = 0
    reward: uint256 = 0
    # a signer that never registered as a validator has nothing here to take: recorded only,
    # so that the report is delivered and not retried for ever. A registered one loses its
    # unbonding stake too (is_validator would miss one that unbonded everything).
    if (staticcall IValidatorRecords(validators).validators(signer)).registered_at != 0:
        taken = extcall IValidators(validators).slash(signer, max_value(uint256), self)
        reward = taken * reward_bps // BPS
        token: address = staticcall IValidators(validators).stake_token()
        if reward > 0:
            assert extcall IERC20(token).transfer(prover, reward, default_return_value=True), "transfer failed"
        if taken > reward:
            treasury: address = staticcall IMarket(market).treasury()
            assert extcall IERC20(token).transfer(treasury, taken - reward, default_return_value=True), "transfer failed"
    log ForgerySlashed(signer=signer, message_id=message_id, epoch=epoch, source_chain=source_chain, taken=taken, prover=prover, reward=reward)


@external
def on_forgery(signer: address, message_id: bytes32, epoch: uint256, prover: address):
    """
    @notice This chain's BridgeOutbox reports a forgery it has just proven.
    @param signer The forger.
    @param message_id The id it attested, never emitted here.
    @param epoch The committee epoch its attestation named.
    @param prover Who proved it (receives the reward).
    """
    assert msg.sender == outbox, "only outbox"
    self._slash(chain.id, signer, message_id, epoch, prover)


@external
def on_bridge_message(source_chain: uint256, sender: address, kind: uint8, amount: uint256, payload: Bytes[MAX_PAYLOAD], message_id: bytes32):
    """
    @notice The inbox delivers a peer outbox's forgery report (kind 1, no value; payload
            abi_encode(signer, forged message id, epoch, prover)).
    @param source_chain The chain whose outbox proved the forgery.
    @param sender The contract that sent it: must be the outbox registered for that chain.
    @param kind 1.
    @param amount 0.
    @param payload abi_encode(signer, message id, epoch, prover).
    @param message_id The report's own id.
    """
    assert msg.sender == inbox, "only inbox"
    registered: address = staticcall IBridgeInbox(inbox).outbox_of(source_chain)
    # Nomad: an unregistered source reads as the zero address, which must never match
    assert registered != empty(address) and sender == registered, "not an outbox"
    assert kind == KIND_FORGERY and amount == 0, "not a forgery report"
    signer: address = empty(address)
    forged: bytes32 = empty(bytes32)
    epoch: uint256 = 0
    prover: address = empty(address)
    signer, forged, epoch, prover = abi_decode(payload, (address, bytes32, uint256, address))
    self._slash(source_chain, signer, forged, epoch, prover)


@external
@view
def may_withdraw(validator: address) -> bool:
    """
    @notice The Validators contract's withdraw guard: a member of this chain's bridge inbox's
            current committee may not withdraw its validator stake, which must stay within
            reach of a forgery proof while its attestations count (it leaves by rotation).
    @param validator The validator asking to withdraw.
    @return bool True when it is not a current committee member.
    """
    epoch: uint256 = staticcall IBridgeInbox(inbox).epoch()
    return staticcall IBridgeInbox(inbox).weight_of(epoch, validator) == 0


@external
def on_bridge_cancelled(source_chain: uint256, sender: address, kind: uint8, amount: uint256, payload: Bytes[MAX_PAYLOAD], message_id: bytes32):
    """
    @notice Never called: a report carries no value, so it is never queued or cancelled.
    @param source_chain Unused.
    @param sender Unused.
    @param kind Unused.
    @param amount Unused.
    @param payload Unused.
    @param message_id Unused.
    """
    raise "nothing to cancel"
