// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Consortium} from "./Consortium.sol";
import {IdentityRegistry} from "./IdentityRegistry.sol";

/// @title Supervision
/// @notice A committee of n member centres that, together and only t at a time, can open an
///         anonymous transaction's group signature: the committee's ElGamal key comes from a
///         distributed key generation run through this contract (Pedersen's joint-Feldman DKG with
///         complaints: nobody ever holds the whole secret), and every opening is on the record:
///         who asked, which transaction, why, each supervisor's decryption share with its
///         Chaum–Pedersen proof, and the result.
/// @dev Points are BLS12-381 G1. In calldata, events and views a point is "raw": 96 bytes x‖y,
///      big-endian (the identity is 96 zero bytes); the contract pads it to the EIP-2537 form
///      (16 zero bytes ‖ x ‖ 16 zero bytes ‖ y) for the precompiles G1ADD (0x0b) and G1MSM (0x0c),
///      and inverts scalars with modexp (0x05). G1MSM checks that every point is on the curve
///      and in the subgroup, so every point taken from outside goes through it once.
///      The contract verifies everything itself: the dealers' commitments, a dealer's answer to
///      a complaint (s·G against its commitments), each decryption share's proof, and it
///      computes the public key, the verification keys and the opened tracing key.
///      A decryption share with a bad proof or a bad point is recorded as rejected, naming its
///      sender; it never reverts, so it stays on the record.
///      Supervisor i (1-based: its position in `supervisors` + 1) acts through the chain account
///      its member entry has at the time of the call.
///      Registration closes `dkgWindow` seconds after deployment: dealing opens with the last
///      registration, or, once registration has closed, with the first deal, among the supervisors
///      who registered (at least `threshold` of them, or no key can ever be made). A seat that did not
///      register is empty: it deals, complains, acknowledges and shares nothing, has no verification
///      key, and its 128-byte slot in each deal's shares is not read (dealers fill it with anything).
///      Every request is an opening of its own (its requester, home, transaction, reason, C2), and the
///      openings of one ciphertext C1 share one pool of decryption shares: D_i = x_i·C1 does not depend
///      on the opening, so a supervisor gives one share per C1, for the opening whose claim it checked,
///      and the shares of one C1 count together whichever openings they were given for. The t-th fixes
///      x·C1 and opens each opening a share was given for, to its own T = C2 − x·C1: the shares on
///      record never combine into a T with no opening opened, and a bogus first request (a wrong
///      transaction, a C2 of its asker's own) blocks nothing. An opening nobody shared for is never
///      opened, not even once x·C1 is public: its C2 is its asker's choice (T_victim + x·C1 would
///      "open" to anyone's key), so only a supervisor's check makes a T mean something.
contract Supervision {
    /// @dev A raw point (x‖y, 96 bytes) in three words.
    struct G1Raw {
        bytes32 w0;
        bytes32 w1;
        bytes32 w2;
    }

    /// @dev The key generation's state, one slot: bit i-1 of each mask is supervisor i.
    struct Dkg {
        uint32 registered;
        uint32 dealt;
        uint32 disqualified;
        uint32 acknowledged;
        uint64 dealDeadline;
        uint16 openComplaints;
        bool finalized;
    }

    /// @dev One request to open a group signature; its C1 is its pool's.
    struct OpeningRecord {
        bytes32 requester;
        bytes32 home;
        bytes32 transaction;
        bytes32 signatureHash;
        uint64 requestedAt;
        uint64 pool;
        bool opened;
        bytes32 enrolment;
        G1Raw c2;
        string reason;
    }

    /// @dev The decryption shares of one ciphertext C1, named by the first opening of it.
    struct Pool {
        G1Raw c1;
        uint32 acceptedMask;
        uint8 accepted;
        bool opened;
        G1Raw minusDecryption;
        uint64[] openings;
    }

    /// @notice An opening as the views return it (points raw, 96 bytes; tracingKey empty until opened).
    struct Opening {
        bytes32 requester;
        bytes32 home;
        bytes32 transaction;
        bytes32 signatureHash;
        string reason;
        uint64 requestedAt;
        bytes c1;
        bytes c2;
        uint256 accepted;
        bool opened;
        bytes tracingKey;
        bytes32 enrolment;
        uint256 pool;
    }

    /// @notice A pool as the views return it.
    struct PoolView {
        bytes c1;
        uint256 accepted;
        bool opened;
        uint256[] openings;
    }

    /// @dev One supervisor's decryption share for one pool, accepted or rejected, and the opening it was given for.
    struct ShareRecord {
        uint8 state;
        uint64 opening;
        G1Raw d;
        uint256 c;
        uint256 z;
    }

    /// @notice The BLS12-381 group order r: scalars are taken mod r.
    uint256 public constant R = 0x73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001;
    /// @notice Most supervisors a committee may have.
    uint256 public constant MAX_SUPERVISORS = 32;
    /// @notice Length of a raw point (x‖y).
    uint256 public constant RAW_POINT = 96;
    /// @notice Length of one encrypted share in a deal: raw(K) ‖ 32-byte ciphertext.
    uint256 public constant ENCRYPTED_SHARE = 128;
    /// @notice Shortest group signature (version byte, key id, C1, C2).
    uint256 public constant MIN_SIGNATURE = 201;
    /// @notice Longest group signature.
    uint256 public constant MAX_SIGNATURE = 4096;
    /// @notice Longest reason for an opening, in bytes.
    uint256 public constant MAX_REASON = 512;
    /// @notice Complaint states (`complaint`) and share states (`shareOf`).
    uint8 public constant NONE = 0;
    /// @notice A complaint not yet answered; a share that verified.
    uint8 public constant OPEN_OR_ACCEPTED = 1;
    /// @notice A complaint answered; a share that did not verify.
    uint8 public constant ANSWERED_OR_REJECTED = 2;

    address private constant MODEXP = address(0x05);
    address private constant G1ADD = address(0x0b);
    address private constant G1MSM = address(0x0c);
    /// @dev Gas handed to the precompiles: twice EIP-2537's prices (G1ADD 375; G1MSM 12,000 a
    ///      pair before its discount), so that a refused point burns no more than that.
    uint256 private constant ADD_GAS = 750;
    uint256 private constant MSM_GAS_PER_PAIR = 24_000;
    uint256 private constant MSM_PAIR = 160;
    /// @dev The generator of G1 in EIP-2537 form.
    bytes private constant GENERATOR =
        hex"0000000000000000000000000000000017f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb0000000000000000000000000000000008b3f481e3aaa0f1a09e30ed741d8ae4fcf5e095d5d00af600db18cb2c04b3edd03cc744a2888ae40caa232946c5e7e1";
    bytes14 private constant DLEQ_TAG = "xcentre-dleq/1";
    bytes32 private constant LOW_128 = bytes32(uint256(type(uint128).max));

    /// @notice The member registry: who is a member, with which account.
    Consortium public immutable consortium;
    /// @notice Shares needed to open (polynomials of degree threshold - 1).
    uint256 public immutable threshold;
    /// @notice Seconds for each of the key generation's phases: registration, dealing, complaints, answers.
    uint64 public immutable dkgWindow;
    /// @notice Registrations are taken before this time (deployment + dkgWindow).
    uint64 public immutable registrationDeadline;
    /// @notice The enrolments an opening's home may identify it as.
    IdentityRegistry public immutable identityRegistry;

    bytes32[] private _supervisors;
    mapping(bytes32 => uint256) private _index;

    Dkg private _dkg;
    mapping(uint256 => G1Raw) private _encryptionKeys;
    mapping(uint256 => bytes) private _commitments;
    mapping(uint256 => bytes) private _encryptedShares;
    mapping(uint256 => mapping(uint256 => uint8)) private _complaints;
    mapping(uint256 => mapping(uint256 => uint256)) private _revealed;
    mapping(uint256 => uint256) private _openAgainst;
    G1Raw private _publicKey;
    mapping(uint256 => G1Raw) private _verificationKeys;

    uint256 private _openingCount;
    mapping(uint256 => OpeningRecord) private _openings;
    /// @dev Pool id (its first opening's id) => the pool.
    mapping(uint256 => Pool) private _pools;
    /// @dev Pool id => supervisor index => its share.
    mapping(uint256 => mapping(uint256 => ShareRecord)) private _shares;
    /// @dev keccak256 of a requested C1 (raw) => its pool.
    mapping(bytes32 => uint256) private _poolOfCiphertext;

    /// @notice A supervisor posted its encryption key for the key generation's shares.
    /// @param index The supervisor's index (1-based).
    /// @param supervisor The supervisor's member id.
    /// @param encryptionKey E_i, raw.
    event Registered(uint256 indexed index, bytes32 indexed supervisor, bytes encryptionKey);
    /// @notice Dealing is open (every supervisor registered, or registration closed with at least
    ///         threshold of them), and the phases' deadlines are set.
    /// @param dealDeadline Deals are taken before this time.
    /// @param complaintDeadline Complaints are taken before this time.
    /// @param answerDeadline Answers are taken before this time; finalize may run from it.
    event DealingOpened(uint64 dealDeadline, uint64 complaintDeadline, uint64 answerDeadline);
    /// @notice A supervisor dealt: its polynomial's commitments and a share encrypted to each supervisor.
    /// @param dealer The dealer's index.
    /// @param commitments A_0 … A_{t-1}, raw, joined.
    /// @param shares One 128-byte encrypted share per supervisor, in index order.
    event Dealt(uint256 indexed dealer, bytes commitments, bytes shares);
    /// @notice A supervisor says the share `dealer` sent it does not match the dealer's commitments.
    /// @param dealer The dealer complained of.
    /// @param complainer The complaining supervisor's index.
    event Complained(uint256 indexed dealer, uint256 indexed complainer);
    /// @notice A dealer revealed the complainer's share and it matches its commitments.
    /// @param dealer The dealer.
    /// @param complainer The complainer, whose share this is.
    /// @param share The revealed share s (a scalar mod r).
    event ComplaintAnswered(uint256 indexed dealer, uint256 indexed complainer, uint256 share);
    /// @notice A dealer is out of the key: its answer did not verify, or a complaint went unanswered.
    /// @param dealer The dealer's index.
    /// @param reason Why.
    event Disqualified(uint256 indexed dealer, string reason);
    /// @notice A supervisor says every share it received verified (or was answered).
    /// @param index The supervisor's index.
    event Acknowledged(uint256 indexed index);
    /// @notice The committee's key is generated.
    /// @param publicKey Y, the sum of the qualified dealers' A_0, raw.
    /// @param qualified The qualified dealers' indexes, ascending.
    event KeyGenerated(bytes publicKey, uint256[] qualified);
    /// @notice A member asked the committee to open a group signature.
    /// @param id The opening's id (from 1).
    /// @param requester The asking member's id.
    /// @param home The home centre the signature names (checked off chain).
    /// @param pool The pool of its C1: the id of the first opening of that C1 (this one's, for a new C1).
    /// @param transaction The transaction, by its usage record's digest.
    /// @param signatureHash keccak256 of the group signature.
    /// @param reason Why.
    event OpeningRequested(
        uint256 indexed id,
        bytes32 indexed requester,
        bytes32 indexed home,
        uint256 pool,
        bytes32 transaction,
        bytes32 signatureHash,
        string reason
    );
    /// @notice A supervisor's decryption share verified; it counts in the pool, and opens the opening it was
    ///         given for once the pool has threshold of them.
    /// @param id The opening it was given for (whose claim the supervisor checked).
    /// @param pool The pool it counts in.
    /// @param index The supervisor's index.
    event ShareAccepted(uint256 indexed id, uint256 indexed pool, uint256 indexed index);
    /// @notice A supervisor's decryption share did not verify (bad proof or bad point); it is kept, and that
    ///         supervisor shares no more for the pool.
    /// @param id The opening it was given for.
    /// @param pool The pool.
    /// @param index The supervisor's index.
    /// @param supervisor The supervisor's member id.
    event ShareRejected(uint256 indexed id, uint256 indexed pool, uint256 indexed index, bytes32 supervisor);
    /// @notice The opening's pool has threshold shares that verified, one of them given for this opening:
    ///         its tracing key is open.
    /// @param id The opening.
    /// @param tracingKey T = C2 − Σ λ_i D_i (its own C2, the pool's shares), raw.
    event Opened(uint256 indexed id, bytes tracingKey);
    /// @notice The home recorded which of its enrolments the opened tracing key belongs to.
    /// @param id The opening.
    /// @param home The home centre.
    /// @param enrolment The enrolment id (IdentityRegistry) the home mapped the key to.
    event Identified(uint256 indexed id, bytes32 indexed home, bytes32 enrolment);

    /// @notice The caller is not one of the committee's supervisors (through its member account).
    error NotSupervisor();
    /// @notice The caller is not a member centre's account.
    error NotMember();
    /// @notice Not in this phase of the key generation (or the key is already generated).
    error WrongPhase();
    /// @notice This supervisor has registered already.
    error AlreadyRegistered(uint256 index);
    /// @notice This supervisor has dealt already.
    error AlreadyDealt(uint256 index);
    /// @notice A byte string of the wrong length.
    error BadLength(uint256 length);
    /// @notice A point is not on the curve, not in the subgroup, or the identity.
    error InvalidPoint();
    /// @notice The committee's key is not generated yet.
    error KeyNotReady();
    /// @notice No opening has this id.
    error UnknownOpening(uint256 id);
    /// @notice This supervisor has already submitted a share (accepted or rejected) for this pool's ciphertext,
    ///         through one of its openings.
    error AlreadyShared(uint256 pool, uint256 index);
    /// @notice This opening's pool is opened already: no share is taken for it any more.
    error AlreadyOpened(uint256 id);
    /// @notice This opening is not open yet.
    error NotOpened(uint256 id);
    /// @notice Only the opening's home centre may identify it.
    error NotHome(uint256 id);
    /// @notice This opening is identified already.
    error AlreadyIdentified(uint256 id);
    /// @notice Fewer qualified dealers than the threshold: no key can be generated.
    error NotEnoughQualified(uint256 qualified, uint256 threshold);
    /// @notice The reason is longer than MAX_REASON bytes.
    error ReasonTooLong(uint256 length);
    /// @notice The threshold must be 2 … supervisors ≤ MAX_SUPERVISORS (1 for a single supervisor):
    ///         with a threshold of 1, any one supervisor opens alone.
    error InvalidThreshold(uint256 threshold, uint256 supervisors);
    /// @notice A supervisor is not a member, or is listed twice.
    error InvalidSupervisor(bytes32 id);
    /// @notice The key generation's window must be 1 … 2³² − 1 seconds.
    error InvalidWindow();
    /// @notice The chain has no EIP-2537 precompiles (a fork before Prague).
    error PrecompilesMissing();
    /// @notice Not a dealer one may complain of or answer for (never dealt, disqualified, or oneself).
    error UnknownDealer(uint256 dealer);
    /// @notice This supervisor has already complained of this dealer.
    error AlreadyComplained(uint256 dealer, uint256 complainer);
    /// @notice No open complaint of this complainer against this dealer.
    error NoOpenComplaint(uint256 dealer, uint256 complainer);
    /// @notice This supervisor has acknowledged already.
    error AlreadyAcknowledged(uint256 index);
    /// @notice The group signature's first byte is not a version this contract reads.
    error UnknownSignatureVersion(uint8 version);
    /// @notice The home named is not a member.
    error UnknownHome(bytes32 home);
    /// @notice The enrolment id must not be zero.
    error InvalidEnrolment();
    /// @notice The home had not enrolled this id in the IdentityRegistry when the opening was requested.
    error NotEnrolled(bytes32 home, bytes32 enrolment);
    /// @notice This supervisor did not register before registration closed: its seat is empty.
    error NotRegistered(uint256 index);
    /// @notice The IdentityRegistry given is no contract, or not of this consortium (a sanity check).
    error InvalidRegistry();

    /// @param consortium_ The Consortium contract.
    /// @param identityRegistry_ The consortium's IdentityRegistry (enrolments an opening is identified as).
    /// @param supervisors_ The committee's member ids; supervisor i is supervisors_[i - 1].
    /// @param threshold_ Shares that open a signature: 2 ≤ threshold_ ≤ supervisors_.length ≤ 32, or 1 for
    ///        a committee of one.
    /// @param dkgWindow_ Seconds of each key generation phase (registration, dealing, complaints, answers),
    ///        below 2³².
    constructor(
        address consortium_,
        address identityRegistry_,
        bytes32[] memory supervisors_,
        uint256 threshold_,
        uint64 dkgWindow_
    ) {
        uint256 n = supervisors_.length;
        if (threshold_ == 0 || threshold_ > n || n > MAX_SUPERVISORS || (n > 1 && threshold_ < 2)) {
            revert InvalidThreshold(threshold_, n);
        }
        if (dkgWindow_ == 0 || dkgWindow_ > type(uint32).max) revert InvalidWindow();
        if (identityRegistry_.code.length == 0) revert InvalidRegistry();
        try IdentityRegistry(identityRegistry_).consortium() returns (Consortium registryConsortium) {
            if (address(registryConsortium) != consortium_) revert InvalidRegistry();
        } catch {
            revert InvalidRegistry();
        }
        consortium = Consortium(consortium_);
        identityRegistry = IdentityRegistry(identityRegistry_);
        threshold = threshold_;
        dkgWindow = dkgWindow_;
        registrationDeadline = uint64(block.timestamp) + dkgWindow_;
        for (uint256 i = 0; i < n; i++) {
            bytes32 id = supervisors_[i];
            if (_index[id] != 0 || !Consortium(consortium_).isMember(id)) revert InvalidSupervisor(id);
            _index[id] = i + 1;
            _supervisors.push(id);
        }
        (bool ok, bytes memory sum) = G1ADD.staticcall{gas: ADD_GAS}(bytes.concat(GENERATOR, new bytes(128)));
        if (!ok || keccak256(sum) != keccak256(GENERATOR)) revert PrecompilesMissing();
    }

    // -- key generation -------------------------------------------------------------------

    /// @notice Posts the caller's encryption key E_i = e_i·G, under which dealers encrypt its shares.
    /// @dev Once per supervisor, before the registration deadline; the last registration opens
    ///      dealing and sets the deadlines.
    /// @param key E_i, raw (96 bytes), a subgroup point other than the identity.
    function register(bytes calldata key) external {
        uint256 i = _callerIndex();
        Dkg memory d = _dkg;
        uint32 bit = _bit(i);
        if (d.registered & bit != 0) revert AlreadyRegistered(i);
        if (block.timestamp >= registrationDeadline) revert WrongPhase();
        if (key.length != RAW_POINT) revert BadLength(key.length);
        G1Raw memory e = _point(key, 0);
        if (_isZero(e)) revert InvalidPoint();
        _requireValid(bytes.concat(_chain(e), bytes32(uint256(1))), 1);
        _encryptionKeys[i] = e;
        d.registered |= bit;
        emit Registered(i, _supervisors[i - 1], key);
        if (d.registered == _everyone()) _openDealing(d);
        _dkg = d;
    }

    /// @notice Posts the caller's deal: Feldman commitments to its secret polynomial and each
    ///         supervisor's share, encrypted to that supervisor's key.
    /// @dev Only a registered supervisor, once dealing is open (every supervisor registered, or
    ///      registration closed: the first deal after it opens dealing among the registered, if there
    ///      are at least threshold of them), before the deal deadline, once. The shares are only
    ///      length-checked: each recipient decrypts and checks its own and complains.
    /// @param commitments A_k = a_k·G for k = 0 … threshold − 1, raw, joined (threshold × 96 bytes);
    ///        A_0 is not the identity (a later A_k may be, for a zero coefficient).
    /// @param shares Per supervisor 1 … n: raw(K) ‖ ciphertext (n × 128 bytes); the slot of a seat that
    ///        did not register is not read (any 128 bytes).
    function deal(bytes calldata commitments, bytes calldata shares) external {
        uint256 i = _callerIndex();
        Dkg memory d = _dkg;
        if (d.finalized || (d.dealDeadline == 0 && block.timestamp < registrationDeadline)) revert WrongPhase();
        uint32 bit = _bit(i);
        if (d.registered & bit == 0) revert NotRegistered(i);
        if (d.dealDeadline == 0) {
            uint256 registered = _count(d.registered);
            if (registered < threshold) revert NotEnoughQualified(registered, threshold);
            _openDealing(d);
        }
        if (block.timestamp >= d.dealDeadline) revert WrongPhase();
        if (d.dealt & bit != 0) revert AlreadyDealt(i);
        if (commitments.length != threshold * RAW_POINT) revert BadLength(commitments.length);
        if (shares.length != _supervisors.length * ENCRYPTED_SHARE) revert BadLength(shares.length);
        if (_isZero(_point(commitments, 0))) revert InvalidPoint();
        bytes memory input = new bytes(threshold * MSM_PAIR);
        for (uint256 k = 0; k < threshold; k++) {
            _setPair(input, k, _chain(_point(commitments, k * RAW_POINT)), 1);
        }
        _requireValid(input, threshold);
        _commitments[i] = commitments;
        _encryptedShares[i] = shares;
        d.dealt |= bit;
        _dkg = d;
        emit Dealt(i, commitments, shares);
    }

    /// @notice The caller says the share `dealer` sent it does not verify; the dealer must answer.
    /// @dev Before the complaint deadline; once per dealer; not of oneself, a disqualified dealer
    ///      or one who has not dealt.
    /// @param dealer The dealer's index.
    function complain(uint256 dealer) external {
        uint256 j = _callerIndex();
        Dkg memory d = _dkg;
        if (d.finalized || d.dealDeadline == 0 || block.timestamp >= d.dealDeadline + dkgWindow) revert WrongPhase();
        if (d.registered & _bit(j) == 0) revert NotRegistered(j);
        if (!_isQualifiedDealer(d, dealer) || dealer == j) revert UnknownDealer(dealer);
        if (_complaints[dealer][j] != NONE) revert AlreadyComplained(dealer, j);
        _complaints[dealer][j] = OPEN_OR_ACCEPTED;
        _openAgainst[dealer] += 1;
        d.openComplaints += 1;
        _dkg = d;
        emit Complained(dealer, j);
    }

    /// @notice The caller, a dealer complained of, reveals the complainer's share. The contract
    ///         checks share·G == Σ_k complainer^k·A_k: the complaint is answered, or the dealer
    ///         is disqualified.
    /// @dev Before the answer deadline. The revealed share stays on record either way.
    /// @param complainer The complaining supervisor's index.
    /// @param share s_{dealer, complainer}, a scalar below r.
    function answer(uint256 complainer, uint256 share) external {
        uint256 i = _callerIndex();
        Dkg memory d = _dkg;
        if (d.finalized || d.dealDeadline == 0 || block.timestamp >= d.dealDeadline + 2 * dkgWindow) {
            revert WrongPhase();
        }
        if (!_isQualifiedDealer(d, i)) revert UnknownDealer(i);
        if (complainer == 0 || complainer > _supervisors.length || _complaints[i][complainer] != OPEN_OR_ACCEPTED) {
            revert NoOpenComplaint(i, complainer);
        }
        _complaints[i][complainer] = ANSWERED_OR_REJECTED;
        _revealed[i][complainer] = share;
        _openAgainst[i] -= 1;
        d.openComplaints -= 1;
        if (share < R && _shareMatches(i, complainer, share)) {
            emit ComplaintAnswered(i, complainer, share);
        } else {
            _disqualify(d, i, "its answer to a complaint does not verify");
        }
        _dkg = d;
    }

    /// @notice The caller says every share it received verified (or its complaints were answered).
    /// @dev Once dealing is over (everyone dealt, or the deal deadline passed), before the answer deadline.
    function acknowledge() external {
        uint256 i = _callerIndex();
        Dkg memory d = _dkg;
        if (d.finalized || !_dealingOver(d) || block.timestamp >= d.dealDeadline + 2 * dkgWindow) revert WrongPhase();
        uint32 bit = _bit(i);
        if (d.registered & bit == 0) revert NotRegistered(i);
        if (d.acknowledged & bit != 0) revert AlreadyAcknowledged(i);
        d.acknowledged |= bit;
        _dkg = d;
        emit Acknowledged(i);
    }

    /// @notice Generates the key: QUAL = the dealers not disqualified (a complaint still open
    ///         disqualifies), Y = Σ_{i∈QUAL} A_i0 and each registered Y_j = Σ_{i∈QUAL} Σ_k j^k·A_ik.
    /// @dev Anyone; once dealing is over with every qualified dealer acknowledged and no
    ///      complaint open, or from the answer deadline on. Needs |QUAL| ≥ threshold.
    function finalize() external {
        Dkg memory d = _dkg;
        if (d.finalized) revert WrongPhase();
        if (d.dealDeadline == 0) {
            uint256 registered = _count(d.registered);
            if (block.timestamp >= registrationDeadline && registered < threshold) {
                revert NotEnoughQualified(registered, threshold);
            }
            revert WrongPhase();
        }
        uint256 n = _supervisors.length;
        if (block.timestamp >= d.dealDeadline + 2 * dkgWindow) {
            for (uint256 i = 1; i <= n; i++) {
                if (_isQualifiedDealer(d, i) && _openAgainst[i] != 0) _disqualify(d, i, "a complaint went unanswered");
            }
        } else if (!_dealingOver(d) || d.openComplaints != 0 || (d.dealt & ~d.disqualified & ~d.acknowledged) != 0) {
            revert WrongPhase();
        }
        uint256[] memory qual = _qualified(d);
        if (qual.length < threshold) revert NotEnoughQualified(qual.length, threshold);
        bytes[] memory sums = _sumCommitments(qual);
        _publicKey = _fromChain(sums[0]);
        for (uint256 j = 1; j <= n; j++) {
            if (d.registered & _bit(j) != 0) _verificationKeys[j] = _fromChain(_evaluate(sums, j));
        }
        d.finalized = true;
        _dkg = d;
        emit KeyGenerated(_bytes(_publicKey), qual);
    }

    // -- openings --------------------------------------------------------------------------

    /// @notice Asks the committee to open a group signature: records who asks, for which
    ///         transaction and why, and the ciphertext (C1, C2) the signature carries.
    /// @dev Any member. The signature is 201 … 4096 bytes, version byte 0x01, C1 at bytes
    ///      [9, 105) and C2 at [105, 201), both valid points other than the identity. Every request
    ///      is a new opening, in the pool of its C1 (made with the first opening of that C1, and
    ///      named by it): D_i = x_i·C1 does not depend on the opening, so the shares of one C1 are
    ///      pooled. A request for a C1 already opened is recorded, and never opened: no share is
    ///      taken for it, and its C2 could be anything.
    /// @param signature The group signature.
    /// @param home The home centre it names (a member).
    /// @param transaction The transaction's usage record digest.
    /// @param reason Why (at most MAX_REASON bytes).
    /// @return id The opening's id (from 1).
    function requestOpening(bytes calldata signature, bytes32 home, bytes32 transaction, string calldata reason)
        external
        returns (uint256 id)
    {
        bytes32 requester = _memberId(msg.sender);
        if (requester == bytes32(0)) revert NotMember();
        if (!_dkg.finalized) revert KeyNotReady();
        if (signature.length < MIN_SIGNATURE || signature.length > MAX_SIGNATURE) revert BadLength(signature.length);
        if (signature[0] != 0x01) revert UnknownSignatureVersion(uint8(signature[0]));
        if (bytes(reason).length > MAX_REASON) revert ReasonTooLong(bytes(reason).length);
        if (!consortium.isMember(home)) revert UnknownHome(home);
        id = ++_openingCount;
        OpeningRecord storage o = _openings[id];
        {
            G1Raw memory c1 = _point(signature, 9);
            G1Raw memory c2 = _point(signature, 105);
            if (_isZero(c1) || _isZero(c2)) revert InvalidPoint();
            _requireValid(bytes.concat(_chain(c1), bytes32(uint256(1)), _chain(c2), bytes32(uint256(1))), 2);
            o.c2 = c2;
            o.pool = uint64(_joinPool(id, c1));
        }
        o.requester = requester;
        o.home = home;
        o.transaction = transaction;
        o.signatureHash = keccak256(signature);
        o.requestedAt = uint64(block.timestamp);
        o.reason = reason;
        emit OpeningRequested(id, requester, home, o.pool, transaction, o.signatureHash, reason);
    }

    /// @notice The caller's decryption share D_i = x_i·C1 for an opening's ciphertext, with its
    ///         Chaum–Pedersen proof (c, z) that log_G Y_i = log_C1 D_i, given for the opening whose
    ///         claim the supervisor checked; it counts in the pool of C1. A share that verifies is
    ///         accepted, and the threshold-th accepted share opens the pool: x·C1 = Σ λ_i D_i is
    ///         fixed, and each opening an accepted share was given for (at most threshold of them)
    ///         is opened to T = C2 − x·C1 with its own C2. One that does not verify (bad proof, bad
    ///         point) is recorded as rejected and its sender named.
    /// @dev c must equal keccak256("xcentre-dleq/1" ‖ pool ‖ i ‖ Y_i ‖ C1 ‖ D_i ‖ A1 ‖ A2) mod r,
    ///      with A1 = z·G − c·Y_i and A2 = z·C1 − c·D_i, the points in EIP-2537 form and the pool id
    ///      (`opening(id).pool`), i as 32-byte words; c and z below r. One share per supervisor per
    ///      pool, either way, through whichever opening (`AlreadyShared`); a supervisor who did not
    ///      register has no share of the key (`NotRegistered`).
    /// @param id The opening whose claim the supervisor checked.
    /// @param share D_i, raw (96 bytes).
    /// @param c The proof's challenge.
    /// @param z The proof's response.
    function submitShare(uint256 id, bytes calldata share, uint256 c, uint256 z) external {
        uint256 i = _callerIndex();
        OpeningRecord storage o = _opening(id);
        uint256 poolId = o.pool;
        Pool storage pool = _pools[poolId];
        if (pool.opened) revert AlreadyOpened(id);
        if (_dkg.registered & _bit(i) == 0) revert NotRegistered(i);
        ShareRecord storage s = _shares[poolId][i];
        if (s.state != NONE) revert AlreadyShared(poolId, i);
        if (share.length != RAW_POINT) revert BadLength(share.length);
        G1Raw memory d = _point(share, 0);
        s.opening = uint64(id);
        s.d = d;
        s.c = c;
        s.z = z;
        if (!_shareVerifies(poolId, i, pool.c1, d, c, z)) {
            s.state = ANSWERED_OR_REJECTED;
            emit ShareRejected(id, poolId, i, _supervisors[i - 1]);
            return;
        }
        s.state = OPEN_OR_ACCEPTED;
        pool.acceptedMask |= _bit(i);
        pool.accepted += 1;
        emit ShareAccepted(id, poolId, i);
        if (pool.accepted == threshold) _openPool(poolId, pool);
    }

    /// @notice The opening's home records the enrolment it mapped the opened tracing key to.
    /// @dev Only the home's member account, once the opening is open, once; the enrolment must be
    ///      the home's in the IdentityRegistry, enrolled no later than the opening was requested
    ///      (revoked since or not: a revocation does not undo what the member signed).
    /// @param id The opening.
    /// @param enrolment The enrolment id (non-zero).
    function identify(uint256 id, bytes32 enrolment) external {
        OpeningRecord storage o = _opening(id);
        if (_memberId(msg.sender) != o.home) revert NotHome(id);
        if (!o.opened) revert NotOpened(id);
        if (o.enrolment != bytes32(0)) revert AlreadyIdentified(id);
        if (enrolment == bytes32(0)) revert InvalidEnrolment();
        (bool enrolled,, uint64 enrolledAt) = identityRegistry.enrolment(o.home, enrolment);
        if (!enrolled || enrolledAt > o.requestedAt) revert NotEnrolled(o.home, enrolment);
        o.enrolment = enrolment;
        emit Identified(id, o.home, enrolment);
    }

    // -- views -----------------------------------------------------------------------------

    /// @notice The committee's member ids; supervisor i is element i − 1.
    /// @return The ids.
    function supervisors() external view returns (bytes32[] memory) {
        return _supervisors;
    }

    /// @notice A member's supervisor index.
    /// @param id The member id.
    /// @return The index (1-based), 0 for none.
    function supervisorIndex(bytes32 id) external view returns (uint256) {
        return _index[id];
    }

    /// @notice Supervisor i's encryption key.
    /// @param i The index.
    /// @return E_i, raw; empty before it registered.
    function encryptionKey(uint256 i) external view returns (bytes memory) {
        return _inRange(i) && _dkg.registered & _bit(i) != 0 ? _bytes(_encryptionKeys[i]) : bytes("");
    }

    /// @notice Supervisor i's deal.
    /// @param i The dealer's index.
    /// @return commitments Raw points joined (empty before it dealt).
    /// @return shares The encrypted shares joined (empty before it dealt).
    function dealOf(uint256 i) external view returns (bytes memory commitments, bytes memory shares) {
        return (_commitments[i], _encryptedShares[i]);
    }

    /// @notice A complaint's state.
    /// @param dealer The dealer.
    /// @param complainer The complainer.
    /// @return 0 none, 1 open, 2 answered (validly, or the dealer was disqualified for it).
    function complaint(uint256 dealer, uint256 complainer) external view returns (uint8) {
        return _complaints[dealer][complainer];
    }

    /// @notice The share a dealer revealed in answer to a complaint.
    /// @param dealer The dealer.
    /// @param complainer The complainer.
    /// @return The share (0 when none was revealed).
    function revealedShare(uint256 dealer, uint256 complainer) external view returns (uint256) {
        return _revealed[dealer][complainer];
    }

    /// @notice Whether dealer i is in QUAL (false until the key is generated).
    /// @param i The index.
    /// @return True when its polynomial is part of the key.
    function qualified(uint256 i) external view returns (bool) {
        Dkg memory d = _dkg;
        return d.finalized && _isQualifiedDealer(d, i);
    }

    /// @notice Whether dealer i was disqualified.
    /// @param i The index.
    /// @return True when disqualified.
    function disqualified(uint256 i) external view returns (bool) {
        return _inRange(i) && _dkg.disqualified & _bit(i) != 0;
    }

    /// @notice Whether supervisor i acknowledged its shares.
    /// @param i The index.
    /// @return True when acknowledged.
    function acknowledged(uint256 i) external view returns (bool) {
        return _inRange(i) && _dkg.acknowledged & _bit(i) != 0;
    }

    /// @notice The key generation at a glance: bit i − 1 of each mask is supervisor i.
    /// @return registered Who registered.
    /// @return dealt Who dealt.
    /// @return disqualifiedMask Who was disqualified.
    /// @return acknowledgedMask Who acknowledged.
    /// @return openComplaints Complaints open against dealers not disqualified.
    /// @return finalized Whether the key is generated.
    function dkgStatus()
        external
        view
        returns (
            uint32 registered,
            uint32 dealt,
            uint32 disqualifiedMask,
            uint32 acknowledgedMask,
            uint16 openComplaints,
            bool finalized
        )
    {
        Dkg memory d = _dkg;
        return (d.registered, d.dealt, d.disqualified, d.acknowledged, d.openComplaints, d.finalized);
    }

    /// @notice The committee's public key.
    /// @return Y, raw; empty until the key is generated.
    function publicKey() external view returns (bytes memory) {
        return _dkg.finalized ? _bytes(_publicKey) : bytes("");
    }

    /// @notice Supervisor j's verification key.
    /// @param j The index.
    /// @return Y_j = x_j·G, raw; empty until the key is generated, and for a seat that did not register.
    function verificationKey(uint256 j) external view returns (bytes memory) {
        Dkg memory d = _dkg;
        return d.finalized && _inRange(j) && d.registered & _bit(j) != 0 ? _bytes(_verificationKeys[j]) : bytes("");
    }

    /// @notice The key generation's deadlines (all 0 until dealing opens: with the last registration,
    ///         or with the first deal once registration closed at `registrationDeadline`).
    /// @return dealBy Deals before this time.
    /// @return complainBy Complaints before this time.
    /// @return answerBy Answers before this time; finalize from it on.
    function deadlines() external view returns (uint64 dealBy, uint64 complainBy, uint64 answerBy) {
        uint64 d = _dkg.dealDeadline;
        if (d == 0) return (0, 0, 0);
        return (d, d + dkgWindow, d + 2 * dkgWindow);
    }

    /// @notice Number of openings requested (ids are 1 … openingCount).
    /// @return The count.
    function openingCount() external view returns (uint256) {
        return _openingCount;
    }

    /// @notice An opening.
    /// @param id The opening.
    /// @return v The opening (reverts UnknownOpening): `accepted` counts its pool's accepted shares,
    ///         `tracingKey` is its own T = C2 − x·C1 once opened (empty otherwise).
    function opening(uint256 id) external view returns (Opening memory v) {
        OpeningRecord storage o = _opening(id);
        Pool storage pool = _pools[o.pool];
        v.requester = o.requester;
        v.home = o.home;
        v.transaction = o.transaction;
        v.signatureHash = o.signatureHash;
        v.reason = o.reason;
        v.requestedAt = o.requestedAt;
        v.c1 = _bytes(pool.c1);
        v.c2 = _bytes(o.c2);
        v.accepted = pool.accepted;
        v.opened = o.opened;
        v.tracingKey = o.opened ? _bytes(_tracingKey(o, _chain(pool.minusDecryption))) : bytes("");
        v.enrolment = o.enrolment;
        v.pool = o.pool;
    }

    /// @notice The pool of one ciphertext's openings.
    /// @param poolId The pool: the id of the first opening of its C1.
    /// @return v C1 (raw), its accepted shares, whether it is opened, its openings in request order
    ///         (reverts UnknownOpening for an id that names no pool).
    function poolOf(uint256 poolId) external view returns (PoolView memory v) {
        if (_opening(poolId).pool != poolId) revert UnknownOpening(poolId);
        Pool storage p = _pools[poolId];
        v.c1 = _bytes(p.c1);
        v.accepted = p.accepted;
        v.opened = p.opened;
        uint256 n = p.openings.length;
        v.openings = new uint256[](n);
        for (uint256 k = 0; k < n; k++) {
            v.openings[k] = p.openings[k];
        }
    }

    /// @notice Supervisor i's share for an opening's ciphertext: its pool's, whichever opening it was
    ///         given for (a pool's id is its first opening's, so `shareOf(pool, i)` reads the same).
    /// @param id The opening.
    /// @param i The supervisor's index.
    /// @return state 0 none (also for an unknown opening), 1 accepted, 2 rejected.
    /// @return d D_i, raw, as submitted (empty for none).
    /// @return c The proof's challenge, as submitted.
    /// @return z The proof's response, as submitted.
    /// @return given The opening it was given for (0 for none).
    function shareOf(uint256 id, uint256 i)
        external
        view
        returns (uint8 state, bytes memory d, uint256 c, uint256 z, uint256 given)
    {
        if (id == 0 || id > _openingCount) return (NONE, bytes(""), 0, 0, 0);
        ShareRecord storage s = _shares[_openings[id].pool][i];
        if (s.state == NONE) return (NONE, bytes(""), 0, 0, 0);
        return (s.state, _bytes(s.d), s.c, s.z, s.opening);
    }

    // -- internals: who -------------------------------------------------------------------

    /// @dev The active member whose account is `account`, zero for none.
    function _memberId(address account) private view returns (bytes32) {
        try consortium.idOf(account) returns (bytes32 id) {
            return id;
        } catch {
            return bytes32(0);
        }
    }

    function _callerIndex() private view returns (uint256 i) {
        bytes32 id = _memberId(msg.sender);
        i = id == bytes32(0) ? 0 : _index[id];
        if (i == 0) revert NotSupervisor();
    }

    function _opening(uint256 id) private view returns (OpeningRecord storage o) {
        if (id == 0 || id > _openingCount) revert UnknownOpening(id);
        return _openings[id];
    }

    function _inRange(uint256 i) private view returns (bool) {
        return i != 0 && i <= _supervisors.length;
    }

    function _bit(uint256 i) private pure returns (uint32) {
        return uint32(1 << (i - 1));
    }

    function _everyone() private view returns (uint32) {
        return uint32((1 << _supervisors.length) - 1);
    }

    // -- internals: key generation --------------------------------------------------------

    function _dealingOver(Dkg memory d) private view returns (bool) {
        return d.dealDeadline != 0 && (d.dealt == d.registered || block.timestamp >= d.dealDeadline);
    }

    /// @dev Opens dealing now among the registered: the deadlines run from here.
    function _openDealing(Dkg memory d) private {
        uint64 deadline = uint64(block.timestamp) + dkgWindow;
        d.dealDeadline = deadline;
        emit DealingOpened(deadline, deadline + dkgWindow, deadline + 2 * dkgWindow);
    }

    function _count(uint32 mask) private pure returns (uint256 count) {
        for (; mask != 0; mask &= mask - 1) count++;
    }

    function _isQualifiedDealer(Dkg memory d, uint256 i) private view returns (bool) {
        return _inRange(i) && d.dealt & _bit(i) != 0 && d.disqualified & _bit(i) == 0;
    }

    function _disqualify(Dkg memory d, uint256 i, string memory reason) private {
        d.disqualified |= _bit(i);
        d.openComplaints -= uint16(_openAgainst[i]);
        emit Disqualified(i, reason);
    }

    function _qualified(Dkg memory d) private view returns (uint256[] memory list) {
        uint256 n = _supervisors.length;
        uint256 count = 0;
        for (uint256 i = 1; i <= n; i++) {
            if (_isQualifiedDealer(d, i)) count++;
        }
        list = new uint256[](count);
        count = 0;
        for (uint256 i = 1; i <= n; i++) {
            if (_isQualifiedDealer(d, i)) list[count++] = i;
        }
    }

    /// @dev S_k = Σ_{i∈QUAL} A_ik for k < threshold, in EIP-2537 form.
    function _sumCommitments(uint256[] memory dealers) private view returns (bytes[] memory sums) {
        sums = new bytes[](threshold);
        for (uint256 q = 0; q < dealers.length; q++) {
            bytes memory raw = _commitments[dealers[q]];
            for (uint256 k = 0; k < threshold; k++) {
                bytes memory point = _chain(_rawAt(raw, k * RAW_POINT));
                sums[k] = q == 0 ? point : _add(sums[k], point);
            }
        }
    }

    /// @dev Σ_k j^k·S_k: the value at j of the summed polynomials, in the exponent.
    function _evaluate(bytes[] memory sums, uint256 j) private view returns (bytes memory) {
        bytes memory input = new bytes(sums.length * MSM_PAIR);
        uint256 power = 1;
        for (uint256 k = 0; k < sums.length; k++) {
            _setPair(input, k, sums[k], power);
            power = mulmod(power, j, R);
        }
        (bool ok, bytes memory out) = _msm(input, sums.length);
        if (!ok) revert InvalidPoint();
        return out;
    }

    /// @dev share·G == Σ_k complainer^k·A_k of `dealer`'s commitments.
    function _shareMatches(uint256 dealer, uint256 complainer, uint256 share) private view returns (bool) {
        bytes memory raw = _commitments[dealer];
        bytes memory input = new bytes((threshold + 1) * MSM_PAIR);
        uint256 power = 1;
        for (uint256 k = 0; k < threshold; k++) {
            _setPair(input, k, _chain(_rawAt(raw, k * RAW_POINT)), power);
            power = mulmod(power, complainer, R);
        }
        _setPair(input, threshold, GENERATOR, R - share);
        (bool ok, bytes memory out) = _msm(input, threshold + 1);
        if (!ok) revert InvalidPoint();
        return _isIdentity(out);
    }

    // -- internals: openings --------------------------------------------------------------

    /// @dev The Chaum–Pedersen check of A4, bound to the pool; false for any bad input, never a revert.
    function _shareVerifies(uint256 poolId, uint256 i, G1Raw storage c1Raw, G1Raw memory dRaw, uint256 c, uint256 z)
        private
        view
        returns (bool)
    {
        if (c >= R || z >= R || _isZero(dRaw)) return false;
        bytes memory d = _chain(dRaw);
        bytes memory c1 = _chain(c1Raw);
        (bool ok, bytes memory a2) = _msm(bytes.concat(c1, bytes32(z), d, bytes32(R - c)), 2);
        if (!ok) return false;
        bytes memory y = _chain(_verificationKeys[i]);
        bytes memory a1;
        (ok, a1) = _msm(bytes.concat(GENERATOR, bytes32(z), y, bytes32(R - c)), 2);
        if (!ok) return false;
        bytes memory transcript = bytes.concat(DLEQ_TAG, bytes32(poolId), bytes32(i), y, c1, d, a1, a2);
        return uint256(keccak256(transcript)) % R == c;
    }

    /// @dev Adds opening `id` to the pool of C1, made (and named `id`) if C1 has none yet; the pool's id.
    function _joinPool(uint256 id, G1Raw memory c1) private returns (uint256 poolId) {
        bytes32 ciphertext = keccak256(_bytes(c1));
        poolId = _poolOfCiphertext[ciphertext];
        if (poolId == 0) {
            poolId = id;
            _poolOfCiphertext[ciphertext] = id;
            _pools[id].c1 = c1;
        }
        _pools[poolId].openings.push(uint64(id));
    }

    /// @dev Fixes −x·C1 = −Σ λ_i·D_i over the accepted shares (λ the Lagrange coefficients at 0), then
    ///      opens each opening one of them was given for (at most threshold, however many were asked for).
    function _openPool(uint256 poolId, Pool storage pool) private {
        uint256 t = threshold;
        uint256[] memory idx = new uint256[](t);
        uint256 count = 0;
        uint32 mask = pool.acceptedMask;
        for (uint256 i = 1; count < t; i++) {
            if (mask & _bit(i) != 0) idx[count++] = i;
        }
        bytes memory input = new bytes(t * MSM_PAIR);
        for (uint256 a = 0; a < t; a++) {
            _setPair(input, a, _chain(_shares[poolId][idx[a]].d), R - _lagrange(idx, a));
        }
        (bool ok, bytes memory minus) = _msm(input, t);
        if (!ok) revert InvalidPoint();
        pool.minusDecryption = _fromChain(minus);
        pool.opened = true;
        for (uint256 a = 0; a < t; a++) {
            uint256 id = _shares[poolId][idx[a]].opening;
            OpeningRecord storage o = _openings[id];
            if (o.opened) continue;
            o.opened = true;
            emit Opened(id, _bytes(_tracingKey(o, minus)));
        }
    }

    /// @dev T = C2 + (−x·C1), raw, for an opening of an opened pool.
    function _tracingKey(OpeningRecord storage o, bytes memory minus) private view returns (G1Raw memory) {
        return _fromChain(_add(_chain(o.c2), minus));
    }

    /// @dev λ_a = Π_{b≠a} x_b / (x_b − x_a) mod r.
    function _lagrange(uint256[] memory x, uint256 a) private view returns (uint256) {
        uint256 num = 1;
        uint256 den = 1;
        for (uint256 b = 0; b < x.length; b++) {
            if (b == a) continue;
            num = mulmod(num, x[b], R);
            den = mulmod(den, addmod(x[b], R - x[a], R), R);
        }
        return mulmod(num, _inverse(den), R);
    }

    /// @dev v^(r−2) mod r through modexp (r is prime; v ≠ 0 here).
    function _inverse(uint256 v) private view returns (uint256) {
        (bool ok, bytes memory out) = MODEXP.staticcall(abi.encode(32, 32, 32, v, R - 2, R));
        if (!ok || out.length != 32) revert PrecompilesMissing();
        return abi.decode(out, (uint256));
    }

    // -- internals: points ----------------------------------------------------------------

    /// @dev The raw point at `offset` of `raw` (calldata).
    function _point(bytes calldata raw, uint256 offset) private pure returns (G1Raw memory p) {
        p.w0 = bytes32(raw[offset:offset + 32]);
        p.w1 = bytes32(raw[offset + 32:offset + 64]);
        p.w2 = bytes32(raw[offset + 64:offset + 96]);
    }

    /// @dev The raw point at `offset` of `raw` (memory).
    function _rawAt(bytes memory raw, uint256 offset) private pure returns (G1Raw memory p) {
        bytes32 w0;
        bytes32 w1;
        bytes32 w2;
        assembly ("memory-safe") {
            let src := add(add(raw, 32), offset)
            w0 := mload(src)
            w1 := mload(add(src, 32))
            w2 := mload(add(src, 64))
        }
        p = G1Raw(w0, w1, w2);
    }

    function _bytes(G1Raw memory p) private pure returns (bytes memory) {
        return bytes.concat(p.w0, p.w1, p.w2);
    }

    function _isZero(G1Raw memory p) private pure returns (bool) {
        return (p.w0 | p.w1 | p.w2) == bytes32(0);
    }

    /// @dev x = w0 ‖ high half of w1, y = low half of w1 ‖ w2, each padded to 64 bytes.
    function _chain(G1Raw memory p) private pure returns (bytes memory) {
        return bytes.concat(bytes16(0), p.w0, bytes16(p.w1), bytes16(0), bytes16(uint128(uint256(p.w1))), p.w2);
    }

    /// @dev The raw point of a 128-byte EIP-2537 point.
    function _fromChain(bytes memory c) private pure returns (G1Raw memory p) {
        bytes32 w0;
        bytes32 hi;
        bytes32 lo;
        bytes32 w2;
        assembly ("memory-safe") {
            let src := add(c, 32)
            w0 := mload(add(src, 16))
            hi := mload(add(src, 48))
            lo := mload(add(src, 80))
            w2 := mload(add(src, 96))
        }
        p = G1Raw(w0, (hi & ~LOW_128) | (lo >> 128), w2);
    }

    function _isIdentity(bytes memory c) private pure returns (bool) {
        return keccak256(c) == keccak256(new bytes(128));
    }

    /// @dev Writes (point, scalar) as pair k of an MSM input.
    function _setPair(bytes memory input, uint256 k, bytes memory point, uint256 scalar) private pure {
        assembly ("memory-safe") {
            let dst := add(add(input, 32), mul(k, 160))
            let src := add(point, 32)
            mstore(dst, mload(src))
            mstore(add(dst, 32), mload(add(src, 32)))
            mstore(add(dst, 64), mload(add(src, 64)))
            mstore(add(dst, 96), mload(add(src, 96)))
            mstore(add(dst, 128), scalar)
        }
    }

    function _add(bytes memory p, bytes memory q) private view returns (bytes memory) {
        (bool ok, bytes memory out) = G1ADD.staticcall{gas: ADD_GAS}(bytes.concat(p, q));
        if (!ok || out.length != 128) revert InvalidPoint();
        return out;
    }

    /// @dev G1MSM over `pairs` pairs; false when the precompile refuses a point. A call starved of
    ///      gas (EIP-150 gives it at most 63/64 of what is left) also fails, but then what is left is
    ///      under 1/63 of the precompile's price (a few hundred gas), which cannot pay for what follows
    ///      a share's verdict (a new storage slot), so the transaction runs out of gas: a valid share
    ///      is never recorded as rejected for want of gas.
    function _msm(bytes memory input, uint256 pairs) private view returns (bool ok, bytes memory out) {
        (ok, out) = G1MSM.staticcall{gas: pairs * MSM_GAS_PER_PAIR}(input);
        ok = ok && out.length == 128;
    }

    /// @dev Reverts InvalidPoint unless every point of the MSM input is on the curve and in the subgroup.
    function _requireValid(bytes memory input, uint256 pairs) private view {
        (bool ok,) = _msm(input, pairs);
        if (!ok) revert InvalidPoint();
    }
}
