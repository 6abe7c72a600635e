// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Consortium} from "./Consortium.sol";
import {UsageLedger} from "./UsageLedger.sol";
import {ConsortiumCredit} from "./ConsortiumCredit.sol";

/// @title Settlement
/// @notice Nets the anchored inter-centre claims of an epoch multilaterally and moves
///         consortium credit: at most n-1 transfers for n active members.
/// @dev The algorithm is deliberately simple so auditors can recompute it off-chain:
///      net[c] = sum(claims c holds) - sum(claims held on c), over active members only
///      (claims naming a centre that is no longer active are ignored). Debtors (net<0) and
///      creditors (net>0) are each taken in member order; the first remaining debtor pays
///      the first remaining creditor min(debt, credit), and whichever is exhausted advances.
contract Settlement {
    /// @notice The member registry (who must anchor, and the netting order).
    Consortium public immutable consortium;
    /// @notice Where the epochs' claims are anchored.
    UsageLedger public immutable usageLedger;
    /// @notice The credit token moved by settlement.
    ConsortiumCredit public immutable credit;

    mapping(uint64 => bool) private _settled;
    mapping(uint64 => mapping(bytes32 => int256)) private _net;
    mapping(uint64 => bytes32[]) private _centres;

    /// @notice An epoch was settled: every active member's net position, in netting order.
    /// @dev Emitted after the epoch's `SettlementTransfer`s.
    /// @param epoch The epoch.
    /// @param centres The members netted (active at settlement), in admission order.
    /// @param net Each one's net position (positive: it was owed); they sum to zero.
    event EpochSettled(uint64 indexed epoch, bytes32[] centres, int256[] net);
    /// @notice One transfer of a settlement: a debtor paid a creditor (also an ERC-20 `Transfer`).
    /// @param epoch The epoch being settled.
    /// @param from The paying centre.
    /// @param to The paid centre.
    /// @param amount The amount, in the smallest credit unit.
    event SettlementTransfer(uint64 indexed epoch, bytes32 indexed from, bytes32 indexed to, uint256 amount);

    /// @notice The epoch has already been settled.
    error AlreadySettled(uint64 epoch);
    /// @notice An active member has not anchored the epoch yet.
    error NotAnchored(bytes32 centre, uint64 epoch);

    /// @param consortium_ The Consortium contract.
    /// @param usageLedger_ The UsageLedger contract.
    /// @param credit_ The ConsortiumCredit token.
    constructor(address consortium_, address usageLedger_, address credit_) {
        consortium = Consortium(consortium_);
        usageLedger = UsageLedger(usageLedger_);
        credit = ConsortiumCredit(credit_);
    }

    /// @notice Whether `epoch` has been settled.
    /// @param epoch The epoch.
    /// @return True when settled.
    function settled(uint64 epoch) external view returns (bool) {
        return _settled[epoch];
    }

    /// @notice The net position of `centre` in a settled epoch (positive: it was owed).
    /// @param epoch The epoch.
    /// @param centre The centre id.
    /// @return The net position; zero if unsettled or not a member then.
    function netPosition(uint64 epoch, bytes32 centre) external view returns (int256) {
        return _net[epoch][centre];
    }

    /// @notice The centres netted in a settled epoch, in netting order (empty if unsettled).
    /// @dev Membership changes after settlement; auditors need the set that was netted.
    /// @param epoch The epoch.
    /// @return The member ids active at settlement.
    function settledCentres(uint64 epoch) external view returns (bytes32[] memory) {
        return _centres[epoch];
    }

    /// @notice Settles `epoch`: nets all active members' claims and moves credit.
    /// @dev Anyone may call; the outcome depends only on chain state. Reverts NotAnchored
    ///      unless every active member anchored the epoch, AlreadySettled the second time.
    /// @param epoch The epoch.
    function settle(uint64 epoch) external {
        if (_settled[epoch]) revert AlreadySettled(epoch);
        _settled[epoch] = true;
        bytes32[] memory ids = consortium.memberIds();
        _centres[epoch] = ids;
        int256[] memory net = _netPositions(epoch, ids);
        for (uint256 i = 0; i < ids.length; i++) {
            _net[epoch][ids[i]] = net[i];
        }
        _transfer(epoch, ids, net);
        emit EpochSettled(epoch, ids, net);
    }

    function _netPositions(uint64 epoch, bytes32[] memory ids) private view returns (int256[] memory net) {
        uint256 n = ids.length;
        net = new int256[](n);
        for (uint256 c = 0; c < n; c++) {
            (,, bool anchored) = usageLedger.anchorOf(ids[c], epoch);
            if (!anchored) revert NotAnchored(ids[c], epoch);
            (bytes32[] memory debtors, uint256[] memory amounts) = usageLedger.claimsOf(epoch, ids[c]);
            for (uint256 k = 0; k < debtors.length; k++) {
                uint256 d = _indexOf(ids, debtors[k]);
                if (d == n) continue;
                int256 amount = int256(amounts[k]); // exact: UsageLedger caps claims at MAX_CLAIM
                net[c] += amount;
                net[d] -= amount;
            }
        }
    }

    function _transfer(uint64 epoch, bytes32[] memory ids, int256[] memory net) private {
        uint256 n = ids.length;
        int256[] memory left = new int256[](n);
        for (uint256 i = 0; i < n; i++) {
            left[i] = net[i];
        }
        uint256 d = _nextWith(left, 0, false);
        uint256 c = _nextWith(left, 0, true);
        while (d < n && c < n) {
            uint256 debt = uint256(-left[d]);
            uint256 due = uint256(left[c]);
            uint256 amount = debt < due ? debt : due;
            left[d] += int256(amount);
            left[c] -= int256(amount);
            credit.settleTransfer(consortium.member(ids[d]).account, consortium.member(ids[c]).account, amount);
            emit SettlementTransfer(epoch, ids[d], ids[c], amount);
            if (left[d] == 0) d = _nextWith(left, d + 1, false);
            if (left[c] == 0) c = _nextWith(left, c + 1, true);
        }
    }

    /// @dev First index >= start whose remaining position is positive (creditor) or negative (debtor).
    function _nextWith(int256[] memory left, uint256 start, bool positive) private pure returns (uint256 i) {
        for (i = start; i < left.length; i++) {
            if (positive ? left[i] > 0 : left[i] < 0) return i;
        }
    }

    function _indexOf(bytes32[] memory ids, bytes32 id) private pure returns (uint256 i) {
        for (i = 0; i < ids.length; i++) {
            if (ids[i] == id) return i;
        }
    }
}
