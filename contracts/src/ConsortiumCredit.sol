// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ConsortiumCredit
/// @notice The consortium's unit of account (XCC), an ERC-20. The genesis balances are minted at
///         construction; later credit (for members admitted since) is minted only by the minter,
///         the Consortium contract, when its members carry a FUND proposal by vote. Members keep
///         the credit that backs their users' work as collateral in the Settlement contract, which
///         settles epochs from that collateral and never moves anyone's token balance.
contract ConsortiumCredit is ERC20 {
    /// @notice The deployer, allowed to name the minter once.
    address public immutable deployer;
    /// @notice The only account that may mint (the Consortium contract); zero until set.
    address public minter;

    /// @notice The minter was set (once, by the deployer).
    /// @param minter The minter (the Consortium contract).
    event MinterSet(address indexed minter);

    /// @notice holders and amounts differ in length.
    error LengthMismatch(uint256 holders, uint256 amounts);
    /// @notice The caller may not do this (not the deployer, or not the minter).
    error Unauthorized(address caller);
    /// @notice The minter is already set.
    error MinterAlreadySet(address minter);
    /// @notice The minter must be a contract.
    error InvalidMinter(address minter);

    /// @notice Mints the initial balances.
    /// @param holders Accounts receiving an initial balance.
    /// @param amounts Their initial balances.
    constructor(address[] memory holders, uint256[] memory amounts) ERC20("Consortium Credit", "XCC") {
        if (holders.length != amounts.length) revert LengthMismatch(holders.length, amounts.length);
        deployer = msg.sender;
        for (uint256 i = 0; i < holders.length; i++) {
            _mint(holders[i], amounts[i]);
        }
    }

    /// @notice Names the minter; callable once, by the deployer. The minter is a contract (the
    ///         Consortium), so no person's key can mint.
    /// @param minter_ The Consortium contract.
    function setMinter(address minter_) external {
        if (msg.sender != deployer) revert Unauthorized(msg.sender);
        if (minter != address(0)) revert MinterAlreadySet(minter);
        if (minter_.code.length == 0) revert InvalidMinter(minter_);
        minter = minter_;
        emit MinterSet(minter_);
    }

    /// @notice Mints `amount` to `to`; only the minter (the Consortium, for a carried FUND proposal).
    /// @param to The account credited.
    /// @param amount The amount, in the smallest credit unit.
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert Unauthorized(msg.sender);
        _mint(to, amount);
    }
}
