// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ConsortiumCredit
/// @notice The consortium's unit of account (XCC), a plain ERC-20 minted once. Members keep the
///         credit that backs their users' work as collateral in the Settlement contract, which
///         settles epochs from that collateral and never moves anyone's token balance.
contract ConsortiumCredit is ERC20 {
    /// @notice holders and amounts differ in length.
    error LengthMismatch(uint256 holders, uint256 amounts);

    /// @notice Mints the initial balances.
    /// @param holders Accounts receiving an initial balance.
    /// @param amounts Their initial balances.
    constructor(address[] memory holders, uint256[] memory amounts) ERC20("Consortium Credit", "XCC") {
        if (holders.length != amounts.length) revert LengthMismatch(holders.length, amounts.length);
        for (uint256 i = 0; i < holders.length; i++) {
            _mint(holders[i], amounts[i]);
        }
    }
}
