// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ConsortiumCredit
/// @notice The consortium's unit of account (XCC). Holders transfer it as any ERC-20; the
///         Settlement contract additionally moves it between members when an epoch settles.
contract ConsortiumCredit is ERC20 {
    /// @notice The deployer, allowed to set the settlement contract once.
    address public immutable deployer;
    /// @notice The Settlement contract, the only caller of settleTransfer.
    address public settlement;

    /// @notice The Settlement contract was set (once, by the deployer).
    /// @param settlement The Settlement contract's address.
    event SettlementSet(address indexed settlement);

    /// @notice holders and amounts differ in length.
    error LengthMismatch(uint256 holders, uint256 amounts);
    /// @notice Caller is neither allowed for this operation.
    error Unauthorized(address caller);
    /// @notice The settlement contract has already been set.
    error SettlementAlreadySet(address settlement);
    /// @notice The zero address is not a settlement contract.
    error InvalidSettlement();

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

    /// @notice Sets the Settlement contract; callable once, by the deployer.
    /// @param settlement_ The Settlement contract's address.
    function setSettlement(address settlement_) external {
        if (msg.sender != deployer) revert Unauthorized(msg.sender);
        if (settlement != address(0)) revert SettlementAlreadySet(settlement);
        if (settlement_ == address(0)) revert InvalidSettlement();
        settlement = settlement_;
        emit SettlementSet(settlement_);
    }

    /// @notice Moves credit from a debtor to a creditor during settlement.
    /// @param from The debtor's account.
    /// @param to The creditor's account.
    /// @param amount The amount.
    function settleTransfer(address from, address to, uint256 amount) external {
        if (msg.sender != settlement || settlement == address(0)) revert Unauthorized(msg.sender);
        _transfer(from, to, amount);
    }
}
