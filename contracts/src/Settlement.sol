// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Consortium} from "./Consortium.sol";
import {UsageLedger} from "./UsageLedger.sol";

/// @title Settlement
/// @notice The collateral vault of the consortium and the multilateral netting of each epoch's
///         standing claims, paid from that collateral: at most n-1 transfers for n members.
/// @dev Credit deposited here is internal collateral: settlement moves it between accounts and
///      never touches anyone's ERC-20 balance, so no debtor can make `settle` revert by moving
///      its credit away. Bonds are locked parts of an account's collateral; a withdrawal waits
///      for the epoch after the next anchored one, and every epoch before it, to settle, so
///      collateral cannot leave under an open epoch, and for `withdrawalDelay` seconds, so it
///      cannot leave before a late claim on it for work its users ordered before can be paid:
///      epoch numbers are each member's own, and one member may settle its epochs ahead.
///      Netting, for auditors to recompute off-chain: net[c] = sum of standing claims c holds -
///      sum of standing claims on c, over active members in admission order, the claims of late
///      anchors (`UsageLedger.AnchoredLate`) left out: those are paid by `settleLate`, each home
///      its claim, as far as its collateral goes (`LateClaimsSettled`). Each debtor pays
///      min(debt, balance - locked). When every debtor pays in full, the first remaining debtor
///      pays the first remaining creditor min(debt, credit), and whichever is exhausted advances.
///      Otherwise each creditor gets floor(credit * collected / totalDebt), the dust to the first
///      creditor, and the same pairing moves what was collected.
contract Settlement {
    using SafeERC20 for IERC20;

    /// @notice An account's collateral.
    /// @dev free = balance - locked - pendingWithdrawal (never below 0); settlement may take
    ///      balance - locked, the pending withdrawal included.
    struct Collateral {
        uint256 balance;
        uint256 locked;
        uint256 pendingWithdrawal;
        uint64 unlockEpoch;
        uint64 unlockTime;
    }

    /// @notice The member registry (who must anchor, the netting order, accounts).
    Consortium public immutable consortium;
    /// @notice Where the epochs' claims are anchored and disputed.
    UsageLedger public immutable usageLedger;
    /// @notice The credit token held as collateral.
    IERC20 public immutable credit;
    /// @notice Collateral locked per anchor (as much as is free), lost to an upheld dispute.
    uint256 public immutable anchorBond;
    /// @notice Collateral locked per dispute, lost to the claimant when the dispute is answered.
    uint256 public immutable disputeBond;
    /// @notice Seconds after an epoch's `Consortium.anchorQuorum`-th anchor that its settlement
    ///         waits for every member to anchor; after that it settles without the silent ones,
    ///         whose anchors are late (`UsageLedger.anchorDeadline`).
    uint64 public immutable anchorWindow;

    mapping(address => Collateral) private _collateral;
    /// @dev Bit (epoch & 255) of word (epoch >> 8): the epoch is settled. What moved is in its
    ///      `EpochSettled` event, not in storage: a settlement stays cheap.
    mapping(uint256 => uint256) private _settled;
    /// @notice Every epoch from 1 up to this one is settled. Epochs settle out of order (one
    ///         with a silent member waits for its anchor deadline, a later one may not), so a
    ///         withdrawal waits for this, not for its unlock epoch alone: collateral never
    ///         leaves while an earlier epoch that may hold debts of its owner is open.
    uint64 public settledThrough;
    /// @notice How far past `settledThrough` an epoch may settle. A withdrawal waits for the epoch
    ///         two past the highest settled one and every one before it, so an epoch settled far
    ///         ahead (anchored alone by a member that reaches `Consortium.anchorQuorum`) would
    ///         make every withdrawal asked after it wait for epochs nobody reaches; honest epochs
    ///         settling out of order (one waiting for a silent member) stay within this.
    uint64 public constant MAX_AHEAD = 16;
    /// @notice Seconds an order's deadline may be ahead of the moment a centre accepts it (gateways
    ///         refuse an order due later): the work a home's users ordered before a moment is billed
    ///         by claims anchored at most this + `UsageLedger.bookingDelay` after it.
    uint64 public constant MAX_ORDER_AHEAD = 7 days;
    /// @notice Seconds a withdrawal waits past the rest of its delay: the gateways' clocks (each judges
    ///         an order's week by its own) and a settlement's transaction take minutes, not an hour.
    uint64 public constant WITHDRAWAL_MARGIN = 1 hours;
    /// @notice Seconds a withdrawal waits after it was asked for: MAX_ORDER_AHEAD + the booking delay
    ///         (the latest an honest claim for work ordered before the request is anchored), twice the
    ///         dispute window (before that claim is paid: its epoch settles, or a late one `settleLate`),
    ///         the anchor window (the claimant's slack to have it settled) and WITHDRAWAL_MARGIN. An
    ///         on-time claim whose epoch's clock starts later (its quorum of anchors comes late) may
    ///         still wait longer than this.
    uint64 public immutable withdrawalDelay;

    /// @notice Credit was deposited as collateral.
    /// @param account Whose collateral grew.
    /// @param amount The amount.
    event Deposited(address indexed account, uint256 amount);
    /// @notice An account asked to withdraw collateral once `unlockEpoch` is settled and `unlockTime`
    ///         has come.
    /// @param account The account.
    /// @param amount Its pending withdrawal now.
    /// @param unlockEpoch The epoch that must be settled first, with every one before it.
    /// @param unlockTime The earliest block time it may be withdrawn.
    event WithdrawalRequested(address indexed account, uint256 amount, uint64 unlockEpoch, uint64 unlockTime);
    /// @notice Collateral left the vault.
    /// @param account The account.
    /// @param amount The amount transferred to it.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice Part of an account's collateral was locked as a bond.
    /// @param account The account.
    /// @param amount The amount locked.
    event BondLocked(address indexed account, uint256 amount);
    /// @notice A bond was released to its owner's free collateral.
    /// @param account The account.
    /// @param amount The amount released.
    event BondUnlocked(address indexed account, uint256 amount);
    /// @notice A bond was lost to another account.
    /// @param from Whose bond it was.
    /// @param to Who got it.
    /// @param amount The amount.
    event BondSlashed(address indexed from, address indexed to, uint256 amount);
    /// @notice A debtor's collateral did not cover its debt; its creditors were paid pro rata.
    /// @param epoch The epoch.
    /// @param debtor The debtor.
    /// @param unpaid What it could not pay.
    event Shortfall(uint64 indexed epoch, bytes32 indexed debtor, uint256 unpaid);
    /// @notice An epoch was settled: what moved for every active member, in netting order.
    /// @dev Emitted after the epoch's `SettlementTransfer`s.
    /// @param epoch The epoch.
    /// @param centres The members netted (active at settlement), in admission order.
    /// @param net What each one's collateral changed by (positive: it was paid); they sum to zero.
    event EpochSettled(uint64 indexed epoch, bytes32[] centres, int256[] net);
    /// @notice One transfer of a settlement: a debtor's collateral paid a creditor.
    /// @param epoch The epoch being settled.
    /// @param from The paying centre.
    /// @param to The paid centre.
    /// @param amount The amount, in the smallest credit unit.
    event SettlementTransfer(uint64 indexed epoch, bytes32 indexed from, bytes32 indexed to, uint256 amount);
    /// @notice A late anchor's claims were paid: what moved for its centre and each home it
    ///         claimed on, as `EpochSettled` shows an epoch's.
    /// @dev Emitted after its `SettlementTransfer`s.
    /// @param epoch The epoch.
    /// @param centre The late anchor's centre (the only creditor).
    /// @param centres `centre`, then the active homes with a standing claim, in the anchor's order.
    /// @param net What each one's collateral changed by; they sum to zero.
    event LateClaimsSettled(uint64 indexed epoch, bytes32 indexed centre, bytes32[] centres, int256[] net);

    /// @notice Caller is not the UsageLedger.
    error Unauthorized(address caller);
    /// @notice The epoch has already been settled.
    error AlreadySettled(uint64 epoch);
    /// @notice Not every active member anchored the epoch, or its answer deadline has not passed,
    ///         or it is more than `MAX_AHEAD` past `settledThrough`.
    error NotSettleable(uint64 epoch);
    /// @notice The account's free collateral is less than the amount.
    error InsufficientCollateral(address account, uint256 free, uint256 amount);
    /// @notice The account has no pending withdrawal.
    error NothingToWithdraw(address account);
    /// @notice The withdrawal waits for this epoch and every one before it to be settled, and for
    ///         this block time.
    error WithdrawalLocked(uint64 unlockEpoch, uint64 unlockTime);

    /// @param consortium_ The Consortium contract.
    /// @param usageLedger_ The UsageLedger contract.
    /// @param credit_ The ConsortiumCredit token.
    /// @param anchorBond_ Collateral locked per anchor.
    /// @param disputeBond_ Collateral locked per dispute.
    /// @param anchorWindow_ Seconds after an epoch's anchorQuorum-th anchor that settlement waits for the others.
    constructor(
        address consortium_,
        address usageLedger_,
        address credit_,
        uint256 anchorBond_,
        uint256 disputeBond_,
        uint64 anchorWindow_
    ) {
        consortium = Consortium(consortium_);
        usageLedger = UsageLedger(usageLedger_);
        credit = IERC20(credit_);
        anchorBond = anchorBond_;
        disputeBond = disputeBond_;
        anchorWindow = anchorWindow_;
        UsageLedger ledger = UsageLedger(usageLedger_);
        withdrawalDelay =
            MAX_ORDER_AHEAD + ledger.bookingDelay() + 2 * ledger.disputeWindow() + anchorWindow_ + WITHDRAWAL_MARGIN;
    }

    modifier onlyUsageLedger() {
        if (msg.sender != address(usageLedger)) revert Unauthorized(msg.sender);
        _;
    }

    // -- collateral -----------------------------------------------------------------------

    /// @notice Deposits `amount` of the caller's credit as its own collateral.
    /// @param amount The amount (the caller must have approved it).
    function deposit(uint256 amount) external {
        _deposit(msg.sender, amount);
    }

    /// @notice Deposits `amount` of the caller's credit as `account`'s collateral.
    /// @param account Whose collateral grows.
    /// @param amount The amount (the caller must have approved it).
    function depositFor(address account, uint256 amount) external {
        _deposit(account, amount);
    }

    /// @notice An account's collateral.
    /// @param account The account.
    /// @return balance Its collateral.
    /// @return locked The part locked as bonds.
    /// @return pendingWithdrawal The part asked to be withdrawn.
    /// @return unlockEpoch The epoch whose settlement releases the withdrawal.
    /// @return unlockTime The earliest block time it may be withdrawn.
    function collateralOf(address account)
        external
        view
        returns (uint256 balance, uint256 locked, uint256 pendingWithdrawal, uint64 unlockEpoch, uint64 unlockTime)
    {
        Collateral storage c = _collateral[account];
        return (c.balance, c.locked, c.pendingWithdrawal, c.unlockEpoch, c.unlockTime);
    }

    /// @notice An account's free collateral: balance - locked - pendingWithdrawal.
    /// @param account The account.
    /// @return The amount.
    function freeOf(address account) public view returns (uint256) {
        Collateral storage c = _collateral[account];
        uint256 committed = c.locked + c.pendingWithdrawal;
        return c.balance > committed ? c.balance - committed : 0;
    }

    /// @notice What settlement may take from an account for its debts: balance - locked (a
    ///         pending withdrawal included).
    /// @param account The account.
    /// @return The amount.
    function availableOf(address account) public view returns (uint256) {
        Collateral storage c = _collateral[account];
        return c.balance > c.locked ? c.balance - c.locked : 0;
    }

    /// @notice Asks to withdraw `amount` more of the caller's free collateral, once the epoch
    ///         two past the highest settled one and every epoch before it are settled
    ///         (`settledThrough`; the whole pending amount waits for it): every claim open now
    ///         is settled first, and no member can push the wait further by anchoring far ahead;
    ///         and `withdrawalDelay` seconds from now, so that a late claim for work ordered
    ///         before now (an epoch another member closes later) is paid from it first.
    /// @param amount The amount.
    function requestWithdrawal(uint256 amount) external {
        uint256 free = freeOf(msg.sender);
        if (amount > free) revert InsufficientCollateral(msg.sender, free, amount);
        Collateral storage c = _collateral[msg.sender];
        c.pendingWithdrawal += amount;
        uint64 top = usageLedger.highestSettled();
        c.unlockEpoch = top < type(uint64).max - 1 ? top + 2 : type(uint64).max; // never reached: one settlement per epoch
        c.unlockTime = uint64(block.timestamp) + withdrawalDelay;
        emit WithdrawalRequested(msg.sender, c.pendingWithdrawal, c.unlockEpoch, c.unlockTime);
    }

    /// @notice Transfers the caller's pending withdrawal out (what settlement left of it), once
    ///         every epoch up to its unlock epoch is settled and its unlock time has come.
    function withdraw() external {
        Collateral storage c = _collateral[msg.sender];
        if (c.pendingWithdrawal == 0) revert NothingToWithdraw(msg.sender);
        if (settledThrough < c.unlockEpoch || block.timestamp < c.unlockTime) {
            revert WithdrawalLocked(c.unlockEpoch, c.unlockTime);
        }
        uint256 available = c.balance - c.locked;
        uint256 amount = c.pendingWithdrawal < available ? c.pendingWithdrawal : available;
        c.pendingWithdrawal = 0;
        c.balance -= amount;
        emit Withdrawn(msg.sender, amount);
        credit.safeTransfer(msg.sender, amount);
    }

    // -- bonds (UsageLedger only) -----------------------------------------------------------

    /// @notice Locks `amount` of `account`'s free collateral.
    /// @param account The account.
    /// @param amount The amount; reverts InsufficientCollateral if not free.
    function lock(address account, uint256 amount) external onlyUsageLedger {
        uint256 free = freeOf(account);
        if (amount > free) revert InsufficientCollateral(account, free, amount);
        _lock(account, amount);
    }

    /// @notice Releases `amount` of `account`'s locked collateral.
    /// @param account The account.
    /// @param amount The amount.
    function unlock(address account, uint256 amount) external onlyUsageLedger {
        _collateral[account].locked -= amount;
        emit BondUnlocked(account, amount);
    }

    /// @notice Moves `amount` of `from`'s locked collateral to `to`'s collateral.
    /// @param from Whose bond is lost.
    /// @param to Who gets it.
    /// @param amount The amount.
    function slash(address from, address to, uint256 amount) external onlyUsageLedger {
        Collateral storage c = _collateral[from];
        c.locked -= amount;
        c.balance -= amount;
        _collateral[to].balance += amount;
        emit BondSlashed(from, to, amount);
    }

    // -- settlement -------------------------------------------------------------------------

    /// @notice Whether `epoch` has been settled.
    /// @param epoch The epoch.
    /// @return True when settled.
    function settled(uint64 epoch) public view returns (bool) {
        return (_settled[epoch >> 8] >> (epoch & 255)) & 1 == 1;
    }

    /// @notice Settles `epoch`: closes its disputes, nets the standing claims of the active
    ///         members and pays them from collateral.
    /// @dev Anyone may call; the outcome depends only on chain state. Never reverts for a
    ///      debtor's balance: a debtor short of collateral pays what it has (`Shortfall`).
    ///      The centres netted and what moved for each are the `EpochSettled` event (auditors
    ///      need the set that was netted: membership changes after settlement).
    ///      Reverts UsageLedger.FormerParticipants when a centre the epoch's claims name has left
    ///      the consortium since: `settleWithout` names those. Reverts NotSettleable for an
    ///      epoch more than `MAX_AHEAD` past `settledThrough`: it waits for those before it.
    /// @param epoch The epoch.
    function settle(uint64 epoch) external {
        _settle(epoch, new bytes32[](0));
    }

    /// @notice Settles `epoch` as `settle` does, taking out the claims by and on `formers`: the
    ///         centres its claims name that are no longer members, every one, in ascending order.
    /// @dev The ledger checks the list against its count of the epoch's participants, so a
    ///      caller can neither leave a former member's claims in nor take a member's out.
    /// @param epoch The epoch.
    /// @param formers The former members among the epoch's participants, ascending.
    function settleWithout(uint64 epoch, bytes32[] calldata formers) external {
        _settle(epoch, formers);
    }

    function _settle(uint64 epoch, bytes32[] memory formers) private {
        if (settled(epoch)) revert AlreadySettled(epoch);
        if (uint256(epoch) > uint256(settledThrough) + MAX_AHEAD || !usageLedger.settleable(epoch)) {
            revert NotSettleable(epoch);
        }
        _settled[epoch >> 8] |= uint256(1) << (epoch & 255);
        uint64 through = settledThrough;
        while (settled(through + 1)) through++;
        settledThrough = through;
        (bytes32[] memory ids, address[] memory accounts, int256[] memory net) = usageLedger.finalize(epoch, formers);
        int256[] memory moved = _collect(epoch, ids, accounts, net);
        _transfer(epoch, ids, accounts, moved);
        emit EpochSettled(epoch, ids, moved);
    }

    /// @notice Pays the claims of `centre`'s late anchor of the settled `epoch`, once its answer
    ///         deadline has passed: each active home it claimed on pays its standing claim from
    ///         collateral (a shortfall is `Shortfall`), closing that anchor's open disputes first.
    /// @dev Anyone may call, once per late anchor (UsageLedger.LateAlreadySettled after).
    /// @param epoch The epoch.
    /// @param centre The centre that anchored late.
    function settleLate(uint64 epoch, bytes32 centre) external {
        if (!settled(epoch)) revert NotSettleable(epoch);
        (bytes32[] memory ids, address[] memory accounts, int256[] memory net) = usageLedger.finalizeLate(epoch, centre);
        int256[] memory moved = _collect(epoch, ids, accounts, net);
        _transfer(epoch, ids, accounts, moved);
        emit LateClaimsSettled(epoch, centre, ids, moved);
    }

    function _deposit(address account, uint256 amount) private {
        _collateral[account].balance += amount;
        emit Deposited(account, amount);
        credit.safeTransferFrom(msg.sender, address(this), amount);
    }

    function _lock(address account, uint256 amount) private {
        _collateral[account].locked += amount;
        emit BondLocked(account, amount);
    }

    /// @dev What moves: each debtor pays min(debt, balance - locked); creditors share what was
    ///      collected pro rata when that falls short of the debts.
    function _collect(uint64 epoch, bytes32[] memory ids, address[] memory accounts, int256[] memory net)
        private
        returns (int256[] memory moved)
    {
        uint256 n = ids.length;
        moved = new int256[](n);
        uint256 totalDebt = 0;
        uint256 collected = 0;
        for (uint256 i = 0; i < n; i++) {
            if (net[i] >= 0) continue;
            uint256 debt = uint256(-net[i]);
            uint256 available = availableOf(accounts[i]);
            uint256 paid = debt < available ? debt : available;
            totalDebt += debt;
            collected += paid;
            moved[i] = -int256(paid);
            if (paid < debt) emit Shortfall(epoch, ids[i], debt - paid);
        }
        uint256 shared = 0;
        uint256 first = n;
        for (uint256 i = 0; i < n; i++) {
            if (net[i] <= 0) continue;
            uint256 share = collected == totalDebt ? uint256(net[i]) : Math.mulDiv(uint256(net[i]), collected, totalDebt);
            moved[i] = int256(share);
            shared += share;
            if (first == n) first = i;
        }
        if (first < n) moved[first] += int256(collected - shared);
    }

    function _transfer(uint64 epoch, bytes32[] memory ids, address[] memory accounts, int256[] memory moved)
        private
    {
        uint256 n = ids.length;
        int256[] memory left = new int256[](n);
        for (uint256 i = 0; i < n; i++) {
            left[i] = moved[i];
        }
        uint256 d = _nextWith(left, 0, false);
        uint256 c = _nextWith(left, 0, true);
        while (d < n && c < n) {
            uint256 debt = uint256(-left[d]);
            uint256 due = uint256(left[c]);
            uint256 amount = debt < due ? debt : due;
            left[d] += int256(amount);
            left[c] -= int256(amount);
            _collateral[accounts[d]].balance -= amount;
            _collateral[accounts[c]].balance += amount;
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

}
