// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Governed
/// @notice k-of-n proposals of the consortium's members: numbering, votes, the quorum rule and
///         execution, written once for every contract that member votes govern (Consortium's
///         admissions, removals, quorum changes and fundings, IdentityRegistry's issuer-key changes).
/// @dev A derived contract keeps what a proposal is about under its id, names who its members
///      are (`_isMember`) and how many votes pass a proposal (`_quorum`), and carries a passed
///      proposal out in `_execute`. A vote counts only while its voter is a member, and only if
///      cast since the voter's latest admission (`_memberSince`): a member voted out no longer
///      helps any open proposal pass, not even once its id is admitted again. A proposal executes inside the
///      transaction of the vote that reaches the quorum (of the proposal itself when the
///      quorum is 1); if `_execute` reverts, that vote reverts and is not counted. A proposal
///      not carried within PROPOSAL_LIFETIME of its making expires: votes on it revert from
///      then on, so one that failed to pass cannot be carried months later by a changed
///      membership.
abstract contract Governed {
    /// @dev `voters[0..voterCount)` are member ids in vote order, also of members removed since.
    ///      The count shares its slot with `executed` and `createdAt` (the block time of the
    ///      proposal's making), so a vote reads one slot for all three and the vote that
    ///      executes a proposal writes one slot it already touched.
    struct Ballot {
        uint64 voterCount;
        bool executed;
        uint64 createdAt;
        mapping(uint256 => bytes32) voters;
    }

    /// @notice How long a proposal stays open to votes after it is made (like a Governor's
    ///         voting period): from `proposalExpiresAt` on, votes on it revert ProposalExpired.
    uint256 public constant PROPOSAL_LIFETIME = 30 days;

    mapping(uint256 => Ballot) private _ballots;
    /// @dev The block of each member's vote on each proposal (0: none).
    mapping(uint256 => mapping(bytes32 => uint256)) private _votedAt;
    uint256 private _proposalCount;

    /// @notice A member voted for a proposal (the proposer's own vote included).
    /// @param proposalId The proposal id.
    /// @param voter The voting member's id.
    event Voted(uint256 indexed proposalId, bytes32 indexed voter);
    /// @notice A proposal reached the quorum of current members' votes and was carried out,
    ///         in this transaction, by the events that precede this one.
    /// @param proposalId The proposal id.
    event ProposalExecuted(uint256 indexed proposalId);

    /// @notice No proposal has this id.
    error UnknownProposal(uint256 proposalId);
    /// @notice The proposal has already been executed.
    error ProposalClosed(uint256 proposalId);
    /// @notice This member has already voted on this proposal.
    error AlreadyVoted(uint256 proposalId, bytes32 voter);
    /// @notice The proposal was not carried within PROPOSAL_LIFETIME of its making; it takes
    ///         no more votes (propose it again to put it to the members now).
    error ProposalExpired(uint256 proposalId);
    /// @notice Current members' votes for the proposal do not reach the quorum.
    error NotCarried(uint256 proposalId, uint256 votes, uint256 quorum);

    /// @dev Whether `id` is a member now; only members' votes count.
    function _isMember(bytes32 id) internal view virtual returns (bool);

    /// @dev The block of `id`'s latest admission: its votes cast before it (in an earlier
    ///      membership, perhaps of another operator under the same name) do not count.
    function _memberSince(bytes32 id) internal view virtual returns (uint256);

    /// @dev Votes of current members that pass a proposal.
    function _quorum() internal view virtual returns (uint256);

    /// @dev Carries out a proposal that has just passed (its `executed` flag is already set).
    function _execute(uint256 proposalId) internal virtual;

    /// @notice When a proposal stops taking votes: a vote in a block at or after this time
    ///         reverts ProposalExpired (unless it was carried before, which it keeps).
    /// @dev Reverts UnknownProposal for an id never given out.
    /// @param proposalId The proposal id.
    /// @return Unix seconds: its making's block time plus PROPOSAL_LIFETIME.
    function proposalExpiresAt(uint256 proposalId) external view returns (uint256) {
        return _ballot(proposalId).createdAt + PROPOSAL_LIFETIME;
    }

    /// @dev Numbers a new proposal (ids start at 1) and stamps its making's time; the caller
    ///      stores its subject and then casts the proposer's vote with `_vote`.
    function _newProposal() internal returns (uint256 proposalId) {
        proposalId = ++_proposalCount;
        _ballots[proposalId].createdAt = uint64(block.timestamp);
    }

    /// @dev Records `voter`'s vote and executes the proposal when current members' votes reach
    ///      the quorum; reverts ProposalExpired once the proposal's lifetime is over. `voter`
    ///      must be a member; the caller checks who sent it.
    function _vote(uint256 proposalId, bytes32 voter) internal {
        Ballot storage b = _ballot(proposalId);
        if (b.executed) revert ProposalClosed(proposalId);
        if (block.timestamp >= b.createdAt + PROPOSAL_LIFETIME) revert ProposalExpired(proposalId);
        if (_votedAt[proposalId][voter] != 0) revert AlreadyVoted(proposalId, voter);
        _votedAt[proposalId][voter] = block.number;
        b.voters[b.voterCount++] = voter;
        emit Voted(proposalId, voter);
        if (_currentVotes(proposalId, b) >= _quorum()) {
            b.executed = true;
            _execute(proposalId);
            emit ProposalExecuted(proposalId);
        }
    }

    /// @dev Carries out a proposal whose current members' votes reach the quorum without a new
    ///      vote: one the quorum was lowered under after its last vote, whose voters cannot vote
    ///      again. The same checks and execution as the vote that would have carried it.
    function _carry(uint256 proposalId) internal {
        Ballot storage b = _ballot(proposalId);
        if (b.executed) revert ProposalClosed(proposalId);
        if (block.timestamp >= b.createdAt + PROPOSAL_LIFETIME) revert ProposalExpired(proposalId);
        uint256 votes = _currentVotes(proposalId, b);
        uint256 quorum = _quorum();
        if (votes < quorum) revert NotCarried(proposalId, votes, quorum);
        b.executed = true;
        _execute(proposalId);
        emit ProposalExecuted(proposalId);
    }

    /// @dev Number of proposals so far (ids are 1.._proposalCount()).
    function _proposals() internal view returns (uint256) {
        return _proposalCount;
    }

    /// @dev Whether an existing proposal has executed, and its current members' votes;
    ///      reverts UnknownProposal for an id never given out.
    function _tally(uint256 proposalId) internal view returns (bool executed, uint256 votes) {
        Ballot storage b = _ballot(proposalId);
        return (b.executed, _currentVotes(proposalId, b));
    }

    /// @dev Whether member `voter` has voted on `proposalId`.
    function _hasVoted(uint256 proposalId, bytes32 voter) internal view returns (bool) {
        return _votedAt[proposalId][voter] != 0;
    }

    /// @dev Every voter of an existing proposal in vote order (members removed since included).
    function _voters(uint256 proposalId) internal view returns (bytes32[] memory list) {
        Ballot storage b = _ballot(proposalId);
        list = new bytes32[](b.voterCount);
        for (uint256 i = 0; i < list.length; i++) {
            list[i] = b.voters[i];
        }
    }

    function _ballot(uint256 proposalId) private view returns (Ballot storage) {
        if (proposalId == 0 || proposalId > _proposalCount) revert UnknownProposal(proposalId);
        return _ballots[proposalId];
    }

    function _currentVotes(uint256 proposalId, Ballot storage b) private view returns (uint256 count) {
        uint256 n = b.voterCount;
        for (uint256 i = 0; i < n; i++) {
            bytes32 v = b.voters[i];
            if (_isMember(v) && _votedAt[proposalId][v] >= _memberSince(v)) count++;
        }
    }
}
