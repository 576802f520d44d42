// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {KnackToken} from "./KnackToken.sol";

/// @title ClipRegistry
/// @notice Devices submit batches of clip CIDs (their 32-byte sha2-256 digests); the contract computes
/// each batch's Merkle root from the calldata and keeps only the root, the contributor, the count and a
/// settled flag (two storage slots). The digests themselves live in the BatchSubmitted event. A
/// validator settles a batch once: a bitmap of accepted clips, one quality (basis points) per accepted
/// clip and one reason code per rejected clip; the batch's reward is minted once to its contributor.
///
/// Merkle tree (mirrored by storage/contracts/merkle.py):
///   leaf_i  = keccak256(abi.encodePacked(uint256(i), digest_i))
///   parent  = keccak256 of the two children in ascending order (OpenZeppelin's commutative hash,
///             so MerkleProof.verify works)
///   an odd node at the end of a level is promoted unchanged to the next level.
contract ClipRegistry is AccessControl {
    bytes32 public constant VALIDATOR_ROLE = keccak256("VALIDATOR_ROLE");
    /// @notice Most clips in one batch.
    uint256 public constant MAX_BATCH = 256;
    /// @notice Quality scale: 10000 basis points = full reward.
    uint256 public constant QUALITY_SCALE = 10_000;

    /// @notice The reward token; this contract is its only minter.
    KnackToken public immutable token;

    /// Two slots: root; then contributor (bits 0..159), count (160..191), settled (192).
    struct Batch {
        bytes32 root;
        address contributor;
        uint32 count;
        bool settled;
    }

    uint128 private _rewardPerClip;
    uint128 private _maxRewardPerClip;
    uint256 private _batchCount;
    mapping(uint256 batchId => Batch) private _batches;

    event BatchSubmitted(uint256 indexed batchId, address indexed contributor, bytes32 root, bytes32[] digests);
    event BatchSettled(
        uint256 indexed batchId,
        address indexed contributor,
        address indexed validator,
        uint256 accepted,
        uint256 rejected,
        uint256 reward,
        uint256[] acceptedBitmap,
        bytes qualities,
        bytes rejectReasons
    );
    event RewardChanged(uint256 rewardPerClip, uint256 maxRewardPerClip);

    error ZeroAdmin();
    error EmptyBatch();
    error BatchTooLarge(uint256 count, uint256 max);
    error UnknownBatch(uint256 batchId);
    error AlreadySettled(uint256 batchId);
    /// The bitmap must have ceil(count / 256) words ...
    error BadBitmap(uint256 expectedWords, uint256 words);
    /// ... and no bit set at or beyond the batch's `count`.
    error BitBeyondCount(uint256 count);
    /// `qualities` must hold one uint16 per accepted clip.
    error QualitiesLength(uint256 expectedBytes, uint256 bytes_);
    /// `rejectReasons` must hold one uint8 per rejected clip.
    error RejectReasonsLength(uint256 expectedBytes, uint256 bytes_);
    /// The `position`-th accepted clip's quality is above 10000 basis points.
    error QualityTooHigh(uint256 position, uint256 quality);
    /// Reward amounts are kept in 128 bits.
    error RewardTooLarge();

    constructor(address admin, address validator, uint256 rewardPerClip_, uint256 maxRewardPerClip_) {
        if (admin == address(0)) revert ZeroAdmin();
        token = new KnackToken(address(this));
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (validator != address(0)) _grantRole(VALIDATOR_ROLE, validator);
        _setReward(rewardPerClip_, maxRewardPerClip_);
    }

    // ---------------------------------------------------------------- devices

    /// @notice Submits a batch of 1..256 clip digests (sha2-256 of each clip's CID); anyone may.
    /// @return batchId The new batch's id (0, 1, 2, ...).
    function submitBatch(bytes32[] calldata digests) external returns (uint256 batchId) {
        uint256 n = digests.length;
        if (n == 0) revert EmptyBatch();
        if (n > MAX_BATCH) revert BatchTooLarge(n, MAX_BATCH);
        batchId = _batchCount;
        unchecked {
            _batchCount = batchId + 1;
        }
        Batch storage b = _batches[batchId];
        bytes32 topic = BatchSubmitted.selector;
        // Event data at m: root | 0x40 | n | digests. The tree is built first in the digests' place.
        uint256 m;
        assembly ("memory-safe") {
            m := mload(0x40)
        }
        bytes32 root = _merkleRoot(digests, m + 0x60);
        assembly ("memory-safe") {
            sstore(b.slot, root)
            // contributor | count << 160 (settled = 0): the packed slot in one store
            sstore(add(b.slot, 1), or(caller(), shl(160, n)))
            mstore(m, root)
            mstore(add(m, 0x20), 0x40)
            mstore(add(m, 0x40), n)
            calldatacopy(add(m, 0x60), digests.offset, shl(5, n))
            log3(m, add(0x60, shl(5, n)), topic, batchId, caller())
        }
    }

    // ---------------------------------------------------------------- validators

    /// @notice Settles a submitted batch once: bit i of `acceptedBitmap` (word i / 256, bit i % 256)
    /// set = clip i accepted; `qualities` = one big-endian uint16 (0..10000 basis points) per accepted
    /// clip in index order; `rejectReasons` = one uint8 per rejected clip in index order (only emitted).
    /// Each accepted clip earns min(rewardPerClip * quality / 10000, maxRewardPerClip); the sum is
    /// minted once to the batch's contributor.
    /// @return reward The amount minted.
    function settleBatch(
        uint256 batchId,
        uint256[] calldata acceptedBitmap,
        bytes calldata qualities,
        bytes calldata rejectReasons
    ) external onlyRole(VALIDATOR_ROLE) returns (uint256 reward) {
        Batch storage b = _batches[batchId];
        uint256 packed;
        assembly ("memory-safe") {
            packed := sload(add(b.slot, 1))
        }
        if (packed == 0) revert UnknownBatch(batchId); // the contributor is never address(0)
        if ((packed >> 192) & 1 != 0) revert AlreadySettled(batchId);
        (uint256 accepted, uint256 rejected) = _count(acceptedBitmap, uint32(packed >> 160));
        if (qualities.length != accepted * 2) revert QualitiesLength(accepted * 2, qualities.length);
        if (rejectReasons.length != rejected) revert RejectReasonsLength(rejected, rejectReasons.length);
        reward = _reward(qualities);
        assembly ("memory-safe") {
            sstore(add(b.slot, 1), or(packed, shl(192, 1)))
        }
        _emitSettled(batchId, packed, accepted, rejected, reward, acceptedBitmap, qualities, rejectReasons);
        if (reward != 0) {
            address t = address(token);
            assembly ("memory-safe") {
                // token.mint(contributor, reward); the token is ours, so its code is there
                let m := mload(0x40)
                mstore(m, 0x40c10f1900000000000000000000000000000000000000000000000000000000)
                mstore(add(m, 0x04), and(packed, 0xffffffffffffffffffffffffffffffffffffffff))
                mstore(add(m, 0x24), reward)
                if iszero(call(gas(), t, 0, m, 0x44, 0, 0)) {
                    returndatacopy(m, 0, returndatasize())
                    revert(m, returndatasize())
                }
            }
        }
    }

    // ---------------------------------------------------------------- admin

    /// @notice Sets the reward per clip at full quality and the per-clip cap. Admin only.
    function setReward(uint256 rewardPerClip_, uint256 maxRewardPerClip_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setReward(rewardPerClip_, maxRewardPerClip_);
    }

    // ---------------------------------------------------------------- views

    function batchCount() external view returns (uint256) {
        return _batchCount;
    }

    /// @notice A batch's record; all zero (contributor == address(0)) for an id never submitted.
    function batch(uint256 batchId)
        external
        view
        returns (bytes32 root, address contributor, uint32 count, bool settled)
    {
        Batch storage b = _batches[batchId];
        return (b.root, b.contributor, b.count, b.settled);
    }

    function rewardPerClip() external view returns (uint256) {
        return _rewardPerClip;
    }

    function maxRewardPerClip() external view returns (uint256) {
        return _maxRewardPerClip;
    }

    /// @notice True when `digest` is clip number `index` of batch `batchId`, by `proof`.
    function verify(uint256 batchId, uint256 index, bytes32 digest, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        Batch storage b = _batches[batchId];
        if (index >= b.count) return false;
        return MerkleProof.verifyCalldata(proof, b.root, leafHash(index, digest));
    }

    /// @notice The leaf of clip `index` with `digest`: keccak256(abi.encodePacked(index, digest)).
    function leafHash(uint256 index, bytes32 digest) public pure returns (bytes32 h) {
        assembly ("memory-safe") {
            mstore(0x00, index)
            mstore(0x20, digest)
            h := keccak256(0x00, 0x40)
        }
    }

    /// @notice The Merkle root submitBatch would compute for `digests` (1..256 of them).
    function merkleRoot(bytes32[] calldata digests) external pure returns (bytes32) {
        uint256 n = digests.length;
        if (n == 0) revert EmptyBatch();
        if (n > MAX_BATCH) revert BatchTooLarge(n, MAX_BATCH);
        uint256 buf;
        assembly ("memory-safe") {
            buf := mload(0x40)
        }
        return _merkleRoot(digests, buf);
    }

    // ---------------------------------------------------------------- internals

    function _setReward(uint256 rewardPerClip_, uint256 maxRewardPerClip_) private {
        if (rewardPerClip_ > type(uint128).max || maxRewardPerClip_ > type(uint128).max) revert RewardTooLarge();
        _rewardPerClip = uint128(rewardPerClip_);
        _maxRewardPerClip = uint128(maxRewardPerClip_);
        emit RewardChanged(rewardPerClip_, maxRewardPerClip_);
    }

    /// Root of the 1..256 `digests`, using memory from `buf` (n/16 + 16 words, not allocated: whatever
    /// lies past the free memory pointer) and the scratch space. Node j of level k covers the aligned
    /// block of leaves [j * 2**k, (j + 1) * 2**k), so whole blocks of 16 leaves are reduced to their
    /// level-4 node on the stack; the last partial block and the levels above go level by level.
    function _merkleRoot(bytes32[] calldata digests, uint256 buf) private pure returns (bytes32 r) {
        assembly ("memory-safe") {
            function leaf(i, p) -> h {
                mstore(0x00, i)
                mstore(0x20, calldataload(p))
                h := keccak256(0x00, 0x40)
            }
            // OpenZeppelin's commutative hash: the smaller child first
            function node(a, c) -> h {
                let s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                h := keccak256(0x00, 0x40)
            }
            // reduces the `count` nodes at `at` level by level (odd last node promoted) into `at`
            function reduce(at, count) {
                for {} gt(count, 1) {} {
                    let src := at
                    let out := at
                    for { let lim := add(at, shl(6, shr(1, count))) } lt(src, lim) {} {
                        mstore(out, node(mload(src), mload(add(src, 0x20))))
                        out := add(out, 0x20)
                        src := add(src, 0x40)
                    }
                    let odd := and(count, 1)
                    if odd { mstore(out, mload(src)) }
                    count := add(shr(1, count), odd)
                }
            }
            let off := digests.offset
            let len := digests.length
            let out := buf
            let i := 0
            // Whole blocks of 16 leaves, unrolled (8 + 4 + 2 + 1 parents, kept on the stack: x holds a
            // finished level-1 node, y level 2, z level 3, until its sibling is done). Same as leaf()
            // and node() above, written out: this loop is most of submitBatch's computation.
            for { let lim := shl(4, shr(4, len)) } lt(i, lim) {} {
                let p := add(off, shl(5, i))
                let a := 0
                let c := 0
                let s := 0
                let x := 0
                let y := 0
                let z := 0
                // leaves 0, 1
                mstore(0x00, i)
                mstore(0x20, calldataload(p))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 1))
                mstore(0x20, calldataload(add(p, 0x20)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                x := a
                // leaves 2, 3
                mstore(0x00, add(i, 2))
                mstore(0x20, calldataload(add(p, 0x40)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 3))
                mstore(0x20, calldataload(add(p, 0x60)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(x, a))
                mstore(s, x)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                y := a
                // leaves 4, 5
                mstore(0x00, add(i, 4))
                mstore(0x20, calldataload(add(p, 0x80)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 5))
                mstore(0x20, calldataload(add(p, 0xa0)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                x := a
                // leaves 6, 7
                mstore(0x00, add(i, 6))
                mstore(0x20, calldataload(add(p, 0xc0)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 7))
                mstore(0x20, calldataload(add(p, 0xe0)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(x, a))
                mstore(s, x)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(y, a))
                mstore(s, y)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                z := a
                // leaves 8, 9
                mstore(0x00, add(i, 8))
                mstore(0x20, calldataload(add(p, 0x100)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 9))
                mstore(0x20, calldataload(add(p, 0x120)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                x := a
                // leaves 10, 11
                mstore(0x00, add(i, 10))
                mstore(0x20, calldataload(add(p, 0x140)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 11))
                mstore(0x20, calldataload(add(p, 0x160)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(x, a))
                mstore(s, x)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                y := a
                // leaves 12, 13
                mstore(0x00, add(i, 12))
                mstore(0x20, calldataload(add(p, 0x180)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 13))
                mstore(0x20, calldataload(add(p, 0x1a0)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                x := a
                // leaves 14, 15
                mstore(0x00, add(i, 14))
                mstore(0x20, calldataload(add(p, 0x1c0)))
                a := keccak256(0x00, 0x40)
                mstore(0x00, add(i, 15))
                mstore(0x20, calldataload(add(p, 0x1e0)))
                c := keccak256(0x00, 0x40)
                s := shl(5, gt(a, c))
                mstore(s, a)
                mstore(xor(s, 0x20), c)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(x, a))
                mstore(s, x)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(y, a))
                mstore(s, y)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                s := shl(5, gt(z, a))
                mstore(s, z)
                mstore(xor(s, 0x20), a)
                a := keccak256(0x00, 0x40)
                mstore(out, a)
                out := add(out, 0x20)
                i := add(i, 16)
            }
            let rest := and(len, 15)
            if rest {
                let q := out
                for {} lt(i, len) { i := add(i, 1) } {
                    mstore(q, leaf(i, add(off, shl(5, i))))
                    q := add(q, 0x20)
                }
                reduce(out, rest)
                out := add(out, 0x20)
            }
            reduce(buf, shr(5, sub(out, buf)))
            r := mload(buf)
        }
    }

    /// Accepted and rejected clips of a batch of `n` by its bitmap, which must have exactly
    /// ceil(n / 256) words and no bit set at or beyond n.
    function _count(uint256[] calldata acceptedBitmap, uint256 n)
        private
        pure
        returns (uint256 accepted, uint256 rejected)
    {
        unchecked {
            uint256 words = (n + 255) >> 8;
            if (acceptedBitmap.length != words) revert BadBitmap(words, acceptedBitmap.length);
            for (uint256 w; w < words; ++w) {
                uint256 x = acceptedBitmap[w];
                uint256 bitsHere = n - (w << 8); // > 0
                if (bitsHere < 256 && x >> bitsHere != 0) revert BitBeyondCount(n);
                accepted += _popcount(x);
            }
            rejected = n - accepted;
        }
    }

    /// Sum over the accepted clips' qualities q of min(rewardPerClip * q / 10000, maxRewardPerClip);
    /// reverts QualityTooHigh for a q above 10000.
    function _reward(bytes calldata qualities) private view returns (uint256 reward) {
        uint256 per = _rewardPerClip;
        uint256 cap = _maxRewardPerClip;
        uint256 bad;
        // per, cap < 2**128, q < 2**16 and at most 256 clips: nothing here can overflow.
        assembly ("memory-safe") {
            let off := qualities.offset
            let len := qualities.length
            switch and(iszero(gt(per, cap)), iszero(mod(per, 10000)))
            case 1 {
                // The cap cannot bind (q <= 10000 gives at most `per`) and per / 10000 is exact, so
                // the sum is per / 10000 * sum(q), and the 16 lanes of a calldata word add up at once.
                let sum := 0
                let end := add(off, len)
                let lanes16 := 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff
                let hi := 0x8000800080008000800080008000800080008000800080008000800080008000
                // per lane (<= 0x7fff) + 22767 sets the lane's bit 15 exactly when it is > 10000
                let k := 0x58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef58ef
                for { let p := off } lt(p, end) { p := add(p, 0x20) } {
                    let w := calldataload(p)
                    let left := sub(end, p)
                    if lt(left, 0x20) { w := and(w, not(shr(shl(3, left), not(0)))) }
                    bad := or(bad, and(or(w, add(and(w, not(hi)), k)), hi))
                    // 16 x 16-bit lanes -> 8 x 32-bit lanes, whose sum (< 2**21) the multiplication
                    // gathers in the top 32 bits
                    w := add(and(w, lanes16), and(shr(16, w), lanes16))
                    sum := add(sum, shr(224, mul(w, 0x0000000100000001000000010000000100000001000000010000000100000001)))
                }
                reward := mul(div(per, 10000), sum)
            }
            default {
                for { let i := 0 } lt(i, len) { i := add(i, 2) } {
                    let q := shr(240, calldataload(add(off, i)))
                    bad := or(bad, gt(q, 10000))
                    let r := div(mul(per, q), 10000)
                    if gt(r, cap) { r := cap }
                    reward := add(reward, r)
                }
            }
        }
        if (bad != 0) _revertQuality(qualities);
    }

    /// Reverts QualityTooHigh naming the first accepted clip (by position) whose quality is over 10000.
    function _revertQuality(bytes calldata qualities) private pure {
        for (uint256 k; 2 * k < qualities.length; ++k) {
            uint256 q = uint16(bytes2(qualities[2 * k:2 * k + 2]));
            if (q > QUALITY_SCALE) revert QualityTooHigh(k, q);
        }
    }

    /// BatchSettled, ABI-encoded by hand (the generic encoder costs more than the log itself here).
    function _emitSettled(
        uint256 batchId,
        uint256 packed,
        uint256 accepted,
        uint256 rejected,
        uint256 reward,
        uint256[] calldata acceptedBitmap,
        bytes calldata qualities,
        bytes calldata rejectReasons
    ) private {
        bytes32 topic = BatchSettled.selector;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, accepted)
            mstore(add(m, 0x20), rejected)
            mstore(add(m, 0x40), reward)
            // bitmap
            let p := add(m, 0xc0)
            mstore(add(m, 0x60), 0xc0)
            let words := acceptedBitmap.length
            mstore(p, words)
            calldatacopy(add(p, 0x20), acceptedBitmap.offset, shl(5, words))
            p := add(p, add(0x20, shl(5, words)))
            // qualities, zero-padded to whole words
            mstore(add(m, 0x80), sub(p, m))
            let len := qualities.length
            mstore(p, len)
            let padded := and(add(len, 31), not(31))
            mstore(add(add(p, 0x20), sub(padded, 0x20)), 0) // the last word's padding (len 0: the length, 0)
            calldatacopy(add(p, 0x20), qualities.offset, len)
            p := add(p, add(0x20, padded))
            // reject reasons, likewise
            mstore(add(m, 0xa0), sub(p, m))
            len := rejectReasons.length
            mstore(p, len)
            padded := and(add(len, 31), not(31))
            mstore(add(add(p, 0x20), sub(padded, 0x20)), 0)
            calldatacopy(add(p, 0x20), rejectReasons.offset, len)
            p := add(p, add(0x20, padded))
            log4(m, sub(p, m), topic, batchId, and(packed, 0xffffffffffffffffffffffffffffffffffffffff), caller())
        }
    }

    function _popcount(uint256 x) private pure returns (uint256 c) {
        if (x == type(uint256).max) return 256; // the byte sum below would wrap
        unchecked {
            x = x - ((x >> 1) & 0x5555555555555555555555555555555555555555555555555555555555555555);
            x = (x & 0x3333333333333333333333333333333333333333333333333333333333333333)
                + ((x >> 2) & 0x3333333333333333333333333333333333333333333333333333333333333333);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            c = (x * 0x0101010101010101010101010101010101010101010101010101010101010101) >> 248;
        }
    }
}
