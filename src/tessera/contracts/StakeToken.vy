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

from snekmate.auth import ownable as ow
initializes: ow

from snekmate.tokens import erc20
initializes: erc20[ownable := ow]

exports: erc20.__interface__


@deploy
def __init__(name_: String[25], symbol_: String[5], decimals_: uint8, name_eip712_: String[50], version_eip712_: String[20]):
    ow.__init__()
    erc20.__init__(name_, symbol_, decimals_, name_eip712_, version_eip712_)
