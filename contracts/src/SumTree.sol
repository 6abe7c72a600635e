// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Proofs of a Merkle sum tree (ledger/sumtree.py): every node carries the sum of the amounts
// below it, so a root with its total commits to what each leaf adds to the total.
//   leaf = (keccak256(abi.encode(digest, amount)), amount)
//   node = (keccak256(abi.encode(L.hash, L.sum, R.hash, R.sum)), L.sum + R.sum)
// A tree of `count` leaves is padded with EMPTY = (0, 0) to the next power of two, and a subtree
// holding no leaf below `count` is EMPTY itself (at every level); its depth is ceil(log2(count)).
// A proof must show every sibling that starts at or past `count` as EMPTY, so no amount can hide
// in the padding, where no dispute can name it. A proof lists the siblings from the leaf level up; bit k of the index is 0
// when the running node is the left child at level k. Free functions, compiled into the
// contract that uses them.

/// @notice Depth of a sum tree of `count` leaves: ceil(log2(count)), 0 for one leaf.
/// @param count The number of leaves (at least 1).
/// @return d The depth.
function sumTreeDepth(uint256 count) pure returns (uint256 d) {
    while ((uint256(1) << d) < count) d++;
}

/// @notice Whether a proof's sibling at `level` of leaf `index` may be (hash, sum): a sibling that
///         starts at or past `count` lies wholly in the padding and must be EMPTY.
/// @param index The leaf's position.
/// @param level The sibling's level (0: the leaves).
/// @param count The number of leaves.
/// @param hash The sibling's hash.
/// @param sum The sibling's sum.
/// @return True unless a padding sibling holds anything.
function siblingMayBe(uint256 index, uint256 level, uint256 count, bytes32 hash, uint256 sum) pure returns (bool) {
    return (((index >> level) | 1) << level) < count || (hash == bytes32(0) && sum == 0);
}

/// @notice Whether (digest, amount) is leaf `index` of the sum tree (root, total, count).
/// @dev False (never a revert) for a wrong length, an index out of range, a sibling in the
///      padding that is not EMPTY, or sums that overflow on the way up.
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
    if (index >= count || hashes.length != sumTreeDepth(count) || sums.length != hashes.length) return false;
    bytes32 h = keccak256(abi.encode(digest, amount));
    uint256 s = amount;
    for (uint256 k = 0; k < hashes.length; k++) {
        if (!siblingMayBe(index, k, count, hashes[k], sums[k])) return false;
        h = (index >> k) & 1 == 0
            ? keccak256(abi.encode(h, s, hashes[k], sums[k]))
            : keccak256(abi.encode(hashes[k], sums[k], h, s));
        unchecked {
            if (s + sums[k] < s) return false;
            s += sums[k];
        }
    }
    return h == root && s == total;
}
