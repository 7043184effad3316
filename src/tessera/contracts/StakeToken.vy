# pragma version ~=0.4.3
"""
@title Tessera Stake token (TSTK)
@license GNU Affero General Public License v3.0 or later
@notice Plain ERC-20 (+ EIP-2612 permit) from snekmate. Providers lock it in the
        ProviderRegistry. Mintable by the owner and by addresses given the minter role.
"""

from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed

from .interfaces import IStakeToken
implements: IStakeToken

from snekmate.auth import ownable as ow
initializes: ow

from snekmate.tokens import erc20
initializes: erc20[ownable := ow]

exports: erc20.__interface__


@deploy
def __init__(name_: String[25], symbol_: String[5], decimals_: uint8, name_eip712_: String[50], version_eip712_: String[20]):
    """
    @notice The deployer becomes the owner and a minter; no tokens exist yet.
    @param name_ The token name (ERC-20 `name`).
    @param symbol_ The token symbol (ERC-20 `symbol`).
    @param decimals_ The token decimals.
    @param name_eip712_ The EIP-712 domain name (permit).
    @param version_eip712_ The EIP-712 domain version.
    """
    ow.__init__()
    erc20.__init__(name_, symbol_, decimals_, name_eip712_, version_eip712_)
