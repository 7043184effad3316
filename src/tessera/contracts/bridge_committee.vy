# pragma version ~=0.4.3
"""
@title Tessera bridge committee
@license GNU Affero General Public License v3.0 or later
@notice The stake-weighted committee a BridgeInbox trusts (docs/bridge.md, "Attestation and
        the committee"): epochs of members and weights, the EIP-712 digests they sign, the
        quorum check, rotation by the current committee's signatures, and recovery of a
        committee that can no longer sign (more than a third of its keys lost).
        Liveness: the validators' rotation duty rotates the inbox whenever the stake moves
        and renews it (the same members, the next epoch) at least every
        STALL_PERIOD / 3 (`protocol.bridge.renewal_due`). A committee that has not rotated
        for STALL_PERIOD cannot sign, and only then may the owner (a Timelock, with its
        public delay) install the next epoch's committee (`recover_committee`). The owner
        can already deliver through a Mailbox it names (BridgeInbox.set_mailbox, the same
        Timelock), so this adds no power a live committee does not see coming: it can stop
        a recovery by rotating within the Timelock's delay. The stalled committee's members
        that the recovery names as lost are retired from this inbox for good: no later
        committee may include them, so a rotation cannot bring the dead keys back; the
        members it only leaves out may come back by rotation.
@dev Used by BridgeInbox (`initializes: committee[...]`); its external functions are
     exported there and keep their names.
"""

from snekmate.auth import ownable
uses: ownable

from snekmate.utils import ecdsa

from snekmate.utils import eip712_domain_separator
uses: eip712_domain_separator


event CommitteeRotated:
    epoch: indexed(uint256)
    committee: bytes32
    total_weight: uint256
    members: DynArray[address, MAX_COMMITTEE]


event CommitteeRecovered:
    epoch: indexed(uint256)
    by: indexed(address)
    stalled_since: uint256
    retired: DynArray[address, MAX_COMMITTEE]


MAX_COMMITTEE: constant(uint256) = 32
BPS: constant(uint256) = 10_000
# Below a majority of the weight, two disjoint quorums could sign conflicting rotations.
MIN_THRESHOLD_BPS: constant(uint256) = 5_001
# A committee that has not rotated for this long is stalled: the owner may replace it.
# Three renewal periods of the validators' duty (7 days each), so a committee that misses
# two renewals in a row is still not replaceable.
STALL_PERIOD: public(constant(uint256)) = 21 * 86_400
_ATTESTATION_TYPEHASH: constant(bytes32) = keccak256("Attestation(bytes32 messageId,uint256 epoch)")
_ROTATION_TYPEHASH: constant(bytes32) = keccak256("Rotation(uint256 epoch,bytes32 committee)")

threshold_bps: public(immutable(uint256))

epoch: public(uint256)
# block time of the current epoch's start (deployment, rotation or recovery)
rotated_at: public(uint256)
# epoch => member => weight (0: not a member)
weight_of: public(HashMap[uint256, HashMap[address, uint256]])
# epoch => sum of the members' weights
total_weight: public(HashMap[uint256, uint256])
_members: HashMap[uint256, DynArray[address, MAX_COMMITTEE]]
# member of a stalled committee left out by `recover_committee`: never a member again
retired: public(HashMap[address, bool])


@deploy
def __init__(members: DynArray[address, MAX_COMMITTEE], weights: DynArray[uint256, MAX_COMMITTEE], threshold_bps_: uint256):
    """
    @notice Epoch 0's committee and the quorum's share, from the inbox's constructor.
    @param members The epoch-0 committee, strictly ascending addresses, 1 to 32 of them.
    @param weights Their weights (> 0), in the same order.
    @param threshold_bps_ The share of the total weight a quorum needs (5001 to 10000).
    """
    assert threshold_bps_ >= MIN_THRESHOLD_BPS and threshold_bps_ <= BPS, "bad threshold"
    threshold_bps = threshold_bps_
    self._set_committee(0, members, weights)


@internal
def _set_committee(epoch_: uint256, members: DynArray[address, MAX_COMMITTEE], weights: DynArray[uint256, MAX_COMMITTEE]):
    # protocol.bridge.committee_refusal, in the same order, plus an overflow bound.
    assert len(members) > 0, "empty committee"
    # (more than MAX_COMMITTEE cannot be abi-decoded into the DynArray: the call reverts)
    assert len(members) == len(weights), "length mismatch"
    total: uint256 = 0
    for w: uint256 in weights:
        assert w > 0, "zero weight"
        total += w
    previous: uint256 = 0
    for member: address in members:
        key: uint256 = convert(member, uint256)
        # strictly ascending: no member twice; > 0: never the zero address
        assert key > previous, "members not ascending"
        previous = key
        assert not self.retired[member], "retired member"
    # quorum arithmetic (signed * BPS) can then never overflow
    assert total <= max_value(uint256) // BPS, "total weight too large"
    for i: uint256 in range(len(members), bound=MAX_COMMITTEE):
        self.weight_of[epoch_][members[i]] = weights[i]
    self.total_weight[epoch_] = total
    self._members[epoch_] = members
    self.epoch = epoch_
    self.rotated_at = block.timestamp
    log CommitteeRotated(epoch=epoch_, committee=keccak256(abi_encode(members, weights)), total_weight=total, members=members)


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    # 65 bytes only (no EIP-2098 short form), v in {27, 28}, low s (EIP-2), a nonzero
    # signer: snekmate ecdsa's rules, with one reason for every malformed signature.
    assert len(signature) == 65, "bad signature"
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    assert (v == 27 or v == 28) and s <= ecdsa._MALLEABILITY_THRESHOLD, "bad signature"
    signer: address = ecrecover(digest, v, extract32(signature, 0, output_type=uint256), s)
    assert signer != empty(address), "bad signature"
    return signer


