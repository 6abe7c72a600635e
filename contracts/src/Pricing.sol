// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

// What a usage record costs: its meters times one version of the serving centre's rates,
// each term rounded up to the smallest credit unit (exactly ledger.pricing.price). Free
// functions, compiled into the contract that uses them.

/// @dev Milliseconds in a second.
uint256 constant MILLIS_PER_SECOND = 1000;
/// @dev KiB x milliseconds in one GiB-hour.
uint256 constant KIB_MILLIS_PER_GIB_HOUR = 1024 * 1024 * 3_600_000;

/// @notice Price of a run: cpu-seconds, gpu-seconds and peak-memory GiB-hours held for
///         the wall time, each term rounded up; saturates at type(uint256).max.
/// @param cpuMillis CPU time in milliseconds.
/// @param gpuMillis GPU time in milliseconds.
/// @param maxRssKib Peak resident memory in KiB.
/// @param wallMillis Wall time in milliseconds.
/// @param perCpuSecond Price of one CPU-second.
/// @param perGpuSecond Price of one GPU-second.
/// @param perGibHour Price of one GiB-hour.
/// @return The price in the smallest credit unit.
/// @dev Products are taken in 512 bits, so no term is cut short. A price that does not fit
///      in 256 bits saturates to type(uint256).max: it exceeds every grant, and a record's
///      price is the lesser of the two, so the capped price is exact whenever it fits.
function meteredPrice(
    uint64 cpuMillis,
    uint64 gpuMillis,
    uint64 maxRssKib,
    uint64 wallMillis,
    uint256 perCpuSecond,
    uint256 perGpuSecond,
    uint256 perGibHour
) pure returns (uint256) {
    uint256 total = _ceilTerm(cpuMillis, perCpuSecond, MILLIS_PER_SECOND);
    total = Math.saturatingAdd(total, _ceilTerm(gpuMillis, perGpuSecond, MILLIS_PER_SECOND));
    uint256 kibMillis = uint256(maxRssKib) * wallMillis; // < 2**128
    return Math.saturatingAdd(total, _ceilTerm(kibMillis, perGibHour, KIB_MILLIS_PER_GIB_HOUR));
}

/// @dev ceil(a * b / d), or type(uint256).max when that does not fit in 256 bits.
function _ceilTerm(uint256 a, uint256 b, uint256 d) pure returns (uint256) {
    (uint256 high,) = Math.mul512(a, b);
    if (high >= d) return type(uint256).max;
    uint256 roundUp = mulmod(a, b, d) == 0 ? 0 : 1;
    return Math.saturatingAdd(Math.mulDiv(a, b, d), roundUp);
}
