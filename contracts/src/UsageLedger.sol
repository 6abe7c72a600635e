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
    ///      both zero when it logged none). Two slots: the times and counts, then the root.
    struct Anchor {
        uint64 anchoredAt;
        uint64 recordCount;
        uint64 decisionCount;
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
    ///      (two slots: the root, then count, voided and total).
    struct Claim {
        bytes32 root;
        uint64 count;
        bool voided;
        uint128 total;
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
    /// @notice The epoch has been settled; it takes no more anchors.
    error EpochFinalized(uint64 epoch);
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
    constructor(address consortium_, uint64 disputeWindow_, uint64 bookingDelay_) EIP712("xcentre", "1") {
        consortium = Consortium(consortium_);
        disputeWindow = disputeWindow_;
        bookingDelay = bookingDelay_;
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
    ///      A home that is the caller itself is anchored for the audit and never claimed. A centre
    ///      that logged decisions but served no records anchors with no homes.
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
        if (_isFinalized(epoch)) revert EpochFinalized(epoch);
        if ((decisionRoot == bytes32(0)) != (decisionCount == 0)) revert InvalidDecisionLog();
        // block.timestamp is read twice, not kept: eleven parameters leave no stack slot for it.
        uint64 recordCount = _storeClaims(_claims[epoch][centre], homes, roots, counts, totals);
        _anchors[centre][epoch] = Anchor(uint64(block.timestamp), recordCount, decisionCount, decisionRoot);
        emit EpochAnchored(
            centre, epoch, homes, roots, counts, totals, uint64(block.timestamp), decisionRoot, decisionCount
        );
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

    /// @notice Block time of the latest anchor of `epoch` by an active member (0 if none).
    /// @param epoch The epoch.
    /// @return last The time.
    function lastAnchoredAt(uint64 epoch) public view returns (uint64 last) {
        bytes32[] memory ids = consortium.memberIds();
        for (uint256 i = 0; i < ids.length; i++) {
            uint64 at = _anchors[ids[i]][epoch].anchoredAt;
            if (at > last) last = at;
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
        uint256 deadline = uint256(_anchors[centre][epoch].anchoredAt) + disputeWindow;
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
        _epochDisputes[epoch].push(id);
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
        claimB.voided = true;
        emit ClaimVoided(centre, b.epoch, home, 0);
        _slashAnchorBond(centre, msg.sender);
    }

    // -- settlement -----------------------------------------------------------------------

    /// @notice Whether `epoch` may be settled: every active member anchored it and the answer
    ///         deadline of its latest anchor has passed.
    /// @param epoch The epoch.
    /// @return True when settleable.
    function settleable(uint64 epoch) external view returns (bool) {
        bytes32[] memory ids = consortium.memberIds();
        uint256 last = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            uint256 at = _anchors[ids[i]][epoch].anchoredAt;
            if (at == 0) return false;
            if (at > last) last = at;
        }
        return ids.length != 0 && block.timestamp > last + 2 * uint256(disputeWindow);
    }

    /// @notice Closes `epoch` and nets it: every dispute still open voids its claim, wins the
    ///         claimant's anchor bond (what is locked of it) and gets its own bond back; then the
    ///         standing claims among the active members are netted.
    /// @dev net[c] = sum of standing claims c holds - sum of standing claims on c, over the
    ///      active members in admission order (claims on others are ignored). A member's account
    ///      is the one it last anchored with. A debtor's anchor bond is unlocked as far as its
    ///      debt needs it (so settlement pays from it as when bonds were per epoch). Every state
    ///      change precedes the bond movements.
    /// @param epoch The epoch.
    /// @return ids The active members, in admission order.
    /// @return accounts Their accounts.
    /// @return net Their net positions (positive: owed); they sum to zero.
    function finalize(uint64 epoch)
        external
        onlySettlement
        returns (bytes32[] memory ids, address[] memory accounts, int256[] memory net)
    {
        _finalized[epoch >> 8] |= uint256(1) << (epoch & 255);
        if (epoch > highestSettled) highestSettled = epoch;
        uint256 disputeBond = settlement.disputeBond();
        BondMove[] memory moves = _closeDisputes(epoch, disputeBond);
        ids = consortium.memberIds();
        uint256 n = ids.length;
        accounts = new address[](n);
        net = new int256[](n);
        for (uint256 c = 0; c < n; c++) {
            accounts[c] = _bonds[ids[c]].account;
            mapping(bytes32 => Claim) storage claims = _claims[epoch][ids[c]];
            for (uint256 d = 0; d < n; d++) {
                if (d == c) continue;
                Claim storage claim = claims[ids[d]];
                if (claim.voided) continue;
                int256 total = int256(uint256(claim.total)); // exact: claims <= MAX_CLAIM
                net[c] += total;
                net[d] -= total;
            }
        }
        uint256[] memory released = _releaseForDebts(ids, accounts, net);
        for (uint256 i = 0; i < moves.length; i++) {
            BondMove memory m = moves[i];
            if (m.to == address(0)) settlement.unlock(m.from, m.amount);
            else settlement.slash(m.from, m.to, m.amount);
        }
        for (uint256 c = 0; c < n; c++) {
            if (released[c] != 0) settlement.unlock(accounts[c], released[c]);
        }
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
            claims[h] = Claim(roots[i], counts[i], false, uint128(totals[i]));
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

    /// @dev Upholds every dispute of `epoch` still open: voids its claim, takes the claimant's
    ///      anchor bond (what is locked of it) for the challenger and returns the challenger's
    ///      bond. Only writes state: the bond movements are returned for `finalize` to make.
    function _closeDisputes(uint64 epoch, uint256 disputeBond) private returns (BondMove[] memory moves) {
        uint256[] storage ids = _epochDisputes[epoch];
        moves = new BondMove[](2 * ids.length);
        uint256 n = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            Dispute storage d = _disputes[ids[i]];
            if (d.status != Status.Open) continue;
            d.status = Status.Upheld;
            Claim storage c = _claims[epoch][d.centre][d.home];
            if (!c.voided) {
                c.voided = true;
                emit ClaimVoided(d.centre, epoch, d.home, ids[i]);
            }
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