@internal
@view
def _check_quorum(digest: bytes32, signatures: DynArray[Bytes[65], MAX_COMMITTEE]):
    # protocol.bridge.quorum_reached: the signers are recovered here (never taken from the
    # caller), strictly ascending (none counts twice), members of the CURRENT epoch only.
    current: uint256 = self.epoch
    total: uint256 = self.total_weight[current]
    # Nomad: an empty committee would make 0 >= 0 a quorum of nobody
    assert total > 0, "no committee"
    previous: uint256 = 0
    signed: uint256 = 0
    for signature: Bytes[65] in signatures:
        signer: address = self._recover(digest, signature)
        key: uint256 = convert(signer, uint256)
        assert key > previous, "not ascending"
        previous = key
        weight: uint256 = self.weight_of[current][signer]
        assert weight > 0, "not a member"
        signed += weight
    assert signed * BPS >= total * threshold_bps, "no quorum"


@internal
@view
def _attestation_digest(message_id: bytes32, epoch_: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(keccak256(abi_encode(_ATTESTATION_TYPEHASH, message_id, epoch_)))


@internal
@view
def _rotation_digest(epoch_: uint256, committee_: bytes32) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(keccak256(abi_encode(_ROTATION_TYPEHASH, epoch_, committee_)))


@internal
@view
def _check_attested(message_id: bytes32, signatures: DynArray[Bytes[65], MAX_COMMITTEE]):
    self._check_quorum(self._attestation_digest(message_id, self.epoch), signatures)


@external
@nonreentrant
def rotate(epoch: uint256, members: DynArray[address, MAX_COMMITTEE], weights: DynArray[uint256, MAX_COMMITTEE], signatures: DynArray[Bytes[65], MAX_COMMITTEE]):
    """
    @notice Anyone submits the current committee's quorum signatures of Rotation(epoch,
            keccak256(abi_encode(members, weights))) to hand this inbox to the next epoch's
            committee (the same members and weights renew it). Works while paused, so that
            a compromised committee can be replaced.
    @param epoch The new epoch: the current one plus one.
    @param members The new committee, strictly ascending addresses, 1 to 32 of them.
    @param weights Their weights (> 0), in the same order.
    @param signatures The current committee's signatures, ordered by signer address.
    """
    assert epoch == self.epoch + 1, "wrong epoch"
    self._check_quorum(self._rotation_digest(epoch, keccak256(abi_encode(members, weights))), signatures)
    self._set_committee(epoch, members, weights)


@external
def recover_committee(epoch: uint256, members: DynArray[address, MAX_COMMITTEE], weights: DynArray[uint256, MAX_COMMITTEE], lost: DynArray[address, MAX_COMMITTEE]):
    """
    @notice The owner (a Timelock) installs the next epoch's committee, only once the
            current one has not rotated for STALL_PERIOD: the way out when more than a
            third of its weight can no longer sign (keys lost), which no rotation can fix.
            The `lost` members are retired (never members again); signatures of the
            stalled epoch are refused afterwards. Works while paused.
    @param epoch The new epoch: the current one plus one.
    @param members The new committee, strictly ascending addresses, 1 to 32 of them.
    @param weights Their weights (> 0), in the same order.
    @param lost Members of the stalled committee whose keys are lost, none in `members`.
    """
    assert msg.sender == ownable.owner, "not owner"
    assert epoch == self.epoch + 1, "wrong epoch"
    stalled_since: uint256 = self.rotated_at + STALL_PERIOD
    assert block.timestamp >= stalled_since, "committee not stalled"
    for member: address in lost:
        assert self.weight_of[epoch - 1][member] > 0, "lost key not a member"
        assert member not in members, "lost key kept"
        assert not self.retired[member], "lost key twice"
        self.retired[member] = True
    self._set_committee(epoch, members, weights)
    log CommitteeRecovered(epoch=epoch, by=msg.sender, stalled_since=stalled_since, retired=lost)


@external
@view
def committee(epoch: uint256) -> DynArray[address, MAX_COMMITTEE]:
    """
    @notice The members of an epoch's committee, ascending.
    @param epoch The epoch.
    @return DynArray The members (empty for an epoch that has not started).
    """
    return self._members[epoch]


@external
@view
def attestation_digest(message_id: bytes32, epoch: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a member of `epoch`'s committee signs to attest a message.
    @param message_id The message id.
    @param epoch The committee epoch.
    @return bytes32 The digest.
    """
    return self._attestation_digest(message_id, epoch)


@external
@view
def rotation_digest(epoch: uint256, committee: bytes32) -> bytes32:
    """
    @notice The EIP-712 digest the current committee signs to hand over to `epoch`.
    @param epoch The new epoch.
    @param committee keccak256(abi_encode(members, weights)) of the new committee.
    @return bytes32 The digest.
    """
    return self._rotation_digest(epoch, committee)
