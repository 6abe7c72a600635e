// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Proofs of a Merkle sum tree (ledger/sumtree.py): every node carries the sum of the amounts
// below it, so a root with its total commits to what each leaf adds to the total.
//   leaf = (keccak256(abi.encode(digest, amount)), amount)
//   node = (keccak256(abi.encode(L.hash, L.sum, R.hash, R.sum)), L.sum + R.sum)
// A tree of `count` leaves is padded with (0, 0) to the next power of two; its depth is
// ceil(log2(count)). A proof lists the siblings from the leaf level up; bit k of the index is 0
// when the running node is the left child at level k. Free functions, compiled into the
// contract that uses them.

/// @notice Depth of a sum tree of `count` leaves: ceil(log2(count)), 0 for one leaf.
/// @param count The number of leaves (at least 1).
/// @return d The depth.
function sumTreeDepth(uint256 count) pure returns (uint256 d) {
    while ((uint256(1) << d) < count) d++;
}

/// @notice Whether (digest, amount) is leaf `index` of the sum tree (root, total, count).
/// @dev False (never a revert) for a wrong length, an index out of range, or sums that
///      overflow on the way up.
/// @param root The anchored root hash.
/// @param total The anchored total (the root's sum).
/// @param count The anchored number of leaves.
/// @param index The leaf's position.
/// @param digest The leaf's record digest.
/// @param amount The leaf's amount.
/// @param hashes Sibling hashes from the leaf level up.
/// @param sums Sibling sums from the leaf level up.
/// @return True when the proof checks.
function verifySumProof(
    bytes32 root,
    uint256 total,
    uint256 count,
    uint256 index,
    bytes32 digest,
    uint256 amount,
    bytes32[] calldata hashes,
    uint256[] calldata sums
) pure returns (bool) {
    uint256 d = sumTreeDepth(count);
    if (index >= count || hashes.length != d || sums.length != d) return false;
    bytes32 h = keccak256(abi.encode(digest, amount));
    uint256 s = amount;
    for (uint256 k = 0; k < d; k++) {
        uint256 sibling = sums[k];
        h = (index >> k) & 1 == 0
            ? keccak256(abi.encode(h, s, hashes[k], sibling))
            : keccak256(abi.encode(hashes[k], sibling, h, s));
        unchecked {
            if (s + sibling < s) return false;
            s += sibling;
        }
    }
    return h == root && s == total;
}
