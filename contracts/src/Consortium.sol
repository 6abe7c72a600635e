// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Governed} from "./Governed.sol";

/// @title Consortium
/// @notice The member registry of the xcentre consortium: which compute centres belong,
///         their chain accounts, gateway endpoints, token-signing keys and published rates.
///         Members are admitted and removed by a k-of-n vote of the active members.
/// @dev The order of `members()` is the admission order of the active members; removal
///      keeps the order of the others. Settlement nets claims in this order, so off-chain
///      auditors can recompute every transfer.
///      Rates are versioned: a job is priced at the version in force when it was accepted,
///      and its usage record names that version, so an auditor recomputes every price from
///      the chain. A published version never changes; a new one takes effect no sooner than
///      `rateNotice` seconds after it is published.
///      Each member publishes the sha256 of its Cedar policy set (and of its schema) as numbered
///      versions, in force from their block: an auditor re-evaluates a centre's logged access
///      decisions under the version it claims, and a gateway refuses to serve with another text.
///      Proposals, votes and the quorum rule are `Governed`'s; this contract says what an
///      admission or a removal checks and does.
contract Consortium is Governed {
    /// @notice Prices in the smallest credit unit.
    struct Prices {
        uint256 perCpuSecond;
        uint256 perGpuSecond;
        uint256 perGibHour;
    }

    /// @notice One published version of a member's rates.
    /// @dev `version` counts from 1 per member; `effectiveFrom` is in UTC seconds. The version
    ///      in force at time t is the highest one whose `effectiveFrom` is at most t.
    struct Rates {
        uint64 version;
        uint64 effectiveFrom;
        Prices prices;
    }

    /// @notice One published version of a member's access policy (Cedar).
    /// @dev `version` counts from 1 per member; `publishedAt` is the block time it was published
    ///      at, from which it is in force. `policyHash` is sha256 of the policy text (UTF-8),
    ///      `schemaHash` sha256 of the schema text, or zero when the centre has no schema.
    struct Policy {
        uint64 version;
        uint64 publishedAt;
        bytes32 policyHash;
        bytes32 schemaHash;
    }

    /// @notice A member centre. `id` is the centre's short name, utf-8, right-padded with zeros.
    /// @dev `prices` are the rates the centre is admitted with: they become a new rates version,
    ///      in force from admission. Later rates are published with `publishRates`; the rates in
    ///      force at any time are `ratesAt`, never this field.
    struct Member {
        bytes32 id;
        string name;
        address account;
        string gatewayUrl;
        bytes32 tokenKey;
        Prices prices;
        bool active;
    }

    /// @notice Proposal action: admit a new member.
    uint8 public constant ADMIT = 0;
    /// @notice Proposal action: remove an active member.
    uint8 public constant REMOVE = 1;

    /// @dev What a proposal is about; its votes are `Governed`'s.
    struct Proposal {
        uint8 action;
        Member member;
    }

    /// @notice Votes needed to execute a proposal (k of n).
    uint256 public immutable quorum;

    /// @notice Seconds between publishing new rates and the earliest time they may take effect.
    /// @dev Fixed at deployment. Every gateway learns of a version before it applies, and users
    ///      see a change coming; a job is priced at the version in force when it was accepted.
    uint64 public immutable rateNotice;

    mapping(bytes32 => Member) private _members;
    mapping(address => bytes32) private _idByAccount;
    bytes32[] private _activeIds;
    mapping(uint256 => Proposal) private _subjects;
    mapping(bytes32 => Rates[]) private _rates;
    mapping(bytes32 => Policy[]) private _policies;

    /// @notice A member was admitted (its admission rates follow as a `RatesPublished`).
    /// @param id The centre id.
    /// @param account The centre's chain account.
    /// @param name The centre's short name.
    /// @param gatewayUrl The gateway's base URL.
    /// @param tokenKey The Ed25519 token-signing public key.
    event MemberAdmitted(bytes32 indexed id, address account, string name, string gatewayUrl, bytes32 tokenKey);
    /// @notice A member was removed by vote.
    /// @param id The centre id.
    event MemberRemoved(bytes32 indexed id);
    /// @notice A member changed its endpoint or token key.
    /// @param id The centre id.
    /// @param gatewayUrl The gateway's base URL.
    /// @param tokenKey The Ed25519 token-signing public key.
    event MemberUpdated(bytes32 indexed id, string gatewayUrl, bytes32 tokenKey);
    /// @notice A member's rates version was published: at admission, or by the member itself.
    /// @param id The centre id.
    /// @param version The version number, counting from 1 per member.
    /// @param effectiveFrom UTC seconds from which jobs accepted are priced at these rates.
    /// @param prices The rates.
    event RatesPublished(bytes32 indexed id, uint64 indexed version, uint64 effectiveFrom, Prices prices);
    /// @notice A member published a new version of its access policy.
    /// @param id The centre id.
    /// @param version The version number, counting from 1 per member.
    /// @param policyHash sha256 of the Cedar policy text.
    /// @param schemaHash sha256 of the Cedar schema text (zero: no schema).
    /// @param publishedAt Block time from which the version is in force.
    event PolicyPublished(
        bytes32 indexed id, uint64 indexed version, bytes32 policyHash, bytes32 schemaHash, uint64 publishedAt
    );
    /// @notice A member proposed to admit or remove a centre; its own `Voted` follows.
    /// @param proposalId The new proposal's id (ids count from 1).
    /// @param action ADMIT (0) or REMOVE (1).
    /// @param memberId The centre to admit or remove.
    /// @param proposer The proposing member's id.
    event ProposalCreated(uint256 indexed proposalId, uint8 action, bytes32 indexed memberId, bytes32 proposer);

    /// @notice The caller (or the named centre) is not an active member.
    error NotMember();
    /// @notice The centre (or its account) is already an active member.
    error AlreadyMember(bytes32 id);
    /// @notice The account already belongs to another member.
    error AccountInUse(address account);
    /// @notice Action is neither ADMIT (0) nor REMOVE (1).
    error InvalidAction(uint8 action);
    /// @notice Quorum must satisfy 1 <= quorum <= number of members.
    error InvalidQuorum(uint256 quorum, uint256 members);
    /// @notice Name must be [a-z0-9-]{1,32} and equal to the id.
    error InvalidName(string name);
    /// @notice Account must not be the zero address.
    error InvalidAccount();
    /// @notice The removal would leave fewer members than the quorum.
    error QuorumUnreachable(uint256 quorum, uint256 remaining);
    /// @notice Rates may take effect no sooner than the notice period from now, and only after
    ///         the member's latest published version: no back-dating, no reordering.
    error RatesTooSoon(uint64 effectiveFrom, uint256 earliest);
    /// @notice The member has no rates version with this number (or none in force at that time).
    error UnknownRates(bytes32 id, uint64 version);
    /// @notice A policy hash must not be zero (it is sha256 of a policy text).
    error InvalidPolicyHash();
    /// @notice The policy and schema hashes are those of the caller's latest version `version`.
    error PolicyUnchanged(bytes32 id, uint64 version);
    /// @notice The member has no policy version with this number.
    error UnknownPolicy(bytes32 id, uint64 version);

    /// @notice Creates the consortium with its genesis members, a fixed quorum and a fixed notice.
    /// @param genesis The founding members (their `active` flag is ignored).
    /// @param quorum_ Votes needed to admit or remove a member, 1 <= quorum_ <= genesis.length.
    /// @param rateNotice_ Seconds between publishing rates and their taking effect.
    constructor(Member[] memory genesis, uint256 quorum_, uint64 rateNotice_) {
        if (quorum_ == 0 || quorum_ > genesis.length) revert InvalidQuorum(quorum_, genesis.length);
        quorum = quorum_;
        rateNotice = rateNotice_;
        for (uint256 i = 0; i < genesis.length; i++) {
            _admit(genesis[i]);
        }
    }

    modifier onlyMember() {
        if (_idByAccount[msg.sender] == bytes32(0)) revert NotMember();
        _;
    }

    /// @notice The active members in admission order.
    /// @return list The active members.
    function members() external view returns (Member[] memory list) {
        list = new Member[](_activeIds.length);
        for (uint256 i = 0; i < _activeIds.length; i++) {
            list[i] = _members[_activeIds[i]];
        }
    }

    /// @notice The ids of the active members in admission order (the netting order).
    /// @return The active member ids.
    function memberIds() external view returns (bytes32[] memory) {
        return _activeIds;
    }

    /// @notice Number of active members.
    /// @return The count.
    function memberCount() external view returns (uint256) {
        return _activeIds.length;
    }

    /// @notice A member by id (also a removed one, with active=false).
    /// @param id The centre id.
    /// @return The member record; reverts NotMember if the id was never admitted.
    function member(bytes32 id) external view returns (Member memory) {
        if (_members[id].id == bytes32(0)) revert NotMember();
        return _members[id];
    }

    /// @notice Whether `id` is an active member.
    /// @param id The centre id.
    /// @return True when active.
    function isMember(bytes32 id) public view returns (bool) {
        return id != bytes32(0) && _members[id].active;
    }

    /// @notice The id of the active member whose chain account is `account`.
    /// @param account The chain account.
    /// @return The member id; reverts NotMember otherwise.
    function idOf(address account) external view returns (bytes32) {
        bytes32 id = _idByAccount[account];
        if (id == bytes32(0)) revert NotMember();
        return id;
    }

    /// @notice Number of proposals created so far (ids are 1..proposalCount).
    /// @return The count.
    function proposalCount() external view returns (uint256) {
        return _proposals();
    }

    /// @notice A proposal's state.
    /// @param proposalId The proposal id.
    /// @return action ADMIT or REMOVE.
    /// @return executed Whether it has been executed.
    /// @return votes Votes of current members (votes of members removed since do not count).
    /// @return subject The member to admit (or whose id to remove).
    function proposal(uint256 proposalId)
        external
        view
        returns (uint8 action, bool executed, uint256 votes, Member memory subject)
    {
        (executed, votes) = _tally(proposalId);
        Proposal storage p = _subjects[proposalId];
        return (p.action, executed, votes, p.member);
    }

    /// @notice Whether member `voter` has voted on `proposalId`.
    /// @param proposalId The proposal id.
    /// @param voter The member id.
    /// @return True when voted.
    function hasVoted(uint256 proposalId, bytes32 voter) external view returns (bool) {
        return _hasVoted(proposalId, voter);
    }

    /// @notice Proposes to admit (0) or remove (1) a member; the proposer's vote counts.
    /// @dev Executes at once when the quorum is 1. For removal only `m.id` is read.
    /// @param action ADMIT (0) or REMOVE (1).
    /// @param m The member to admit, or a record carrying the id to remove.
    /// @return proposalId The new proposal's id.
    function propose(uint8 action, Member calldata m) external onlyMember returns (uint256 proposalId) {
        if (action == ADMIT) {
            _checkAdmissible(m);
        } else if (action == REMOVE) {
            _checkRemovable(m.id);
        } else {
            revert InvalidAction(action);
        }
        proposalId = _newProposal();
        Proposal storage p = _subjects[proposalId];
        p.action = action;
        p.member = m;
        bytes32 proposer = _idByAccount[msg.sender];
        emit ProposalCreated(proposalId, action, m.id, proposer);
        _vote(proposalId, proposer);
    }

    /// @notice Votes for a proposal; executes it when the votes reach the quorum.
    /// @param proposalId The proposal id.
    function vote(uint256 proposalId) external onlyMember {
        _vote(proposalId, _idByAccount[msg.sender]);
    }

    /// @notice Updates the caller's own endpoint and token key (rates: `publishRates`).
    /// @param gatewayUrl The gateway's base URL.
    /// @param tokenKey The Ed25519 token-signing public key.
    function updateMember(string calldata gatewayUrl, bytes32 tokenKey) external onlyMember {
        bytes32 id = _idByAccount[msg.sender];
        Member storage m = _members[id];
        m.gatewayUrl = gatewayUrl;
        m.tokenKey = tokenKey;
        emit MemberUpdated(id, gatewayUrl, tokenKey);
    }

    /// @notice Publishes a new version of the caller's rates, for jobs accepted from `effectiveFrom` on.
    /// @dev Versions already published never change. `effectiveFrom` must be at least `rateNotice`
    ///      seconds from now and later than the caller's latest version, so every version applies
    ///      in turn and none is back-dated. Jobs accepted before keep the version they were accepted under.
    /// @param prices The new rates.
    /// @param effectiveFrom UTC seconds from which they apply.
    /// @return version The new version's number.
    function publishRates(Prices calldata prices, uint64 effectiveFrom) external onlyMember returns (uint64 version) {
        bytes32 id = _idByAccount[msg.sender];
        Rates[] storage list = _rates[id];
        uint256 earliest = block.timestamp + rateNotice;
        uint256 afterLatest = uint256(list[list.length - 1].effectiveFrom) + 1;
        if (afterLatest > earliest) earliest = afterLatest;
        if (effectiveFrom < earliest) revert RatesTooSoon(effectiveFrom, earliest);
        version = _publish(id, prices, effectiveFrom);
    }

    /// @notice How many rates versions `id` has published (its latest version's number).
    /// @param id The centre id.
    /// @return The count (0 for a centre never admitted).
    function ratesCount(bytes32 id) external view returns (uint64) {
        return uint64(_rates[id].length);
    }

    /// @notice One rates version of a centre (also of a removed one).
    /// @param id The centre id.
    /// @param version The version number (from 1).
    /// @return The version; reverts UnknownRates if it was never published.
    function rates(bytes32 id, uint64 version) external view returns (Rates memory) {
        Rates[] storage list = _rates[id];
        if (version == 0 || version > list.length) revert UnknownRates(id, version);
        return list[version - 1];
    }

    /// @notice The rates version of `id` in force at `time`: the highest one whose `effectiveFrom` is at most `time`.
    /// @param id The centre id.
    /// @param time UTC seconds.
    /// @return The version in force; reverts UnknownRates(id, 0) if none was yet.
    function ratesAt(bytes32 id, uint256 time) external view returns (Rates memory) {
        Rates[] storage list = _rates[id];
        for (uint256 i = list.length; i > 0; i--) {
            if (list[i - 1].effectiveFrom <= time) return list[i - 1];
        }
        revert UnknownRates(id, 0);
    }

    /// @notice Publishes a new version of the caller's access policy, in force from this block.
    /// @dev Only a member publishes, and only its own policy. Versions already published never
    ///      change; publishing the hashes of the latest version again is refused, so every
    ///      version is a change (a new schema with the same policy is one).
    /// @param policyHash sha256 of the Cedar policy text (UTF-8), not zero.
    /// @param schemaHash sha256 of the Cedar schema text, or zero when the centre has none.
    /// @return version The new version's number.
    function publishPolicy(bytes32 policyHash, bytes32 schemaHash) external onlyMember returns (uint64 version) {
        if (policyHash == bytes32(0)) revert InvalidPolicyHash();
        bytes32 id = _idByAccount[msg.sender];
        uint256 n = _policies[id].length;
        if (n != 0) {
            Policy storage latest = _policies[id][n - 1];
            if (latest.policyHash == policyHash && latest.schemaHash == schemaHash) {
                revert PolicyUnchanged(id, latest.version);
            }
        }
        version = uint64(n + 1);
        uint64 now_ = uint64(block.timestamp);
        _policies[id].push(Policy(version, now_, policyHash, schemaHash));
        emit PolicyPublished(id, version, policyHash, schemaHash, now_);
    }

    /// @notice How many policy versions `id` has published (its latest version's number).
    /// @param id The centre id.
    /// @return The count (0 before its first publication).
    function policyCount(bytes32 id) external view returns (uint64) {
        return uint64(_policies[id].length);
    }

    /// @notice One policy version of a centre (also of a removed one).
    /// @param id The centre id.
    /// @param version The version number (from 1).
    /// @return The version; reverts UnknownPolicy if it was never published.
    function policy(bytes32 id, uint64 version) external view returns (Policy memory) {
        Policy[] storage list = _policies[id];
        if (version == 0 || version > list.length) revert UnknownPolicy(id, version);
        return list[version - 1];
    }

    function _isMember(bytes32 id) internal view override returns (bool) {
        return _members[id].active;
    }

    function _quorum() internal view override returns (uint256) {
        return quorum;
    }

    function _execute(uint256 proposalId) internal override {
        Proposal storage p = _subjects[proposalId];
        if (p.action == ADMIT) {
            _admit(p.member);
        } else {
            _checkRemovable(p.member.id);
            _remove(p.member.id);
        }
    }

    function _checkAdmissible(Member memory m) private view {
        _checkName(m.name, m.id);
        if (m.account == address(0)) revert InvalidAccount();
        if (_members[m.id].active) revert AlreadyMember(m.id);
        if (_idByAccount[m.account] != bytes32(0)) revert AccountInUse(m.account);
    }

    function _checkRemovable(bytes32 id) private view {
        if (!isMember(id)) revert NotMember();
        if (_activeIds.length - 1 < quorum) revert QuorumUnreachable(quorum, _activeIds.length - 1);
    }

    function _checkName(string memory name, bytes32 id) private pure {
        bytes memory b = bytes(name);
        if (b.length == 0 || b.length > 32) revert InvalidName(name);
        for (uint256 i = 0; i < b.length; i++) {
            bytes1 c = b[i];
            bool ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d;
            if (!ok) revert InvalidName(name);
        }
        if (bytes32(b) != id) revert InvalidName(name);
    }

    function _admit(Member memory m) private {
        _checkAdmissible(m);
        m.active = true;
        _members[m.id] = m;
        _idByAccount[m.account] = m.id;
        _activeIds.push(m.id);
        emit MemberAdmitted(m.id, m.account, m.name, m.gatewayUrl, m.tokenKey);
        // In force from admission: no job of this member can be running under an older version.
        // A readmitted member's admission rates supersede any version it left pending.
        _publish(m.id, m.prices, uint64(block.timestamp));
    }

    function _publish(bytes32 id, Prices memory prices, uint64 effectiveFrom) private returns (uint64 version) {
        // Written through the mapping, not a storage alias, so analysers see the state written.
        version = uint64(_rates[id].length + 1);
        _rates[id].push(Rates(version, effectiveFrom, prices));
        emit RatesPublished(id, version, effectiveFrom, prices);
    }

    function _remove(bytes32 id) private {
        Member storage m = _members[id];
        m.active = false;
        delete _idByAccount[m.account];
        uint256 n = _activeIds.length;
        uint256 i = 0;
        while (_activeIds[i] != id) i++;
        for (; i + 1 < n; i++) {
            _activeIds[i] = _activeIds[i + 1];
        }
        _activeIds.pop();
        emit MemberRemoved(id);
    }
}
