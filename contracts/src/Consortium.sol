// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ConsortiumCredit} from "./ConsortiumCredit.sol";
import {Governed} from "./Governed.sol";

/// @title Consortium
/// @notice The member registry of the xcentre consortium: which compute centres belong,
///         their chain accounts, gateway endpoints, token-signing keys and published rates.
///         Members are admitted and removed, the quorum changed and members funded with new
///         credit by a k-of-n vote of the active members.
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
///      admission, a removal, a quorum change and a funding check and do. The quorum always
///      stays reachable: 1 <= quorum <= active members, checked when a proposal is made and
///      again when it is carried out.
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
    /// @notice Proposal action: change the quorum.
    uint8 public constant SET_QUORUM = 2;
    /// @notice Proposal action: mint new credit to an active member's account.
    uint8 public constant FUND = 3;

    /// @dev What a proposal is about; its votes are `Governed`'s. `action` and `amount` share a
    ///      slot; `member` is written whole only for an admission (REMOVE writes its id, FUND its
    ///      id and account, SET_QUORUM nothing).
    struct Proposal {
        uint8 action;
        uint128 amount; // FUND: the credit to mint; SET_QUORUM: the quorum proposed
        Member member;
    }

    /// @notice Votes of current members that carry a proposal (k of n); changed by SET_QUORUM.
    uint256 public quorum;

    /// @notice The deployer, allowed to set the credit contract once.
    address public immutable deployer;

    /// @notice The credit token FUND proposals mint (its minter is this contract); zero until set.
    ConsortiumCredit public credit;

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
    mapping(bytes32 => uint256) private _admittedAt;

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
    /// @notice A member made a proposal; its own `Voted` follows (its amount: `proposalTerms`).
    /// @param proposalId The new proposal's id (ids count from 1).
    /// @param action ADMIT (0), REMOVE (1), SET_QUORUM (2) or FUND (3).
    /// @param memberId The centre to admit, remove or fund (zero for SET_QUORUM).
    /// @param proposer The proposing member's id.
    event ProposalCreated(uint256 indexed proposalId, uint8 action, bytes32 indexed memberId, bytes32 proposer);
    /// @notice A carried SET_QUORUM proposal changed the quorum.
    /// @param previous The quorum before.
    /// @param quorum The quorum now.
    event QuorumChanged(uint256 previous, uint256 quorum);
    /// @notice A carried FUND proposal minted new credit to a member's account.
    /// @param id The centre funded.
    /// @param account Its chain account, which received the credit.
    /// @param amount The credit minted.
    /// @param proposalId The proposal carried.
    event MemberFunded(bytes32 indexed id, address indexed account, uint256 amount, uint256 indexed proposalId);
    /// @notice The credit contract was set (once, by the deployer).
    /// @param credit The ConsortiumCredit contract.
    event CreditSet(address indexed credit);

    /// @notice The caller (or the named centre) is not an active member.
    error NotMember();
    /// @notice The centre (or its account) is already an active member.
    error AlreadyMember(bytes32 id);
    /// @notice The account already belongs to another member.
    error AccountInUse(address account);
    /// @notice `propose` takes ADMIT (0) or REMOVE (1) only (quorum: `proposeQuorum`; funding: `proposeFunding`).
    error InvalidAction(uint8 action);
    /// @notice Quorum must satisfy 1 <= quorum <= number of members.
    error InvalidQuorum(uint256 quorum, uint256 members);
    /// @notice Name must be [a-z0-9-]{1,32} and equal to the id.
    error InvalidName(string name);
    /// @notice Account must not be the zero address.
    error InvalidAccount();
    /// @notice The removal would leave fewer members than the quorum.
    error QuorumUnreachable(uint256 quorum, uint256 remaining);
    /// @notice A funding amount must be at least 1 and below 2**128.
    error InvalidAmount(uint256 amount);
    /// @notice No credit contract is set: this deployment cannot fund members.
    error CreditNotSet();
    /// @notice The credit contract is already set.
    error CreditAlreadySet(address credit);
    /// @notice The credit contract must be a contract whose minter is this Consortium.
    error InvalidCredit(address credit);
    /// @notice Only the deployer may set the credit contract.
    error Unauthorized(address caller);
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

    /// @notice Creates the consortium with its genesis members, its first quorum and a fixed notice.
    /// @param genesis The founding members (their `active` flag is ignored).
    /// @param quorum_ Votes that carry a proposal, 1 <= quorum_ <= genesis.length (later: SET_QUORUM).
    /// @param rateNotice_ Seconds between publishing rates and their taking effect.
    constructor(Member[] memory genesis, uint256 quorum_, uint64 rateNotice_) {
        if (quorum_ == 0 || quorum_ > genesis.length) revert InvalidQuorum(quorum_, genesis.length);
        quorum = quorum_;
        rateNotice = rateNotice_;
        deployer = msg.sender;
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

    /// @notice How many on-time anchors of an epoch start its anchor deadline (UsageLedger): the
    ///         quorum, or one short of every member when the quorum is all of them (a silent
    ///         member must not block settlement for good). No coalition short of it can start an
    ///         epoch's clock early, to make the others' anchors late or settle an epoch alone.
    /// @return need The number of anchors.
    function anchorQuorum() external view returns (uint256 need) {
        need = quorum;
        uint256 n = _activeIds.length;
        if (need >= n && n > 1) need = n - 1;
    }

    /// @notice The block of `id`'s latest admission (0: never admitted): its votes cast before
    ///         it, in an earlier membership, no longer count.
    /// @param id The centre id.
    /// @return The block number.
    function memberSince(bytes32 id) external view returns (uint256) {
        return _admittedAt[id];
    }

    /// @notice Number of proposals created so far (ids are 1..proposalCount).
    /// @return The count.
    function proposalCount() external view returns (uint256) {
        return _proposals();
    }

    /// @notice A proposal's state.
    /// @param proposalId The proposal id.
    /// @return action ADMIT, REMOVE, SET_QUORUM or FUND.
    /// @return executed Whether it has been executed.
    /// @return votes Votes of current members (votes of members removed since, or cast before a
    ///         member's latest admission, do not count).
    /// @return subject The member to admit, or the record of the member to remove or fund
    ///         (empty for SET_QUORUM); its amount is in `proposalTerms`.
    function proposal(uint256 proposalId)
        external
        view
        returns (uint8 action, bool executed, uint256 votes, Member memory subject)
    {
        (executed, votes) = _tally(proposalId);
        Proposal storage p = _subjects[proposalId];
        action = p.action;
        if (action == ADMIT) {
            subject = p.member;
        } else if (action != SET_QUORUM) {
            subject = _members[p.member.id];
        }
    }

    /// @notice A proposal's terms and state in one read, for every action.
    /// @param proposalId The proposal id.
    /// @return action ADMIT, REMOVE, SET_QUORUM or FUND.
    /// @return subject The centre admitted, removed or funded (zero for SET_QUORUM).
    /// @return amount FUND: the credit to mint; SET_QUORUM: the quorum proposed; otherwise 0.
    /// @return executed Whether it has been carried out.
    /// @return votes Votes of current members.
    function proposalTerms(uint256 proposalId)
        external
        view
        returns (uint8 action, bytes32 subject, uint256 amount, bool executed, uint256 votes)
    {
        (executed, votes) = _tally(proposalId);
        Proposal storage p = _subjects[proposalId];
        return (p.action, p.member.id, p.amount, executed, votes);
    }

    /// @notice Who voted for a proposal, in vote order (also members removed since, whose votes
    ///         no longer count, even once readmitted); the first is the proposer.
    /// @param proposalId The proposal id.
    /// @return The voters' member ids.
    function proposalVoters(uint256 proposalId) external view returns (bytes32[] memory) {
        return _voters(proposalId);
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
        proposalId = _newProposal();
        Proposal storage p = _subjects[proposalId];
        if (action == ADMIT) {
            _checkAdmissible(m);
            p.member = m;
        } else if (action == REMOVE) {
            _checkRemovable(m.id);
            p.action = REMOVE;
            p.member.id = m.id;
        } else {
            revert InvalidAction(action);
        }
        _opened(proposalId, action, m.id);
    }

    /// @notice Proposes a new quorum; the proposer's vote counts. It must stay reachable:
    ///         1 <= newQuorum <= active members, now and when the proposal is carried.
    /// @param newQuorum Votes of current members that will carry a proposal.
    /// @return proposalId The new proposal's id.
    function proposeQuorum(uint256 newQuorum) external onlyMember returns (uint256 proposalId) {
        _checkQuorum(newQuorum);
        proposalId = _newProposal();
        Proposal storage p = _subjects[proposalId];
        p.action = SET_QUORUM;
        p.amount = uint128(newQuorum); // at most the member count
        _opened(proposalId, SET_QUORUM, bytes32(0));
    }

    /// @notice Proposes to mint `amount` of new credit to active member `id`'s account (for a
    ///         member admitted after genesis, say); the proposer's vote counts. Credit is minted
    ///         in no other way.
    /// @param id The centre to fund (active now and when the proposal is carried, with the
    ///        account it has now: readmitted with another one since, it is not carried).
    /// @param amount The credit, 1 <= amount < 2**128.
    /// @return proposalId The new proposal's id.
    function proposeFunding(bytes32 id, uint256 amount) external onlyMember returns (uint256 proposalId) {
        if (address(credit) == address(0)) revert CreditNotSet();
        if (!isMember(id)) revert NotMember();
        if (amount == 0 || amount > type(uint128).max) revert InvalidAmount(amount);
        proposalId = _newProposal();
        Proposal storage p = _subjects[proposalId];
        p.action = FUND;
        p.amount = uint128(amount);
        p.member.id = id;
        p.member.account = _members[id].account; // minted to this account only
        _opened(proposalId, FUND, id);
    }

    /// @notice Sets the credit contract FUND proposals mint; callable once, by the deployer, with
    ///         a ConsortiumCredit whose minter is already this contract.
    /// @param credit_ The ConsortiumCredit contract.
    function setCredit(address credit_) external {
        if (msg.sender != deployer) revert Unauthorized(msg.sender);
        if (address(credit) != address(0)) revert CreditAlreadySet(address(credit));
        if (credit_.code.length == 0 || ConsortiumCredit(credit_).minter() != address(this)) {
            revert InvalidCredit(credit_);
        }
        credit = ConsortiumCredit(credit_);
        emit CreditSet(credit_);
    }

    /// @notice Votes for a proposal; executes it when the votes reach the quorum.
    /// @param proposalId The proposal id.
    function vote(uint256 proposalId) external onlyMember {
        _vote(proposalId, _idByAccount[msg.sender]);
    }

    /// @notice Carries out a proposal whose current members' votes reach the quorum now (the
    ///         quorum was lowered since its last vote); reverts NotCarried otherwise.
    /// @param proposalId The proposal id.
    function carry(uint256 proposalId) external onlyMember {
        _carry(proposalId);
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

    function _memberSince(bytes32 id) internal view override returns (uint256) {
        return _admittedAt[id];
    }

    function _quorum() internal view override returns (uint256) {
        return quorum;
    }

    function _execute(uint256 proposalId) internal override {
        Proposal storage p = _subjects[proposalId];
        uint8 action = p.action;
        if (action == ADMIT) {
            _admit(p.member);
        } else if (action == REMOVE) {
            _checkRemovable(p.member.id);
            _remove(p.member.id);
        } else if (action == SET_QUORUM) {
            _checkQuorum(p.amount);
            emit QuorumChanged(quorum, p.amount);
            quorum = p.amount;
        } else {
            bytes32 id = p.member.id;
            address account = p.member.account;
            // readmitted with another account since (another operator, say): not what was voted
            if (!isMember(id) || _members[id].account != account) revert NotMember();
            emit MemberFunded(id, account, p.amount, proposalId);
            credit.mint(account, p.amount);
        }
    }

    /// @dev Announces a proposal just stored and casts its proposer's vote.
    function _opened(uint256 proposalId, uint8 action, bytes32 subject) private {
        bytes32 proposer = _idByAccount[msg.sender];
        emit ProposalCreated(proposalId, action, subject, proposer);
        _vote(proposalId, proposer);
    }

    function _checkQuorum(uint256 q) private view {
        if (q == 0 || q > _activeIds.length) revert InvalidQuorum(q, _activeIds.length);
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
        _admittedAt[m.id] = block.number;
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
