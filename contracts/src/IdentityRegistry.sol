// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Consortium} from "./Consortium.sol";
import {Governed} from "./Governed.sol";

/// @title IdentityRegistry
/// @notice The identity chain of the consortium: every centre's credential issuer keys
///         (BBS public keys, with rotation windows), the pseudonymous enrolments of users
///         at their home centre, and each home centre's revocation epoch.
/// @dev A key is valid at time t (unix seconds) iff validFrom <= t and
///      (validUntil == 0 or t < validUntil). Rotating keeps the previous key valid until a
///      time of the centre's choosing so that credentials in the field can be refreshed.
///      Revoking an enrolment bumps the home's revocation epoch, which every credential
///      carries: verifiers refuse credentials whose epoch is not the current one.
///      An enrolment id is scoped to its home: (home, id) names an enrolment, and a centre
///      only ever enrols and revokes under its own id, so no member can take, block or revoke
///      an enrolment of another home's user, whatever id it sends.
///      Key proposals, votes and the quorum rule are `Governed`'s, with the Consortium's members
///      and quorum: a key proposal passes with k votes of current members.
contract IdentityRegistry is Governed {
    /// @notice An issuer key of a centre. `validUntil` 0 means current (open-ended).
    struct IssuerKey {
        bytes pk;
        bytes32 keyId;
        uint64 validFrom;
        uint64 validUntil;
    }

    /// @notice A user's enrolment at its home centre (the home is the key it is stored under).
    struct Enrolment {
        bool enrolled;
        bool revoked;
        uint64 enrolledAt;
    }

    /// @dev What a key proposal is about; its votes are `Governed`'s.
    struct KeyProposal {
        bytes32 centre;
        bytes pk;
        uint64 previousValidUntil;
    }

    /// @notice Length of an issuer public key (BLS12-381 G2 point, compressed).
    uint256 public constant PK_LENGTH = 96;

    /// @notice The member registry consulted for who may act and for the quorum.
    Consortium public immutable consortium;

    mapping(bytes32 => IssuerKey[]) private _keys;
    /// @dev 1-based index into _keys[centre] of the current key; 0 = none.
    mapping(bytes32 => uint256) private _current;
    /// @dev First 8 bytes of every key id a centre ever used (key ids are looked up by prefix).
    mapping(bytes32 => mapping(bytes8 => bool)) private _usedPrefix;
    /// @dev home => enrolment id => enrolment.
    mapping(bytes32 => mapping(bytes32 => Enrolment)) private _enrolments;
    mapping(bytes32 => uint64) private _revocationEpoch;
    mapping(uint256 => KeyProposal) private _subjects;

    /// @notice A centre's new current issuer key, valid from `validFrom` until an `IssuerKeyEnds`.
    /// @param centre The centre id.
    /// @param keyId keccak256 of the key (verifiers look keys up by its first 8 bytes).
    /// @param pk The public key (PK_LENGTH bytes).
    /// @param validFrom Block time from which the key is valid.
    event IssuerKeySet(bytes32 indexed centre, bytes32 indexed keyId, bytes pk, uint64 validFrom);
    /// @notice A centre's issuer key gets an end: rotated out, or revoked by vote.
    /// @param centre The centre id.
    /// @param keyId keccak256 of the key.
    /// @param validUntil Unix seconds (exclusive) from which the key is no longer valid.
    event IssuerKeyEnds(bytes32 indexed centre, bytes32 indexed keyId, uint64 validUntil);
    /// @notice A member proposed to set or revoke a centre's issuer key; its own `Voted` follows.
    /// @param proposalId The new proposal's id (ids count from 1).
    /// @param centre The centre whose key changes.
    /// @param keyId keccak256 of the proposed key; zero for a revocation.
    /// @param previousValidUntil When the centre's current key (all its keys, if revoking) ends.
    /// @param proposer The proposing member's id.
    event IssuerKeyProposed(
        uint256 indexed proposalId, bytes32 indexed centre, bytes32 keyId, uint64 previousValidUntil, bytes32 proposer
    );
    /// @notice A home enrolled a user under a pseudonymous id.
    /// @param enrolmentId The id, meaningful only with its home.
    /// @param home The home centre.
    /// @param enrolledAt Block time of the enrolment.
    event Enrolled(bytes32 indexed enrolmentId, bytes32 indexed home, uint64 enrolledAt);
    /// @notice A home revoked one of its enrolments and its revocation epoch moved on.
    /// @param enrolmentId The revoked enrolment's id.
    /// @param home The home centre.
    /// @param revocationEpoch The home's new revocation epoch.
    event Revoked(bytes32 indexed enrolmentId, bytes32 indexed home, uint64 revocationEpoch);

    /// @notice The key is not PK_LENGTH bytes long (or, via governance, not empty either).
    error InvalidKeyLength(uint256 length);
    /// @notice The centre already used a key whose id starts with the same 8 bytes.
    error KeyAlreadyUsed(bytes32 centre, bytes32 keyId);
    /// @notice The named centre is not an active member.
    error UnknownCentre(bytes32 centre);
    /// @notice The enrolment id must not be zero.
    error InvalidEnrolment();
    /// @notice This home has already enrolled this id.
    error AlreadyEnrolled(bytes32 home, bytes32 enrolmentId);
    /// @notice This home has no enrolment with this id.
    error UnknownEnrolment(bytes32 home, bytes32 enrolmentId);
    /// @notice The enrolment is already revoked.
    error AlreadyRevoked(bytes32 home, bytes32 enrolmentId);

    /// @param consortium_ The Consortium contract.
    constructor(address consortium_) {
        consortium = Consortium(consortium_);
    }

    // -- issuer keys --------------------------------------------------------------------

    /// @notice Sets the caller's new current issuer key; the previous current key stays
    ///         valid until `previousValidUntil`.
    /// @dev Reverts NotMember for non-members. The key's bytes are only length-checked.
    /// @param pk The new public key (PK_LENGTH bytes).
    /// @param previousValidUntil End (unix seconds, exclusive) of the previous current key;
    ///        0 or a time not after the block's ends it now.
    function setIssuerKey(bytes calldata pk, uint64 previousValidUntil) external {
        bytes32 centre = consortium.idOf(msg.sender);
        if (pk.length != PK_LENGTH) revert InvalidKeyLength(pk.length);
        _checkUnused(centre, pk);
        _endCurrent(centre, previousValidUntil);
        _addKey(centre, pk);
    }

    /// @notice Proposes to set (or, with an empty `pk`, revoke) a centre's issuer key by a
    ///         k-of-n vote, for a centre that lost or leaked its key. The proposer's vote counts.
    /// @dev Executes at once when the consortium's quorum is 1. Revoking ends every key of
    ///      the centre still valid after `previousValidUntil` (a leaked key may be in its
    ///      rotation window, not only current).
    /// @param centre The centre whose key changes (an active member).
    /// @param pk The new key (PK_LENGTH bytes) or empty to revoke.
    /// @param previousValidUntil When the centre's current key (all its keys, if revoking) ends.
    /// @return proposalId The new proposal's id (ids start at 1).
    function proposeIssuerKey(bytes32 centre, bytes calldata pk, uint64 previousValidUntil)
        external
        returns (uint256 proposalId)
    {
        bytes32 proposer = consortium.idOf(msg.sender);
        if (!consortium.isMember(centre)) revert UnknownCentre(centre);
        if (pk.length != PK_LENGTH && pk.length != 0) revert InvalidKeyLength(pk.length);
        if (pk.length != 0) _checkUnused(centre, pk);
        proposalId = _newProposal();
        KeyProposal storage p = _subjects[proposalId];
        p.centre = centre;
        p.pk = pk;
        p.previousValidUntil = previousValidUntil;
        emit IssuerKeyProposed(
            proposalId, centre, pk.length == 0 ? bytes32(0) : keccak256(pk), previousValidUntil, proposer
        );
        _vote(proposalId, proposer);
    }

    /// @notice Votes for an issuer key proposal; executes it when the votes reach the quorum.
    /// @dev The deciding vote reverts (and is not counted) if the centre has left the
    ///      consortium or the key was used meanwhile (UnknownCentre, KeyAlreadyUsed).
    /// @param proposalId The proposal id.
    function voteIssuerKey(uint256 proposalId) external {
        _vote(proposalId, consortium.idOf(msg.sender));
    }

    /// @notice Carries out an issuer key proposal whose current members' votes reach the quorum
    ///         now (the quorum was lowered since its last vote); reverts NotCarried otherwise.
    /// @param proposalId The proposal id.
    function carryIssuerKey(uint256 proposalId) external {
        consortium.idOf(msg.sender); // members only
        _carry(proposalId);
    }

    /// @notice Every issuer key a centre ever had, oldest first.
    /// @param centre The centre id.
    /// @return The keys with their validity windows.
    function issuerKeys(bytes32 centre) external view returns (IssuerKey[] memory) {
        return _keys[centre];
    }

    /// @notice Whether the centre's key `keyId` is valid at time `at`.
    /// @param centre The centre id.
    /// @param keyId keccak256 of the key.
    /// @param at Unix seconds.
    /// @return True when some key of the centre with this id is valid at `at`.
    function isKeyValid(bytes32 centre, bytes32 keyId, uint64 at) external view returns (bool) {
        IssuerKey[] storage keys = _keys[centre];
        for (uint256 i = 0; i < keys.length; i++) {
            IssuerKey storage k = keys[i];
            if (k.keyId == keyId && k.validFrom <= at && (k.validUntil == 0 || at < k.validUntil)) return true;
        }
        return false;
    }

    /// @notice Number of issuer key proposals so far (ids are 1..keyProposalCount).
    /// @return The count.
    function keyProposalCount() external view returns (uint256) {
        return _proposals();
    }

    /// @notice An issuer key proposal's state.
    /// @param proposalId The proposal id.
    /// @return centre The centre whose key changes.
    /// @return pk The proposed key (empty: revoke).
    /// @return previousValidUntil When the previous key ends.
    /// @return executed Whether it has been executed.
    /// @return votes Votes of current members (votes of members removed since do not count).
    function keyProposal(uint256 proposalId)
        external
        view
        returns (bytes32 centre, bytes memory pk, uint64 previousValidUntil, bool executed, uint256 votes)
    {
        (executed, votes) = _tally(proposalId);
        KeyProposal storage p = _subjects[proposalId];
        return (p.centre, p.pk, p.previousValidUntil, executed, votes);
    }

    /// @notice Whether member `voter` has voted on key proposal `proposalId`.
    /// @param proposalId The proposal id.
    /// @param voter The member id.
    /// @return True when voted.
    function hasVotedKey(uint256 proposalId, bytes32 voter) external view returns (bool) {
        return _hasVoted(proposalId, voter);
    }

    // -- enrolments and revocation ------------------------------------------------------

    /// @notice Records a user's pseudonymous enrolment at the caller (its home centre).
    /// @dev The id is scoped to the caller: another home using the same id neither blocks
    ///      this enrolment nor shares it.
    /// @param enrolmentId A non-zero id the home derives from a secret of its own (never the user's name).
    function enrol(bytes32 enrolmentId) external {
        bytes32 home = consortium.idOf(msg.sender);
        if (enrolmentId == bytes32(0)) revert InvalidEnrolment();
        Enrolment storage e = _enrolments[home][enrolmentId];
        if (e.enrolled) revert AlreadyEnrolled(home, enrolmentId);
        uint64 now_ = uint64(block.timestamp);
        e.enrolled = true;
        e.enrolledAt = now_;
        emit Enrolled(enrolmentId, home, now_);
    }

    /// @notice Revokes one of the caller's enrolments and bumps the caller's revocation epoch,
    ///         so that every credential issued before is refused until refreshed.
    /// @param enrolmentId The caller's enrolment to revoke.
    function revoke(bytes32 enrolmentId) external {
        bytes32 home = consortium.idOf(msg.sender);
        Enrolment storage e = _enrolments[home][enrolmentId];
        if (!e.enrolled) revert UnknownEnrolment(home, enrolmentId);
        if (e.revoked) revert AlreadyRevoked(home, enrolmentId);
        e.revoked = true;
        uint64 epoch = ++_revocationEpoch[home];
        emit Revoked(enrolmentId, home, epoch);
    }

    /// @notice A home's enrolment.
    /// @param home The home centre.
    /// @param enrolmentId The enrolment id at that home.
    /// @return enrolled Whether the home enrolled this id.
    /// @return revoked Whether the home revoked it.
    /// @return enrolledAt Block time of the enrolment (0 if not enrolled).
    function enrolment(bytes32 home, bytes32 enrolmentId)
        external
        view
        returns (bool enrolled, bool revoked, uint64 enrolledAt)
    {
        Enrolment storage e = _enrolments[home][enrolmentId];
        return (e.enrolled, e.revoked, e.enrolledAt);
    }

    /// @notice A home centre's revocation epoch: the number of revocations it has made.
    /// @param centre The centre id.
    /// @return The epoch (0 before any revocation).
    function revocationEpoch(bytes32 centre) external view returns (uint64) {
        return _revocationEpoch[centre];
    }

    // -- internals ----------------------------------------------------------------------

    function _isMember(bytes32 id) internal view override returns (bool) {
        return consortium.isMember(id);
    }

    function _memberSince(bytes32 id) internal view override returns (uint256) {
        return consortium.memberSince(id);
    }

    function _quorum() internal view override returns (uint256) {
        return consortium.quorum();
    }

    /// @dev Reverts (so the deciding vote is not counted) if the centre has left the
    ///      consortium or the key was used meanwhile.
    function _execute(uint256 proposalId) internal override {
        KeyProposal storage p = _subjects[proposalId];
        bytes32 centre = p.centre;
        if (!consortium.isMember(centre)) revert UnknownCentre(centre);
        bytes memory pk = p.pk;
        if (pk.length == 0) {
            _endAll(centre, p.previousValidUntil);
        } else {
            _checkUnused(centre, pk);
            _endCurrent(centre, p.previousValidUntil);
            _addKey(centre, pk);
        }
    }

    function _checkUnused(bytes32 centre, bytes memory pk) private view {
        bytes32 keyId = keccak256(pk);
        if (_usedPrefix[centre][bytes8(keyId)]) revert KeyAlreadyUsed(centre, keyId);
    }

    function _endTime(uint64 requested) private view returns (uint64) {
        uint64 now_ = uint64(block.timestamp);
        return requested <= now_ ? now_ : requested;
    }

    function _endCurrent(bytes32 centre, uint64 previousValidUntil) private {
        uint256 cur = _current[centre];
        if (cur == 0) return;
        IssuerKey storage k = _keys[centre][cur - 1];
        uint64 end = _endTime(previousValidUntil);
        k.validUntil = end;
        _current[centre] = 0;
        emit IssuerKeyEnds(centre, k.keyId, end);
    }

    function _endAll(bytes32 centre, uint64 validUntil) private {
        uint64 end = _endTime(validUntil);
        IssuerKey[] storage keys = _keys[centre];
        for (uint256 i = 0; i < keys.length; i++) {
            IssuerKey storage k = keys[i];
            if (k.validUntil == 0 || k.validUntil > end) {
                k.validUntil = end;
                emit IssuerKeyEnds(centre, k.keyId, end);
            }
        }
        _current[centre] = 0;
    }

    function _addKey(bytes32 centre, bytes memory pk) private {
        bytes32 keyId = keccak256(pk);
        uint64 now_ = uint64(block.timestamp);
        _usedPrefix[centre][bytes8(keyId)] = true;
        _keys[centre].push(IssuerKey({pk: pk, keyId: keyId, validFrom: now_, validUntil: 0}));
        _current[centre] = _keys[centre].length;
        emit IssuerKeySet(centre, keyId, pk, now_);
    }
}
