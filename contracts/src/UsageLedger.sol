// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Consortium} from "./Consortium.sol";
import {meteredPrice} from "./Pricing.sol";
import {Settlement} from "./Settlement.sol";
import {verifySumProof} from "./SumTree.sol";

/// @title UsageLedger
/// @notice Per-epoch claims of each serving centre on each payer home, as Merkle sum trees of
///         signed usage records, and the disputes that void a claim nobody can evidence.
/// @dev One anchor per centre per epoch, never a transaction per job. A claim stands unless
///      a dispute of one of its records goes unanswered (or is answered too late), or two of its
///      records bill the same grant. An answer is the record's evidence: the order its payment
///      account signed, the grant its home signed, the price at the pinned rates, and the user's
///      receipt or the result key. Its EIP-712 domain ("xcentre", "1", this contract) is the one
///      every order, grant, receipt and record of the deployment is signed under.
contract UsageLedger is EIP712 {
    /// @notice A user's order, signed by a fresh payment account (the recovered signer).
    struct Order {
        bytes32 request;
        bytes32 centre;
        uint64 ratesVersion;
        uint256 maxPrice;
        uint64 deadline;
        uint256 nonce;
    }

    /// @notice A home's promise to pay up to `amount` for an order, signed by the home's account.
    struct Grant {
        bytes32 order;
        address account;
        bytes32 home;
        bytes32 centre;
        uint256 amount;
        uint64 deadline;
    }

    /// @notice A serving centre's signed usage record of one job. `groupSignature` is keccak256 of the group
    ///         signature an anonymous job was submitted under (what a supervisor may ask to open), zero for a
    ///         job signed on with a session.
    struct UsageRecord {
        bytes32 recordId;
        bytes32 jobId;
        bytes32 servingCentre;
        bytes32 homeCentre;
        bytes32 user;
        uint64 epoch;
        uint64 startedAt;
        uint64 endedAt;
        uint64 cpuMillis;
        uint64 wallMillis;
        uint64 maxRssKib;
        uint64 gpuMillis;
        uint64 ratesVersion;
        uint256 price;
        bytes32 order;
        bytes32 grant;
        bytes32 lockHash;
        bytes32 decision;
        bytes32 groupSignature;
    }

    /// @notice What answers a dispute: the record, its order and grant with their signatures,
    ///         the receipt signature or the result key, and the record's sum-tree proof.
    struct Evidence {
        UsageRecord record;
        Order order;
        bytes orderSig;
        Grant grant;
        bytes grantSig;
        bytes receiptSig;
        bytes32 key;
        bytes32[] hashes;
        uint256[] sums;
    }

    /// @notice One record of a claim with its sum-tree proof, for `disputeDuplicate`.
    struct DuplicateLeaf {
        uint64 epoch;
        uint64 index;
        UsageRecord record;
        bytes32[] hashes;
        uint256[] sums;
    }

    /// @dev One centre's anchor of one epoch: when, how many records, and its decision log
    ///      (the Merkle root and entry count of the access decisions it logged in the epoch;
    ///      both zero when it logged none). Two slots: the times, counts and flags, then the root.
    ///      `late`: made after the epoch's anchor deadline or its settlement, so its claims are
    ///      not in the epoch's netting but wait for `Settlement.settleLate`; `lateSettled`: that
    ///      has happened.
    struct Anchor {
        uint64 anchoredAt;
        uint64 recordCount;
        uint64 decisionCount;
        bool late;
        bool lateSettled;
        bytes32 decisionRoot;
    }

    /// @dev A centre's anchor bond, locked across epochs: the account it last anchored with
    ///      (where its collateral is debited and credited) and what is still locked.
    struct Bond {
        address account;
        uint96 amount;
    }

    /// @dev A bond movement of `finalize`, made after every state change: a slash to `to`, or
    ///      an unlock when `to` is zero.
    struct BondMove {
        address from;
        address to;
        uint256 amount;
    }

    /// @dev A centre's claim on one home for one epoch: the sum tree's root, leaves and total
    ///      (two slots: the root, then count, flags and total). `netted`: the claim is in the
    ///      epoch's running nets (an on-time anchor, and not on the centre's own users).
    struct Claim {
        bytes32 root;
        uint64 count;
        bool voided;
        bool netted;
        uint128 total;
    }

    /// @dev A centre's running net for one epoch, kept as claims are anchored and voided: what
    ///      its standing netted claims hold minus what standing netted claims hold on it. One
    ///      slot; `listed`: the centre is in the epoch's participants.
    struct Position {
        int248 net;
        bool listed;
    }

    /// @dev One epoch's on-time anchoring, one slot: when the anchor that started its clock was
    ///      made (the anchor deadline counts from it: the `Consortium.anchorQuorum`-th on-time
    ///      anchor, so no coalition short of a quorum can start it early), how many centres'
    ///      running nets its on-time anchors touched (its participants: settlement checks that
    ///      every one is an active member or named as a former one, whose claims it takes out),
    ///      and how many on-time anchors it had until its clock started.
    struct EpochBook {
        uint64 firstAnchorAt;
        uint64 participants;
        uint64 anchors;
    }

    enum Status {
        None,
        Open,
        Answered,
        Upheld
    }

    /// @dev A dispute of one record of a claim.
    struct Dispute {
        address challenger;
        uint64 epoch;
        bool needKey;
        Status status;
        bytes32 centre;
        bytes32 home;
        uint64 index;
    }

    /// @notice The largest claim one centre may anchor on a home for one epoch.
    /// @dev Settlement nets claims as int256: bounding each claim keeps every cast exact and
    ///      every sum far from overflow, so an anchored epoch can always be netted.
    uint256 public constant MAX_CLAIM = type(uint128).max;

    bytes32 private constant ORDER_TYPEHASH = keccak256(
        "Order(bytes32 request,bytes32 centre,uint64 ratesVersion,uint256 maxPrice,uint64 deadline,uint256 nonce)"
    );
    bytes32 private constant GRANT_TYPEHASH = keccak256(
        "Grant(bytes32 order,address account,bytes32 home,bytes32 centre,uint256 amount,uint64 deadline)"
    );
    bytes32 private constant RECEIPT_TYPEHASH = keccak256("Receipt(bytes32 record)");
    bytes32 private constant RECORD_TYPEHASH = keccak256(
        "UsageRecord(bytes32 recordId,bytes32 jobId,bytes32 servingCentre,bytes32 homeCentre,bytes32 user,"
        "uint64 epoch,uint64 startedAt,uint64 endedAt,uint64 cpuMillis,uint64 wallMillis,uint64 maxRssKib,"
        "uint64 gpuMillis,uint64 ratesVersion,uint256 price,bytes32 order,bytes32 grant,bytes32 lockHash,"
        "bytes32 decision,bytes32 groupSignature)"
    );

    /// @notice The member registry consulted for who may anchor, who may be named, keys and rates.
    Consortium public immutable consortium;
    /// @notice Seconds after an anchor during which its records may be disputed; answers are
    ///         due within as many seconds again.
    uint64 public immutable disputeWindow;
    /// @notice Seconds after an order's deadline within which its record must be anchored.
    uint64 public immutable bookingDelay;
    /// @notice Seconds an epoch lasts on the chain's clock; 0: no clock (epochs are the centres' own
    ///         counters, and an epoch's anchor deadline counts from its `anchorQuorum`-th on-time anchor).
    /// @dev With a clock, epoch e ends at `epochOrigin + e * epochLength` for every centre alike: it
    ///      may be anchored from then on, and its anchors are late after that + `anchorWindow`, so
    ///      no coalition can run epochs ahead of the others and an on-time claim settles by a known time.
    uint64 public immutable epochLength;
    /// @notice When epoch 1 starts on the chain's clock: the deployment's block time rounded down to a
    ///         multiple of `epochLength` (0 without a clock), so epochs turn on round times.
    uint64 public immutable epochOrigin;
    /// @notice The deployer, allowed to set the settlement contract once.
    address public immutable deployer;
    /// @notice The Settlement contract: the collateral vault bonds are locked in.
    Settlement public settlement;
    /// @notice The highest epoch settled so far (0 before the first settlement). An anchor may
    ///         name no epoch past it + 2, and a withdrawal waits for it + 2 to settle.
    /// @dev Packed with `settlement`: an anchor reads both in one slot.
    uint64 public highestSettled;

    mapping(bytes32 => mapping(uint64 => Anchor)) private _anchors;
    mapping(uint64 => mapping(bytes32 => mapping(bytes32 => Claim))) private _claims;
    mapping(bytes32 => Bond) private _bonds;
    mapping(uint64 => mapping(bytes32 => Position)) private _positions;
    mapping(uint64 => EpochBook) private _books;
    /// @dev The homes of a late anchor, in the order given (what `settleLate` pays on).
    mapping(uint64 => mapping(bytes32 => bytes32[])) private _lateHomes;
    /// @dev The disputes of a late anchor's claims: `settleLate` closes them, not the epoch's settlement.
    mapping(uint64 => mapping(bytes32 => uint256[])) private _lateDisputes;
    /// @dev Bit (epoch & 255) of word (epoch >> 8): the epoch was finalized by its settlement.
    mapping(uint256 => uint256) private _finalized;
    mapping(uint256 => Dispute) private _disputes;
    mapping(uint64 => uint256[]) private _epochDisputes;
    mapping(bytes32 => uint256) private _leafDispute;
    /// @dev Grant digest -> the leaf (centre, epoch, home, index) whose answer it paid.
    mapping(bytes32 => bytes32) private _answeredGrant;
    uint256 private _disputeCount;

    /// @notice The Settlement contract was set (once, by the deployer).
    /// @param settlement The Settlement contract's address.
    event SettlementSet(address indexed settlement);
    /// @notice A centre anchored an epoch: per payer home, the root, count and total of its records.
    /// @param centre The anchoring (serving, creditor) centre.
    /// @param epoch The epoch.
    /// @param homes The payer homes (the centre itself for its own users' records, never claimed).
    /// @param roots Each home's sum-tree root.
    /// @param counts Each home's number of records.
    /// @param totals Each home's claim (the root's sum).
    /// @param anchoredAt Block time of the anchor.
    /// @param decisionRoot Merkle root of the centre's access-decision log of the epoch (0: none).
    /// @param decisionCount Entries of that log.
    event EpochAnchored(
        bytes32 indexed centre,
        uint64 indexed epoch,
        bytes32[] homes,
        bytes32[] roots,
        uint64[] counts,
        uint256[] totals,
        uint64 anchoredAt,
        bytes32 decisionRoot,
        uint64 decisionCount
    );
    /// @notice An anchor came after the epoch's anchor deadline or its settlement: its claims
    ///         are not netted with the epoch but paid by `Settlement.settleLate` once its answer
    ///         deadline has passed.
    /// @param centre The anchoring centre.
    /// @param epoch The epoch.
    event AnchoredLate(bytes32 indexed centre, uint64 indexed epoch);
    /// @notice A record of a claim was disputed.
    /// @param id The dispute id (ids count from 1).
    /// @param centre The claimant (serving centre).
    /// @param epoch The epoch.
    /// @param home The payer home of the claim.
    /// @param index The record's leaf index in the claim's sum tree.
    /// @param needKey Whether only a reveal of the result key answers it.
    /// @param challenger Whose dispute bond is locked.
    event Disputed(
        uint256 indexed id,
        bytes32 indexed centre,
        uint64 indexed epoch,
        bytes32 home,
        uint64 index,
        bool needKey,
        address challenger
    );
    /// @notice A dispute was answered with valid evidence; the claim stands.
    /// @param id The dispute id.
    /// @param recordDigest The record's EIP-712 digest.
    /// @param key The revealed result key (0 when answered by a receipt).
    event DisputeAnswered(uint256 indexed id, bytes32 recordDigest, bytes32 key);
    /// @notice A claim was voided: it is no longer paid.
    /// @param centre The claimant.
    /// @param epoch The epoch.
    /// @param home The payer home.
    /// @param disputeId The unanswered dispute, or 0 for a duplicate-grant proof.
    event ClaimVoided(bytes32 indexed centre, uint64 indexed epoch, bytes32 indexed home, uint256 disputeId);

    /// @notice Caller is not allowed for this operation.
    error Unauthorized(address caller);
    /// @notice The settlement contract has already been set.
    error SettlementAlreadySet(address settlement);
    /// @notice The zero address is not a settlement contract.
    error InvalidSettlement();
    /// @notice This centre has already anchored this epoch.
    error AlreadyAnchored(bytes32 centre, uint64 epoch);
    /// @notice The epoch has not ended on the chain's clock: it may be anchored from `endsAt`.
    error EpochNotOver(uint64 epoch, uint256 endsAt);
    /// @notice The epoch has not been settled yet (a late anchor waits for its settlement).
    error EpochNotFinalized(uint64 epoch);
    /// @notice The centre made no late anchor of the epoch (none at all, or on time).
    error NotLate(bytes32 centre, uint64 epoch);
    /// @notice The centre's late claims of the epoch have been settled already.
    error LateAlreadySettled(bytes32 centre, uint64 epoch);
    /// @notice Answers to disputes of this anchor are due until this time.
    error AnswersDue(uint256 deadline);
    /// @notice `count` of the epoch's participants are no longer members: settle naming them.
    error FormerParticipants(uint64 epoch, uint256 count);
    /// @notice Not a participant of the epoch that is no longer a member, or named out of order.
    error NotFormer(bytes32 centre);
    /// @notice A decision log's root and count must both be zero (no log) or both non-zero.
    error InvalidDecisionLog();
    /// @notice homes, roots, counts and totals differ in length.
    error LengthMismatch();
    /// @notice A named home is not an active member.
    error UnknownHome(bytes32 home);
    /// @notice The same home is named twice.
    error DuplicateHome(bytes32 home);
    /// @notice A claim with no records is not anchored.
    error EmptyClaim(bytes32 home);
    /// @notice A claim exceeds MAX_CLAIM.
    error ClaimTooLarge(bytes32 home, uint256 total);
    /// @notice The centre anchored no claim on this home for this epoch.
    error NoClaim(bytes32 centre, uint64 epoch, bytes32 home);
    /// @notice The leaf index is not below the claim's record count.
    error IndexOutOfRange(uint64 index, uint64 count);
    /// @notice The time for this action has passed.
    error TooLate(uint256 deadline);
    /// @notice The claim is already void.
    error AlreadyVoided(bytes32 centre, uint64 epoch, bytes32 home);
    /// @notice This record has already been disputed this way (with or without needKey).
    error AlreadyDisputed(uint256 id);
    /// @notice No open dispute has this id.
    error DisputeNotOpen(uint256 id);
    /// @notice The record does not name the disputed centre, home and epoch.
    error WrongRecord();
    /// @notice The record and its amount are not the disputed leaf of the claim.
    error InvalidProof();
    /// @notice The order is not the record's, or not for its centre and rates version.
    error OrderMismatch();
    /// @notice The order is not signed by the grant's account.
    error InvalidOrderSignature();
    /// @notice The grant is not the record's, or not for its order, home, centre and terms.
    error GrantMismatch();
    /// @notice The grant is not signed by the home's account.
    error InvalidGrantSignature();
    /// @notice The record's price is not min(meters x pinned rates, grant amount).
    error WrongPrice(uint256 expected, uint256 claimed);
    /// @notice The job ended after the order's deadline, or was anchored after the booking delay.
    error Late();
    /// @notice The key does not open the record's lock (keccak256(key) != lockHash).
    error WrongKey();
    /// @notice Neither a valid receipt by the order's account nor the result key.
    error NoReceipt();
    /// @notice The two leaves are the same record position or bill different grants.
    error NotDuplicate();
    /// @notice The record's grant already answered a dispute of another leaf: a grant is paid once.
    error GrantAlreadyAnswered(bytes32 grant, bytes32 answeredLeaf);
    /// @notice The centre is an active member: its anchor bond stays locked.
    error StillMember(bytes32 centre);
    /// @notice An anchor's claims count more than 2^64 - 1 records in all.
    error TooManyRecords(uint256 count);
    /// @notice A centre may not dispute its own claim (it would win back its own anchor bond).
    error OwnClaim(bytes32 centre);
    /// @notice A claim on the centre's own users is never paid: there is nothing to dispute.
    error OwnUsers(bytes32 centre);
    /// @notice Only the claim's payer home may say its user lacks the result key.
    error NotPayerHome(address caller, bytes32 home);

    /// @param consortium_ The Consortium contract.
    /// @param disputeWindow_ Seconds to dispute after an anchor (answers: as many again).
    /// @param bookingDelay_ Seconds after an order's deadline its record may still be anchored.
    /// @param epochLength_ Seconds an epoch lasts on the chain's clock (0: no clock).
    constructor(address consortium_, uint64 disputeWindow_, uint64 bookingDelay_, uint64 epochLength_)
        EIP712("xcentre", "1")
    {
        consortium = Consortium(consortium_);
        disputeWindow = disputeWindow_;
        bookingDelay = bookingDelay_;
        epochLength = epochLength_;
        epochOrigin = epochLength_ == 0 ? 0 : uint64(block.timestamp / epochLength_ * epochLength_); // rounded down
        deployer = msg.sender;
    }

    modifier onlySettlement() {
        if (msg.sender != address(settlement)) revert Unauthorized(msg.sender);
        _;
    }

    /// @notice Sets the Settlement contract; callable once, by the deployer.
    /// @param settlement_ The Settlement contract's address.
    function setSettlement(address settlement_) external {
        if (msg.sender != deployer) revert Unauthorized(msg.sender);
        if (address(settlement) != address(0)) revert SettlementAlreadySet(address(settlement));
        if (settlement_ == address(0)) revert InvalidSettlement();
        settlement = Settlement(settlement_);
        emit SettlementSet(settlement_);
    }

    // -- anchoring ----------------------------------------------------------------------

    /// @notice Anchors the caller's records of `epoch`: per payer home, a sum-tree root, the
    ///         record count and the total claimed; and the Merkle root and size of its log of
    ///         access decisions of the epoch, so that log cannot be rewritten later. Tops the
    ///         anchor bond up to `anchorBond` from the caller's free collateral
    ///         (InsufficientCollateral when it cannot: nothing would back the claim).
    /// @dev The caller's member id is the claimant; reverts NotMember for non-members. Any epoch
    ///      may be anchored: withdrawals wait on settled epochs (`highestSettled`), never on
    ///      anchored ones, so a far epoch holds nothing hostage, and an honest anchor is never
    ///      held back (a late anchor would make its records unanswerable: rule 6 of `answer`).
    ///      An on-time anchor (before `anchorDeadline` and the epoch's settlement) moves the
    ///      epoch's running nets: + total to the caller, - total to each home. A later one is
    ///      `AnchoredLate`: its claims wait for `Settlement.settleLate`. A home that is the caller
    ///      itself is anchored for the audit and never claimed. A centre that logged decisions
    ///      but served no records anchors with no homes.
    /// @param epoch The epoch number.
    /// @param homes The payer homes (active members, no duplicates).
    /// @param roots Each home's sum-tree root.
    /// @param counts Each home's number of records (at least 1).
    /// @param totals Each home's total (the root's sum, at most MAX_CLAIM).
    /// @param decisionRoot Merkle root of the decision log's entries (0 with no entries).
    /// @param decisionCount The log's number of entries (0 with no log).
    function anchor(
        uint64 epoch,
        bytes32[] calldata homes,
        bytes32[] calldata roots,
        uint64[] calldata counts,
        uint256[] calldata totals,
        bytes32 decisionRoot,
        uint64 decisionCount
    ) external {
        bytes32 centre = consortium.idOf(msg.sender);
        if (_anchors[centre][epoch].anchoredAt != 0) revert AlreadyAnchored(centre, epoch);
        _checkOver(epoch);
        if ((decisionRoot == bytes32(0)) != (decisionCount == 0)) revert InvalidDecisionLog();
        // block.timestamp is read twice, not kept: eleven parameters leave no stack slot for it.
        {
            uint64 recordCount = _storeClaims(_claims[epoch][centre], homes, roots, counts, totals);
            _anchors[centre][epoch] =
                Anchor(uint64(block.timestamp), recordCount, decisionCount, _isLate(epoch), false, decisionRoot);
        }
        emit EpochAnchored(
            centre, epoch, homes, roots, counts, totals, uint64(block.timestamp), decisionRoot, decisionCount
        );
        _place(epoch, centre, homes, totals);
        _bondAnchor(centre);
    }

    /// @notice A centre's anchor bond: the account it last anchored with and what is locked.
    /// @dev The bond stays locked across epochs; each anchor tops it up to `anchorBond` from
    ///      the account's free collateral. An upheld dispute or a
    ///      duplicate-grant proof pays what is locked to the challenger.
    /// @param centre The centre id.
    /// @return account The account (zero before its first anchor).
    /// @return amount The amount locked.
    function bondOf(bytes32 centre) external view returns (address account, uint256 amount) {
        Bond storage b = _bonds[centre];
        return (b.account, b.amount);
    }

    /// @notice Releases the anchor bond of a centre that is no longer an active member.
    /// @dev Anyone may call. A former member's claims are no longer netted, so its bond secures
    ///      nothing; a readmitted member bonds again with its next anchor.
    /// @param centre The centre id.
    function releaseBond(bytes32 centre) external {
        if (consortium.isMember(centre)) revert StillMember(centre);
        Bond storage b = _bonds[centre];
        uint96 amount = b.amount;
        if (amount == 0) return;
        b.amount = 0;
        settlement.unlock(b.account, amount);
    }

    /// @notice The anchor of `centre` for `epoch`.
    /// @param centre The centre id.
    /// @param epoch The epoch.
    /// @return anchored Whether the centre has anchored this epoch.
    /// @return anchoredAt Block time of the anchor.
    /// @return recordCount Its records over all homes.
    function anchorOf(bytes32 centre, uint64 epoch)
        external
        view
        returns (bool anchored, uint64 anchoredAt, uint64 recordCount)
    {
        Anchor storage a = _anchors[centre][epoch];
        return (a.anchoredAt != 0, a.anchoredAt, a.recordCount);
    }

    /// @notice Whether `centre`'s anchor of `epoch` was late, and whether its claims were settled.
    /// @param centre The centre id.
    /// @param epoch The epoch.
    /// @return late True when the anchor came after the deadline or the epoch's settlement.
    /// @return settled True once `Settlement.settleLate` paid its claims.
    function lateOf(bytes32 centre, uint64 epoch) external view returns (bool late, bool settled) {
        Anchor storage a = _anchors[centre][epoch];
        return (a.late, a.lateSettled);
    }

    /// @notice When `epoch` stops waiting for silent members: the time of its on-time anchor
    ///         that reached `Consortium.anchorQuorum` plus `Settlement.anchorWindow` (0 before
    ///         that anchor). Anchors after it are late.
    /// @param epoch The epoch.
    /// @return The time.
    function anchorDeadline(uint64 epoch) public view returns (uint256) {
        uint256 start = _clockStart(epoch);
        return start == 0 ? 0 : start + settlement.anchorWindow();
    }

    /// @notice When `epoch` ends on the chain's clock: it may be anchored from then (0 without a clock).
    /// @param epoch The epoch.
    /// @return The time.
    function epochEnd(uint64 epoch) public view returns (uint256) {
        return uint256(epochOrigin) + uint256(epoch) * epochLength;
    }

    /// @notice `centre`'s running net for `epoch`: standing on-time claims it holds minus those
    ///         on it, every counterparty counted (settlement drops former members' claims).
    /// @param epoch The epoch.
    /// @param centre The centre id.
    /// @return The net.
    function positionOf(uint64 epoch, bytes32 centre) external view returns (int256) {
        return _positions[epoch][centre].net;
    }

    /// @notice How many centres `epoch`'s on-time anchors touched: each anchoring centre and each
    ///         other home it claimed on, once each (voided claims included).
    /// @param epoch The epoch.
    /// @return The count.
    function participantCount(uint64 epoch) external view returns (uint256) {
        return _books[epoch].participants;
    }

    /// @notice The decision log `centre` anchored for `epoch`.
    /// @param centre The centre id.
    /// @param epoch The epoch.
    /// @return root Merkle root of the log's entries (0: none, or not anchored).
    /// @return count Its number of entries.
    function decisionsOf(bytes32 centre, uint64 epoch) external view returns (bytes32 root, uint64 count) {
        Anchor storage a = _anchors[centre][epoch];
        return (a.decisionRoot, a.decisionCount);
    }

    /// @notice The claim `creditor` anchored on `home` for `epoch`.
    /// @param epoch The epoch.
    /// @param creditor The anchoring centre.
    /// @param home The payer home.
    /// @return root The sum-tree root.
    /// @return count The number of records (0: no claim).
    /// @return total The amount claimed.
    /// @return voided Whether a dispute or a duplicate voided it.
    function claimOf(uint64 epoch, bytes32 creditor, bytes32 home)
        external
        view
        returns (bytes32 root, uint64 count, uint256 total, bool voided)
    {
        Claim storage c = _claims[epoch][creditor][home];
        return (c.root, c.count, c.total, c.voided);
    }

    /// @notice The active members `centre` anchored claims on for `epoch`, in admission order.
    /// @dev Not stored (an anchor stays cheap): the complete list, former members included and in
    ///      the order given, is the anchor's `EpochAnchored` event.
    /// @param epoch The epoch.
    /// @param centre The anchoring centre.
    /// @return homes The homes.
    function homesOf(uint64 epoch, bytes32 centre) external view returns (bytes32[] memory homes) {
        bytes32[] memory ids = consortium.memberIds();
        homes = new bytes32[](ids.length);
        uint256 n = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            if (_claims[epoch][centre][ids[i]].count != 0) homes[n++] = ids[i];
        }
        assembly ("memory-safe") {
            mstore(homes, n)
        }
    }

    /// @notice What `debtor` owes `creditor` for `epoch`: the claim's total unless voided.
    /// @param epoch The epoch.
    /// @param creditor The claimant.
    /// @param debtor The payer home.
    /// @return The amount (0 for a centre's own users' records).
    function standing(uint64 epoch, bytes32 creditor, bytes32 debtor) external view returns (uint256) {
        Claim storage c = _claims[epoch][creditor][debtor];
        if (creditor == debtor || c.voided) return 0;
        return c.total;
    }

    /// @notice Whether (recordDigest, amount) is leaf `index` of `centre`'s claim on `home`.
    /// @param centre The serving centre.
    /// @param epoch The epoch.
    /// @param home The payer home.
    /// @param index The leaf index.
    /// @param recordDigest The record's EIP-712 digest.
    /// @param amount The leaf's amount (the record's price).
    /// @param hashes Sibling hashes from the leaf level up.
    /// @param sums Sibling sums from the leaf level up.
    /// @return True when the proof checks against an anchored claim.
    function verifyRecord(
        bytes32 centre,
        uint64 epoch,
        bytes32 home,
        uint64 index,
        bytes32 recordDigest,
        uint256 amount,
        bytes32[] calldata hashes,
        uint256[] calldata sums
    ) public view returns (bool) {
        Claim storage c = _claims[epoch][centre][home];
        return c.count != 0 && verifySumProof(c.root, c.total, c.count, index, recordDigest, amount, hashes, sums);
    }

    // -- disputes -----------------------------------------------------------------------

    /// @notice Disputes record `index` of `centre`'s claim on `home` for `epoch`, locking the
    ///         dispute bond from the caller's free collateral. Unanswered by the answer deadline,
    ///         it voids the whole claim and wins the claimant's anchor bond.
    /// @dev A record is disputed at most once without and once with needKey, so an answered
    ///      record cannot be disputed again to make its claimant pay for answering again. The
    ///      claimant may not dispute its own claim (OwnClaim), a claim on the claimant's own
    ///      users is never disputed (OwnUsers), and only the payer home may open a needKey
    ///      dispute (NotPayerHome): nobody else can know whether its user got the key.
    /// @param centre The claimant.
    /// @param epoch The epoch.
    /// @param home The payer home.
    /// @param index The leaf index.
    /// @param needKey True when the user did not get the result key: only its reveal answers.
    /// @return id The dispute id.
    function dispute(bytes32 centre, uint64 epoch, bytes32 home, uint64 index, bool needKey)
        external
        returns (uint256 id)
    {
        Claim storage c = _claims[epoch][centre][home];
        if (c.count == 0) revert NoClaim(centre, epoch, home);
        if (index >= c.count) revert IndexOutOfRange(index, c.count);
        Anchor storage a = _anchors[centre][epoch];
        uint256 deadline = uint256(a.anchoredAt) + disputeWindow;
        if (block.timestamp > deadline) revert TooLate(deadline);
        if (c.voided) revert AlreadyVoided(centre, epoch, home);
        if (home == centre) revert OwnUsers(centre);
        if (_isAccountOf(centre, msg.sender)) revert OwnClaim(centre);
        if (needKey && !_isAccountOf(home, msg.sender)) revert NotPayerHome(msg.sender, home);
        bytes32 leaf = keccak256(abi.encode(centre, epoch, home, index, needKey));
        uint256 earlier = _leafDispute[leaf];
        if (earlier != 0) revert AlreadyDisputed(earlier);
        id = ++_disputeCount;
        _leafDispute[leaf] = id;
        _disputes[id] = Dispute(msg.sender, epoch, needKey, Status.Open, centre, home, index);
        if (a.late) _lateDisputes[epoch][centre].push(id);
        else _epochDisputes[epoch].push(id);
        settlement.lock(msg.sender, settlement.disputeBond());
        emit Disputed(id, centre, epoch, home, index, needKey, msg.sender);
    }

    /// @notice A dispute: who opened it, on which record, and where it stands.
    /// @param id The dispute id.
    /// @return challenger Whose bond is locked.
    /// @return centre The claimant.
    /// @return epoch The epoch.
    /// @return home The payer home.
    /// @return index The leaf index.
    /// @return needKey Whether only a key reveal answers it.
    /// @return status 0 none, 1 open, 2 answered, 3 upheld (the claim was voided).
    function disputeOf(uint256 id)
        external
        view
        returns (
            address challenger,
            bytes32 centre,
            uint64 epoch,
            bytes32 home,
            uint64 index,
            bool needKey,
            uint8 status
        )
    {
        Dispute storage d = _disputes[id];
        return (d.challenger, d.centre, d.epoch, d.home, d.index, d.needKey, uint8(d.status));
    }

    /// @notice Answers an open dispute with the record's evidence; reverts with the first
    ///         rule the evidence breaks. Anyone may answer (normally the claimant).
    /// @dev A receipt answer slashes the challenger's bond to the claimant; a key reveal
    ///      answering a needKey dispute returns it (the user did lack the key).
    /// @param id The dispute id.
    /// @param ev The evidence.
    function answer(uint256 id, Evidence calldata ev) external {
        Dispute storage d = _disputes[id];
        if (d.status != Status.Open) revert DisputeNotOpen(id);
        Anchor storage a = _anchors[d.centre][d.epoch];
        uint256 deadline = uint256(a.anchoredAt) + 2 * uint256(disputeWindow);
        if (block.timestamp > deadline) revert TooLate(deadline);
        bytes32 recordDigest = _checkDisputedLeaf(d, ev);
        _checkTerms(ev, d.centre, d.home, a.anchoredAt);
        bool keyOpens = keccak256(abi.encodePacked(ev.key)) == ev.record.lockHash;
        if (d.needKey) {
            if (!keyOpens) revert WrongKey();
        } else if (!keyOpens && !_signedBy(_receiptDigest(recordDigest), ev.receiptSig, ev.grant.account)) {
            revert NoReceipt();
        }
        _payGrantOnce(ev.record.grant, keccak256(abi.encode(d.centre, d.epoch, d.home, d.index)));
        d.status = Status.Answered;
        if (d.needKey) {
            settlement.unlock(d.challenger, settlement.disputeBond());
        } else {
            settlement.slash(d.challenger, _bonds[d.centre].account, settlement.disputeBond());
        }
        emit DisputeAnswered(id, recordDigest, keyOpens ? ev.key : bytes32(0));
    }

    /// @notice Proves that `centre` billed one grant twice (in one claim or in two epochs'
    ///         claims on `home`): voids the claim of `b.epoch` at once and pays its anchor bond
    ///         to the caller.
    /// @dev `b.epoch` must still be within its answer deadline (and so unsettled).
    /// @param centre The claimant.
    /// @param home The payer home.
    /// @param a The first record and its proof.
    /// @param b The second record (of the claim to void) and its proof.
    function disputeDuplicate(bytes32 centre, bytes32 home, DuplicateLeaf calldata a, DuplicateLeaf calldata b)
        external
    {
        if ((a.epoch == b.epoch && a.index == b.index) || a.record.grant != b.record.grant) revert NotDuplicate();
        uint256 deadline = uint256(_anchors[centre][b.epoch].anchoredAt) + 2 * uint256(disputeWindow);
        if (block.timestamp > deadline) revert TooLate(deadline);
        Claim storage claimB = _claims[b.epoch][centre][home];
        if (claimB.voided) revert AlreadyVoided(centre, b.epoch, home);
        _checkLeaf(centre, home, a);
        _checkLeaf(centre, home, b);
        _void(b.epoch, centre, home, claimB, 0);
        _slashAnchorBond(centre, msg.sender);
    }

    // -- settlement -----------------------------------------------------------------------

    /// @notice Whether `epoch` may be settled: the answer deadline of its latest on-time anchor
    ///         has passed, and every active member anchored it or its anchor deadline has passed
    ///         (a silent member then blocks nobody: the claims on it are netted, its own wait).
    /// @param epoch The epoch.
    /// @return True when settleable.
    function settleable(uint64 epoch) external view returns (bool) {
        uint256 first = _clockStart(epoch);
        bytes32[] memory ids = consortium.memberIds();
        uint256 last = 0;
        bool everyone = ids.length != 0;
        for (uint256 i = 0; i < ids.length; i++) {
            Anchor storage a = _anchors[ids[i]][epoch];
            (uint256 at, bool late) = (a.anchoredAt, a.late);
            if (at == 0) everyone = false;
            else if (!late && at > last) last = at;
        }
        if (block.timestamp <= last + 2 * uint256(disputeWindow)) return false;
        return everyone || (first != 0 && block.timestamp > first + settlement.anchorWindow());
    }

    /// @notice Closes `epoch` and nets it: every dispute still open voids its claim, wins the
    ///         claimant's anchor bond (what is locked of it) and gets its own bond back; then the
    ///         standing on-time claims among the active members are netted.
    /// @dev net[c] = sum of standing claims c holds - sum of standing claims on c, over the
    ///      active members in admission order (claims on others are ignored), claims of late
    ///      anchors excluded. Read from the running nets, corrected only for the participants
    ///      that are no longer members, which the caller names (`formers`, ascending; reverts
    ///      FormerParticipants with their number when it names too few, NotFormer for a wrong
    ///      one): O(n + n x formers), never n^2 claims. A
    ///      member's account is the one it last anchored with (its member account if it never
    ///      anchored). A debtor's anchor bond is unlocked as far as its debt needs it (so
    ///      settlement pays from it as when bonds were per epoch). Every state change precedes
    ///      the bond movements.
    /// @param epoch The epoch.
    /// @param formers The epoch's participants that are no longer members, in ascending order.
    /// @return ids The active members, in admission order.
    /// @return accounts Their accounts.
    /// @return net Their net positions (positive: owed); they sum to zero.
    function finalize(uint64 epoch, bytes32[] calldata formers)
        external
        onlySettlement
        returns (bytes32[] memory ids, address[] memory accounts, int256[] memory net)
    {
        _finalized[epoch >> 8] |= uint256(1) << (epoch & 255);
        if (epoch > highestSettled) highestSettled = epoch;
        uint256 disputeBond = settlement.disputeBond();
        BondMove[] memory moves = _closeDisputes(epoch, _epochDisputes[epoch], disputeBond);
        ids = consortium.memberIds();
        uint256 n = ids.length;
        accounts = new address[](n);
        net = new int256[](n);
        uint256 listed = 0;
        mapping(bytes32 => Position) storage positions = _positions[epoch];
        for (uint256 c = 0; c < n; c++) {
            accounts[c] = _accountOf(ids[c]);
            Position storage p = positions[ids[c]];
            (net[c], listed) = (p.net, p.listed ? listed + 1 : listed);
        }
        uint256 participants = _books[epoch].participants;
        if (listed + formers.length != participants) revert FormerParticipants(epoch, participants - listed);
        if (formers.length != 0) _dropFormers(epoch, formers, ids, net);
        _moveBonds(moves, ids, accounts, _releaseForDebts(ids, accounts, net));
    }

    /// @notice Closes the disputes of `centre`'s late anchor of the settled `epoch` and nets its
    ///         standing claims on active members: each home pays its claim (as far as its
    ///         collateral goes), `centre` gets the sum. Once per late anchor.
    /// @dev Callable once the epoch is settled and the anchor's answer deadline has passed. A
    ///      creditor that is no longer a member is paid nothing, as in the epoch's settlement.
    /// @param epoch The epoch.
    /// @param centre The late anchor's centre.
    /// @return ids `centre`, then the homes that owe it, in the anchor's order.
    /// @return accounts Their accounts.
    /// @return net `centre`'s credit, then each home's debt (negative); they sum to zero.
    function finalizeLate(uint64 epoch, bytes32 centre)
        external
        onlySettlement
        returns (bytes32[] memory ids, address[] memory accounts, int256[] memory net)
    {
        Anchor storage a = _anchors[centre][epoch];
        if (!a.late) revert NotLate(centre, epoch);
        if (a.lateSettled) revert LateAlreadySettled(centre, epoch);
        if (!_isFinalized(epoch)) revert EpochNotFinalized(epoch);
        uint256 deadline = uint256(a.anchoredAt) + 2 * uint256(disputeWindow);
        if (block.timestamp <= deadline) revert AnswersDue(deadline);
        a.lateSettled = true;
        BondMove[] memory moves = _closeDisputes(epoch, _lateDisputes[epoch][centre], settlement.disputeBond());
        (ids, net) = _lateDebts(epoch, centre);
        accounts = new address[](ids.length);
        for (uint256 i = 0; i < ids.length; i++) {
            accounts[i] = _accountOf(ids[i]);
        }
        _moveBonds(moves, ids, accounts, _releaseForDebts(ids, accounts, net));
    }

    // -- EIP-712 digests ------------------------------------------------------------------

    /// @notice The EIP-712 digest of an order (what its payment account signs).
    /// @param order The order.
    /// @return The digest.
    function hashOrder(Order calldata order) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ORDER_TYPEHASH, order)));
    }

    /// @notice The EIP-712 digest of a grant (what the home signs).
    /// @param grant The grant.
    /// @return The digest.
    function hashGrant(Grant calldata grant) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(GRANT_TYPEHASH, grant)));
    }

    /// @notice The EIP-712 digest of a receipt for a record (what the order's account signs).
    /// @param recordDigest The record's digest.
    /// @return The digest.
    function hashReceipt(bytes32 recordDigest) external view returns (bytes32) {
        return _receiptDigest(recordDigest);
    }

    /// @notice The EIP-712 digest of a usage record (what the serving centre signs).
    /// @param record The record.
    /// @return The digest.
    function hashRecord(UsageRecord calldata record) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RECORD_TYPEHASH, record)));
    }

    // -- internals ------------------------------------------------------------------------

    /// @dev Tops the caller's anchor bond up to `anchorBond` from its free collateral (moving it
    ///      over when the centre anchors with another account); Settlement.lock reverts
    ///      InsufficientCollateral when it is not free. Nothing to do, and no call into
    ///      Settlement beyond reading the bond size, when the bond is whole.
    function _bondAnchor(bytes32 centre) private {
        Bond storage b = _bonds[centre];
        (address account, uint96 held) = (b.account, b.amount);
        uint256 want = settlement.anchorBond();
        if (account == msg.sender && held >= want) return;
        uint96 kept = account == msg.sender ? held : 0;
        b.account = msg.sender;
        b.amount = SafeCast.toUint96(want);
        if (account != msg.sender && held != 0) settlement.unlock(account, held);
        settlement.lock(msg.sender, want - kept);
    }

    /// @dev Checks and stores an anchor's claims; returns their total record count.
    function _storeClaims(
        mapping(bytes32 => Claim) storage claims,
        bytes32[] calldata homes,
        bytes32[] calldata roots,
        uint64[] calldata counts,
        uint256[] calldata totals
    ) private returns (uint64) {
        uint256 recordCount = 0;
        uint256 n = homes.length;
        if (roots.length != n || counts.length != n || totals.length != n) revert LengthMismatch();
        for (uint256 i = 0; i < n; i++) {
            bytes32 h = homes[i];
            if (!consortium.isMember(h)) revert UnknownHome(h);
            if (counts[i] == 0) revert EmptyClaim(h);
            if (totals[i] > MAX_CLAIM) revert ClaimTooLarge(h, totals[i]);
            for (uint256 j = 0; j < i; j++) {
                if (homes[j] == h) revert DuplicateHome(h);
            }
            claims[h] = Claim(roots[i], counts[i], false, false, uint128(totals[i]));
            recordCount += counts[i];
        }
        if (recordCount > type(uint64).max) revert TooManyRecords(recordCount);
        return uint64(recordCount);
    }

    /// @dev Rules 1-2 of an answer: the record is the disputed leaf of a claim still standing.
    function _checkDisputedLeaf(Dispute storage d, Evidence calldata ev) private view returns (bytes32 recordDigest) {
        (bytes32 centre, uint64 epoch, bytes32 home) = (d.centre, d.epoch, d.home);
        if (_claims[epoch][centre][home].voided) revert AlreadyVoided(centre, epoch, home);
        UsageRecord calldata r = ev.record;
        if (r.servingCentre != centre || r.homeCentre != home || r.epoch != epoch) revert WrongRecord();
        recordDigest = hashRecord(r);
        if (!verifyRecord(centre, epoch, home, d.index, recordDigest, r.price, ev.hashes, ev.sums)) {
            revert InvalidProof();
        }
    }

    /// @dev Rules 3-6 of an answer: the order, the grant, the price and the deadlines.
    function _checkTerms(Evidence calldata ev, bytes32 centre, bytes32 home, uint64 anchoredAt) private view {
        UsageRecord calldata r = ev.record;
        Order calldata o = ev.order;
        Grant calldata g = ev.grant;
        bytes32 orderDigest = hashOrder(o);
        if (orderDigest != r.order || o.centre != centre || o.ratesVersion != r.ratesVersion) revert OrderMismatch();
        if (!_signedBy(orderDigest, ev.orderSig, g.account)) revert InvalidOrderSignature();
        bytes32 grantDigest = hashGrant(g);
        if (
            grantDigest != r.grant || g.order != orderDigest || g.home != home || g.centre != centre
                || g.amount > o.maxPrice || g.deadline != o.deadline
        ) revert GrantMismatch();
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(grantDigest, ev.grantSig);
        if (err != ECDSA.RecoverError.NoError || !_isAccountOf(home, signer)) revert InvalidGrantSignature();
        Consortium.Prices memory p = consortium.rates(centre, r.ratesVersion).prices;
        uint256 metered = meteredPrice(
            r.cpuMillis, r.gpuMillis, r.maxRssKib, r.wallMillis, p.perCpuSecond, p.perGpuSecond, p.perGibHour
        );
        uint256 expected = metered < g.amount ? metered : g.amount;
        if (r.price != expected) revert WrongPrice(expected, r.price);
        if (r.endedAt > o.deadline || uint256(anchoredAt) > uint256(o.deadline) + bookingDelay) revert Late();
    }

    /// @dev Reverts unless `leaf` is a record of `centre` for `home`, proven under that claim.
    function _checkLeaf(bytes32 centre, bytes32 home, DuplicateLeaf calldata leaf) private view {
        UsageRecord calldata r = leaf.record;
        if (r.servingCentre != centre || r.homeCentre != home || r.epoch != leaf.epoch) revert WrongRecord();
        if (!verifyRecord(centre, leaf.epoch, home, leaf.index, hashRecord(r), r.price, leaf.hashes, leaf.sums)) {
            revert InvalidProof();
        }
    }

    /// @dev Whether an anchor of `epoch` made now is late: the epoch is settled, or its anchor
    ///      deadline has passed.
    function _isLate(uint64 epoch) private view returns (bool) {
        if (_isFinalized(epoch)) return true;
        uint256 start = _clockStart(epoch);
        return start != 0 && block.timestamp > start + settlement.anchorWindow();
    }

    /// @dev When `epoch`'s anchor window starts: its end on the chain's clock, or without a clock
    ///      its `anchorQuorum`-th on-time anchor (0 before it).
    function _clockStart(uint64 epoch) private view returns (uint256) {
        return epochLength != 0 ? epochEnd(epoch) : _books[epoch].firstAnchorAt;
    }

    /// @dev Reverts EpochNotOver for an epoch the chain's clock has not ended (never without a clock).
    function _checkOver(uint64 epoch) private view {
        uint256 end = epochEnd(epoch);
        if (block.timestamp < end) revert EpochNotOver(epoch, end);
    }

    /// @dev An anchor just stored: a late one keeps its homes for `settleLate`, an on-time one
    ///      joins the running nets.
    function _place(uint64 epoch, bytes32 centre, bytes32[] calldata homes, uint256[] calldata totals) private {
        if (_anchors[centre][epoch].late) {
            _lateHomes[epoch][centre] = homes;
            emit AnchoredLate(centre, epoch);
        } else {
            _net(epoch, centre, homes, totals);
        }
    }

    /// @dev Adds an on-time anchor's claims to the running nets: + total to `centre`, - total to
    ///      each other home; marks them netted and, at the `Consortium.anchorQuorum`-th on-time
    ///      anchor, when the epoch's anchor deadline starts counting.
    function _net(uint64 epoch, bytes32 centre, bytes32[] calldata homes, uint256[] calldata totals) private {
        mapping(bytes32 => Claim) storage claims = _claims[epoch][centre];
        EpochBook storage book = _books[epoch];
        int256 credit = 0;
        for (uint256 i = 0; i < homes.length; i++) {
            bytes32 h = homes[i];
            if (h == centre) continue;
            claims[h].netted = true;
            int256 total = int256(totals[i]); // exact: claims <= MAX_CLAIM
            _shift(epoch, book, h, -total);
            credit += total;
        }
        _shift(epoch, book, centre, credit);
        // counted only until the clock starts: later anchors read no quorum
        if (book.firstAnchorAt == 0 && ++book.anchors >= consortium.anchorQuorum()) {
            book.firstAnchorAt = uint64(block.timestamp);
        }
    }

    /// @dev Moves `id`'s running net for `epoch` by `amount`, listing it as a participant first.
    function _shift(uint64 epoch, EpochBook storage book, bytes32 id, int256 amount) private {
        Position storage p = _positions[epoch][id];
        if (!p.listed) {
            p.listed = true;
            book.participants += 1;
        }
        p.net = SafeCast.toInt248(int256(p.net) + amount);
    }

    /// @dev Voids a claim; a netted one leaves the running nets (its creditor - total, its home + total).
    function _void(uint64 epoch, bytes32 centre, bytes32 home, Claim storage c, uint256 disputeId) private {
        c.voided = true;
        if (c.netted) {
            int256 total = int256(uint256(c.total));
            Position storage creditor = _positions[epoch][centre];
            Position storage debtor = _positions[epoch][home];
            creditor.net = SafeCast.toInt248(int256(creditor.net) - total);
            debtor.net = SafeCast.toInt248(int256(debtor.net) + total);
        }
        emit ClaimVoided(centre, epoch, home, disputeId);
    }

    /// @dev Takes out of the active members' nets every standing netted claim between one of them
    ///      and a former member named (either way round). Each must be a participant of the epoch
    ///      and no member, named once (ascending): with the count checked, they are all of them.
    function _dropFormers(uint64 epoch, bytes32[] calldata formers, bytes32[] memory ids, int256[] memory net)
        private
        view
    {
        mapping(bytes32 => Position) storage positions = _positions[epoch];
        for (uint256 f = 0; f < formers.length; f++) {
            bytes32 former = formers[f];
            if ((f != 0 && former <= formers[f - 1]) || !positions[former].listed || consortium.isMember(former)) {
                revert NotFormer(former);
            }
            mapping(bytes32 => Claim) storage byFormer = _claims[epoch][former];
            for (uint256 i = 0; i < ids.length; i++) {
                Claim storage on = _claims[epoch][ids[i]][former];
                if (on.netted && !on.voided) net[i] -= int256(uint256(on.total));
                Claim storage by = byFormer[ids[i]];
                if (by.netted && !by.voided) net[i] += int256(uint256(by.total));
            }
        }
    }

    /// @dev The standing claims of `centre`'s late anchor on active members: `centre` first with
    ///      the sum (nothing when it is no longer a member), then each home with minus its claim.
    function _lateDebts(uint64 epoch, bytes32 centre) private view returns (bytes32[] memory ids, int256[] memory net) {
        bytes32[] storage homes = _lateHomes[epoch][centre];
        ids = new bytes32[](homes.length + 1);
        net = new int256[](homes.length + 1);
        ids[0] = centre;
        uint256 n = 1;
        if (consortium.isMember(centre)) {
            mapping(bytes32 => Claim) storage claims = _claims[epoch][centre];
            for (uint256 i = 0; i < homes.length; i++) {
                bytes32 h = homes[i];
                Claim storage c = claims[h];
                if (h == centre || c.voided || c.total == 0 || !consortium.isMember(h)) continue;
                int256 total = int256(uint256(c.total));
                ids[n] = h;
                net[n++] = -total;
                net[0] += total;
            }
        }
        assembly ("memory-safe") {
            mstore(ids, n)
            mstore(net, n)
        }
    }

    /// @dev Where `id`'s collateral is debited and credited: the account it last anchored with,
    ///      or its member account if it never anchored (a silent member still pays its debts).
    function _accountOf(bytes32 id) private view returns (address account) {
        account = _bonds[id].account;
        if (account != address(0)) return account;
        // Consortium.member(id).account, without decoding the whole Member (its strings): the
        // answer is one offset to the struct, whose third word is the account.
        (bool ok, bytes memory answer_) = address(consortium).staticcall(abi.encodeCall(Consortium.member, (id)));
        if (!ok || answer_.length < 0x80) return address(0);
        assembly ("memory-safe") {
            account := mload(add(answer_, add(0x60, mload(add(answer_, 0x20)))))
        }
    }

    /// @dev The bond movements of a settlement, after every state change: the disputes' slashes
    ///      and unlocks, then what of each debtor's anchor bond its debt needs.
    function _moveBonds(BondMove[] memory moves, bytes32[] memory ids, address[] memory accounts, uint256[] memory released)
        private
    {
        for (uint256 i = 0; i < moves.length; i++) {
            BondMove memory m = moves[i];
            if (m.to == address(0)) settlement.unlock(m.from, m.amount);
            else settlement.slash(m.from, m.to, m.amount);
        }
        for (uint256 c = 0; c < ids.length; c++) {
            if (released[c] != 0) settlement.unlock(accounts[c], released[c]);
        }
    }

    /// @dev Upholds every dispute in `ids` (of `epoch`) still open: voids its claim, takes the claimant's
    ///      anchor bond (what is locked of it) for the challenger and returns the challenger's
    ///      bond. Only writes state: the bond movements are returned for `finalize` to make.
    function _closeDisputes(uint64 epoch, uint256[] storage ids, uint256 disputeBond)
        private
        returns (BondMove[] memory moves)
    {
        moves = new BondMove[](2 * ids.length);
        uint256 n = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            Dispute storage d = _disputes[ids[i]];
            if (d.status != Status.Open) continue;
            d.status = Status.Upheld;
            Claim storage c = _claims[epoch][d.centre][d.home];
            if (!c.voided) _void(epoch, d.centre, d.home, c, ids[i]);
            Bond storage b = _bonds[d.centre];
            uint96 bond = b.amount;
            if (bond != 0) {
                b.amount = 0;
                moves[n++] = BondMove(b.account, d.challenger, bond);
            }
            moves[n++] = BondMove(d.challenger, address(0), disputeBond);
        }
        assembly ("memory-safe") {
            mstore(moves, n)
        }
    }

    /// @dev What of each debtor's anchor bond its debt needs: a debtor pays from balance - locked,
    ///      so a bond locked across epochs must not keep collateral from the debts of the epoch
    ///      it bonded. Only writes state (the bonds shrink); the next anchor tops them up.
    function _releaseForDebts(bytes32[] memory ids, address[] memory accounts, int256[] memory net)
        private
        returns (uint256[] memory released)
    {
        released = new uint256[](ids.length);
        for (uint256 c = 0; c < ids.length; c++) {
            if (net[c] >= 0) continue;
            Bond storage b = _bonds[ids[c]];
            uint96 held = b.amount;
            if (held == 0) continue;
            uint256 available = settlement.availableOf(accounts[c]);
            uint256 debt = uint256(-net[c]);
            if (available >= debt) continue;
            uint256 release = debt - available < held ? debt - available : held;
            b.amount = held - uint96(release);
            released[c] = release;
        }
    }

    /// @dev Whether `epoch` was finalized by its settlement.
    function _isFinalized(uint64 epoch) private view returns (bool) {
        return (_finalized[epoch >> 8] >> (epoch & 255)) & 1 == 1;
    }

    /// @dev Records that `grant` paid the answer of `leaf`; reverts when it already paid another
    ///      leaf's (a centre withholding its evidence is disputed on every index: copies of one
    ///      real grant must not all stand).
    function _payGrantOnce(bytes32 grant, bytes32 leaf) private {
        bytes32 earlier = _answeredGrant[grant];
        if (earlier == leaf) return;
        if (earlier != bytes32(0)) revert GrantAlreadyAnswered(grant, earlier);
        _answeredGrant[grant] = leaf;
    }

    /// @dev Pays what is locked of `centre`'s anchor bond to `to`.
    function _slashAnchorBond(bytes32 centre, address to) private {
        Bond storage b = _bonds[centre];
        uint96 bond = b.amount;
        if (bond != 0) {
            b.amount = 0;
            settlement.slash(b.account, to, bond);
        }
    }

    function _receiptDigest(bytes32 recordDigest) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RECEIPT_TYPEHASH, recordDigest)));
    }

    /// @dev Whether `sig` is `signer`'s valid (low-s, 65-byte) signature of `digest`.
    function _signedBy(bytes32 digest, bytes calldata sig, address signer) private pure returns (bool) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, sig);
        return err == ECDSA.RecoverError.NoError && recovered == signer;
    }

    /// @dev Whether `account` is the chain account of the active member `id`.
    function _isAccountOf(bytes32 id, address account) private view returns (bool) {
        try consortium.idOf(account) returns (bytes32 found) {
            return found == id;
        } catch {
            return false;
        }
    }
}
