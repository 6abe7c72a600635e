// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Consortium} from "./Consortium.sol";

/// @title UsageLedger
/// @notice Per-epoch commitments of each centre's signed usage records: a Merkle root, the
///         record count and what each other centre owes the anchoring centre for that epoch.
/// @dev One transaction per centre per epoch, never one per job.
contract UsageLedger {
    struct Anchor {
        bytes32 root;
        uint64 recordCount;
        bool anchored;
    }

    /// @notice The largest claim one centre may anchor on another for one epoch.
    /// @dev Settlement nets claims as int256: bounding each claim keeps every cast exact and
    ///      every sum far from overflow, so an anchored epoch can always be netted.
    uint256 public constant MAX_CLAIM = type(uint128).max;

    /// @notice The member registry consulted for who may anchor and who may be named.
    Consortium public immutable consortium;

    mapping(bytes32 => mapping(uint64 => Anchor)) private _anchors;
    mapping(bytes32 => mapping(uint64 => bytes32[])) private _debtors;
    mapping(uint64 => mapping(bytes32 => mapping(bytes32 => uint256))) private _claims;

    /// @notice A centre anchored an epoch of its usage records and its claims on other centres.
    /// @param centre The anchoring (serving, creditor) centre.
    /// @param epoch The epoch.
    /// @param root Merkle root of the epoch's record leaves (zero if none).
    /// @param recordCount Number of records under the root.
    /// @param debtors Centres that owe the anchoring centre for the epoch.
    /// @param amounts What each debtor owes, in the smallest credit unit.
    event EpochAnchored(
        bytes32 indexed centre, uint64 indexed epoch, bytes32 root, uint64 recordCount, bytes32[] debtors, uint256[] amounts
    );

    /// @notice This centre has already anchored this epoch.
    error AlreadyAnchored(bytes32 centre, uint64 epoch);
    /// @notice debtors and amounts differ in length.
    error LengthMismatch(uint256 debtors, uint256 amounts);
    /// @notice A named debtor is not an active member.
    error UnknownDebtor(bytes32 debtor);
    /// @notice A centre cannot claim from itself.
    error SelfClaim(bytes32 centre);
    /// @notice The same debtor is named twice.
    error DuplicateDebtor(bytes32 debtor);
    /// @notice A claim exceeds MAX_CLAIM.
    error ClaimTooLarge(bytes32 debtor, uint256 amount);

    /// @param consortium_ The Consortium contract.
    constructor(address consortium_) {
        consortium = Consortium(consortium_);
    }

    /// @notice Anchors the caller's records of `epoch`: Merkle root, count and claims.
    /// @dev The caller's member id is the creditor; reverts NotMember for non-members.
    /// @param epoch The epoch number.
    /// @param root Merkle root of the record leaves (an OpenZeppelin StandardMerkleTree over the
    ///        records' EIP-712 digests, type bytes32); zero if none.
    /// @param recordCount Number of records under the root.
    /// @param debtors Centres that owe the caller for this epoch (active members, no duplicates).
    /// @param amounts What each debtor owes, in the smallest credit unit (at most MAX_CLAIM).
    function anchor(
        uint64 epoch,
        bytes32 root,
        uint64 recordCount,
        bytes32[] calldata debtors,
        uint256[] calldata amounts
    ) external {
        bytes32 centre = consortium.idOf(msg.sender);
        Anchor storage a = _anchors[centre][epoch];
        if (a.anchored) revert AlreadyAnchored(centre, epoch);
        if (debtors.length != amounts.length) revert LengthMismatch(debtors.length, amounts.length);
        for (uint256 i = 0; i < debtors.length; i++) {
            bytes32 d = debtors[i];
            if (d == centre) revert SelfClaim(centre);
            if (!consortium.isMember(d)) revert UnknownDebtor(d);
            if (amounts[i] > MAX_CLAIM) revert ClaimTooLarge(d, amounts[i]);
            for (uint256 j = 0; j < i; j++) {
                if (debtors[j] == d) revert DuplicateDebtor(d);
            }
            _claims[epoch][centre][d] = amounts[i];
        }
        a.root = root;
        a.recordCount = recordCount;
        a.anchored = true;
        _debtors[centre][epoch] = debtors;
        emit EpochAnchored(centre, epoch, root, recordCount, debtors, amounts);
    }

    /// @notice The anchor of `centre` for `epoch`.
    /// @param centre The centre id.
    /// @param epoch The epoch.
    /// @return root The Merkle root.
    /// @return recordCount The record count.
    /// @return anchored Whether the centre has anchored this epoch.
    function anchorOf(bytes32 centre, uint64 epoch)
        external
        view
        returns (bytes32 root, uint64 recordCount, bool anchored)
    {
        Anchor storage a = _anchors[centre][epoch];
        return (a.root, a.recordCount, a.anchored);
    }

    /// @notice What `debtor` owes `creditor` for `epoch` as anchored by the creditor.
    /// @param epoch The epoch.
    /// @param creditor The anchoring centre.
    /// @param debtor The owing centre.
    /// @return The amount.
    function claim(uint64 epoch, bytes32 creditor, bytes32 debtor) external view returns (uint256) {
        return _claims[epoch][creditor][debtor];
    }

    /// @notice All claims `creditor` anchored for `epoch`, in the order given.
    /// @param epoch The epoch.
    /// @param creditor The anchoring centre.
    /// @return debtors The named debtors.
    /// @return amounts What each owes.
    function claimsOf(uint64 epoch, bytes32 creditor)
        external
        view
        returns (bytes32[] memory debtors, uint256[] memory amounts)
    {
        debtors = _debtors[creditor][epoch];
        amounts = new uint256[](debtors.length);
        for (uint256 i = 0; i < debtors.length; i++) {
            amounts[i] = _claims[epoch][creditor][debtors[i]];
        }
    }

    /// @notice Whether `leaf` is under the root `centre` anchored for `epoch`.
    /// @param centre The serving centre.
    /// @param epoch The epoch.
    /// @param leaf The record leaf (keccak256(keccak256(EIP-712 digest))).
    /// @param proof The sibling hashes from leaf to root.
    /// @return True when the proof checks against an anchored root.
    function verifyRecord(bytes32 centre, uint64 epoch, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        Anchor storage a = _anchors[centre][epoch];
        if (!a.anchored) return false;
        return MerkleProof.verifyCalldata(proof, a.root, leaf);
    }
}
