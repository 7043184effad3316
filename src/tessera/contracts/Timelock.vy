# pragma version ~=0.4.3
"""
@title Tessera timelock
@license GNU Affero General Public License v3.0 or later
@notice snekmate's TimelockController, initialized: it owns the ProviderRegistry, the
        Validators, the Market and the StakeToken after deployment (docs/contracts.md, "Owner
        powers"), so every owner action that touches a party's money (granting or revoking a
        slasher, which may slash, jail, hold and lock stake; the fee of new leases; minting
        stake) is first scheduled in the open (`CallScheduled`, with its
        payload) and can be executed (`CallExecuted`) only after `get_minimum_delay` seconds:
        time for providers and validators to see it coming and leave. Proposers (who also
        cancel) and executors are set here; the timelock administers itself (a role change or
        a new delay goes through the same delay).
"""

from snekmate.auth import access_control
initializes: access_control

from snekmate.governance import timelock_controller
initializes: timelock_controller[access_control := access_control]

exports: timelock_controller.__interface__


@deploy
@payable
def __init__(
    minimum_delay_: uint256,
    proposers_: DynArray[address, 255],
    executors_: DynArray[address, 255],
    admin_: address,
):
    """
    @notice Start the timelock; the deployer keeps no role unless listed.
    @param minimum_delay_ The least delay, in seconds, between scheduling and executing a call.
    @param proposers_ Who may schedule (and cancel) calls.
    @param executors_ Who may execute ready calls.
    @param admin_ An optional admin that may change roles without the delay (zero: none).
    """
    access_control.__init__()
    timelock_controller.__init__(minimum_delay_, proposers_, executors_, admin_)
