// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

/// @title JobEscrow
/// @notice The benchmark's peer: per-job escrow as iExec and most compute marketplaces do it.
///         The payer deposits each job's maximum price on chain (ERC-20 transferFrom in); the
///         worker claims each job with the payer's signed receipt for the price it is paid
///         (transfer out), and the rest is refunded in the same transaction. Two chain
///         transactions per job, the smallest honest version of that design.
contract JobEscrow {
    using SafeERC20 for IERC20;

    struct Deal {
        address payer;
        address worker;
        uint256 amount;
    }

    IERC20 public immutable token;
    uint256 public deals;
    mapping(uint256 => Deal) private _deals;

    event Opened(uint256 indexed id, address indexed payer, address indexed worker, uint256 amount);
    event Claimed(uint256 indexed id, uint256 price);

    error NotWorker(uint256 id);
    error OverPrice(uint256 id, uint256 price);
    error BadReceipt(uint256 id);

    constructor(IERC20 token_) {
        token = token_;
    }

    /// @notice The payer escrows `amount` for one job to be run by `worker`.
    function open(address worker, uint256 amount) external returns (uint256 id) {
        id = ++deals;
        _deals[id] = Deal(msg.sender, worker, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Opened(id, msg.sender, worker, amount);
    }

    /// @notice The worker is paid `price` against the payer's receipt; the rest goes back to the payer.
    function claim(uint256 id, uint256 price, bytes calldata receipt) external {
        Deal memory d = _deals[id];
        if (msg.sender != d.worker) revert NotWorker(id);
        if (price > d.amount) revert OverPrice(id, price);
        bytes32 digest = MessageHashUtils.toEthSignedMessageHash(keccak256(abi.encode(address(this), id, price)));
        if (ECDSA.recover(digest, receipt) != d.payer) revert BadReceipt(id);
        delete _deals[id];
        token.safeTransfer(d.worker, price);
        if (d.amount > price) token.safeTransfer(d.payer, d.amount - price);
        emit Claimed(id, price);
    }
}
