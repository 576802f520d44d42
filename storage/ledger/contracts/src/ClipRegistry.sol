// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {KnackToken} from "./KnackToken.sol";

/// @title ClipRegistry
/// @notice Devices registered to contributors submit batches of clip CIDs (their 32-byte sha2-256
/// digests); the contract computes each batch's Merkle root from the calldata and keeps the root for
/// good, and the device and the count until the batch is settled (two storage slots while pending, one
/// after). The digests themselves live in the BatchSubmitted event. A validator settles a batch once: a
/// bitmap of accepted clips, one quality (basis points) per accepted clip and one reason code per
/// rejected clip; the batch's reward is minted once to the contributor the device is registered to, and
/// rejections whose reason is in the strike mask count against the device, which is blocked from
/// submitting when its strikes reach the limit.
///
/// A device is registered to a contributor when both sign the same EIP-712 `RegisterDevice` (domain
/// "Knack", "1", this chain, this registry): the contributor's signature says whom to pay, the device's
/// that nobody can claim another's device key. Anyone may relay the registration.
///
/// Merkle tree (mirrored by storage/ledger/contracts/merkle.py):
///   leaf_i  = keccak256(abi.encodePacked(uint256(i), digest_i))
///   parent  = keccak256 of the two children in ascending order (OpenZeppelin's commutative hash,
///             so MerkleProof.verify works)
///   an odd node at the end of a level is promoted unchanged to the next level.
contract ClipRegistry is AccessControl, EIP712, Nonces {
    bytes32 public constant VALIDATOR_ROLE = keccak256("VALIDATOR_ROLE");
    bytes32 public constant REGISTER_DEVICE_TYPEHASH =
        keccak256("RegisterDevice(address device,address contributor,uint256 nonce,uint256 deadline)");
    /// @notice Most clips in one batch.
    uint256 public constant MAX_BATCH = 256;
    /// @notice Quality scale: 10000 basis points = full reward.
    uint256 public constant QUALITY_SCALE = 10_000;

    /// @notice A device's status (bits 160..161 of its record).
    uint8 public constant STATUS_NONE = 0;
    uint8 public constant STATUS_ACTIVE = 1;
    uint8 public constant STATUS_REVOKED = 2;

    // A device's record, one slot: contributor (bits 0..159) | status (160..161) | blocked (162) |
    // strikes (163..194, uint32) | strike window start (195..234, uint40 timestamp). Never deleted: a
    // revoked key stays revoked, and its batches still pay its contributor.
    uint256 private constant ADDRESS_MASK = 0x00ffffffffffffffffffffffffffffffffffffffff;
    uint256 private constant STATUS_SHIFT = 160;
    uint256 private constant BLOCKED = 1 << 162;
    uint256 private constant STRIKES_SHIFT = 163;
    uint256 private constant WINDOW_SHIFT = 195;
    uint256 private constant STRIKES_AND_WINDOW = ((1 << 72) - 1) << STRIKES_SHIFT;

    /// @notice The reward token; this contract is its only minter.
    KnackToken public immutable token;

    /// Two slots: root, kept for good (verify); then device (bits 0..159) | count (160..191), deleted when
    /// the batch is settled (what settling needs; afterwards the events say it). Settled = a root and no device.
    struct Batch {
        bytes32 root;
        address device;
        uint32 count;
    }

    uint128 private _rewardPerClip;
    uint128 private _maxRewardPerClip;
    uint256 private _batchCount;
    mapping(uint256 batchId => Batch) private _batches;
    mapping(address device => uint256 record) private _devices;
    /// maxStrikes (bits 0..31) | window in seconds (32..71); then the mask: bit r = reason r strikes.
    uint256 private _strikeRules;
    uint256 private _strikeMask;
    bytes32 private _policyDigest;

    event BatchSubmitted(
        uint256 indexed batchId, address indexed device, address indexed contributor, bytes32 root, bytes32[] digests
    );
    event BatchSettled(
        uint256 indexed batchId,
        address indexed contributor,
        address indexed device,
        address validator,
        uint256 reward,
        uint256[] acceptedBitmap,
        bytes qualities,
        bytes rejectReasons
    );
    event RewardChanged(uint256 rewardPerClip, uint256 maxRewardPerClip);
    event DeviceRegistered(address indexed device, address indexed contributor);
    event DeviceRevoked(address indexed device, address indexed contributor);
    /// `added` strikes for batch `batchId`, `strikes` in the device's current window.
    event StrikesRecorded(address indexed device, uint256 indexed batchId, uint256 added, uint256 strikes);
    event DeviceBlocked(address indexed device, address indexed contributor, uint256 strikes);
    event StrikesCleared(address indexed device, address indexed by);
    event StrikeRulesChanged(uint256 maxStrikes, uint256 window, uint256 reasonMask);
    event PolicyChanged(bytes32 digest);

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
    /// A device or contributor of address zero.
    error ZeroAddress();
    /// The registration's deadline (a unix time) has passed.
    error RegistrationExpired(uint256 deadline);
    /// The contributor's signature is not theirs over this registration (or its nonce was used).
    error BadContributorSignature(address contributor);
    /// The device's signature is not its own over this registration.
    error BadDeviceSignature(address device);
    error DeviceAlreadyRegistered(address device, address contributor);
    error UnregisteredDevice(address device);
    error RevokedDevice(address device);
    error BlockedDevice(address device);
    /// Only the device's contributor may do this.
    error NotContributor(address device, address caller);

    constructor(
        address admin,
        address validator,
        uint256 rewardPerClip_,
        uint256 maxRewardPerClip_,
        bytes32 policyDigest_,
        uint32 maxStrikes,
        uint40 strikeWindow,
        uint256 strikeMask
    ) EIP712("Knack", "1") {
        if (admin == address(0)) revert ZeroAdmin();
        token = new KnackToken(address(this));
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (validator != address(0)) _grantRole(VALIDATOR_ROLE, validator);
        _setReward(rewardPerClip_, maxRewardPerClip_);
        _setPolicy(policyDigest_);
        _setStrikeRules(maxStrikes, strikeWindow, strikeMask);
    }

    // ---------------------------------------------------------------- devices

    /// @notice Registers `device` to `contributor`: both sign the EIP-712 struct
    /// RegisterDevice(device, contributor, nonces(contributor), deadline) in this registry's domain.
    /// Anyone may send it. A device key is registered once: a revoked key cannot come back.
    function registerDevice(
        address device,
        address contributor,
        uint256 deadline,
        bytes calldata contributorSignature,
        bytes calldata deviceSignature
    ) external {
        if (device == address(0) || contributor == address(0)) revert ZeroAddress();
        if (block.timestamp > deadline) revert RegistrationExpired(deadline);
        uint256 record = _devices[device];
        if (record != 0) {
            if (_status(record) == STATUS_REVOKED) revert RevokedDevice(device);
            revert DeviceAlreadyRegistered(device, address(uint160(record)));
        }
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(REGISTER_DEVICE_TYPEHASH, device, contributor, _useNonce(contributor), deadline))
        );
        (address signer,,) = ECDSA.tryRecoverCalldata(digest, contributorSignature);
        if (signer != contributor) revert BadContributorSignature(contributor);
        (signer,,) = ECDSA.tryRecoverCalldata(digest, deviceSignature);
        if (signer != device) revert BadDeviceSignature(device);
        _devices[device] = uint256(uint160(contributor)) | (uint256(STATUS_ACTIVE) << STATUS_SHIFT);
        emit DeviceRegistered(device, contributor);
    }

    /// @notice Revokes `device` for good: it can no longer submit, nor be registered again. Its
    /// contributor only; batches it submitted before still settle and pay.
    function revokeDevice(address device) external {
        uint256 record = _devices[device];
        if (record == 0) revert UnregisteredDevice(device);
        if (address(uint160(record)) != msg.sender) revert NotContributor(device, msg.sender);
        if (_status(record) == STATUS_REVOKED) revert RevokedDevice(device);
        _devices[device] = (record & ~(uint256(3) << STATUS_SHIFT)) | (uint256(STATUS_REVOKED) << STATUS_SHIFT);
        emit DeviceRevoked(device, address(uint160(record)));
    }

    /// @notice Resets `device`'s strikes and unblocks it. Its contributor or an admin.
    function clearStrikes(address device) external {
        uint256 record = _devices[device];
        if (record == 0) revert UnregisteredDevice(device);
        if (address(uint160(record)) != msg.sender && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotContributor(device, msg.sender);
        }
        _devices[device] = record & ~(BLOCKED | STRIKES_AND_WINDOW);
        emit StrikesCleared(device, msg.sender);
    }

    /// @notice Submits a batch of 1..256 clip digests (sha2-256 of each clip's CID). The sender is the
    /// device: registered, not revoked, not blocked.
    /// @return batchId The new batch's id (0, 1, 2, ...).
    function submitBatch(bytes32[] calldata digests) external returns (uint256 batchId) {
        uint256 record = _devices[msg.sender];
        // status ACTIVE (1) and not blocked: bits 160..162 are exactly 001
        if ((record >> STATUS_SHIFT) & 7 != STATUS_ACTIVE) _refuseDevice(msg.sender, record);
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
            // device | count << 160: the packed slot in one store
            sstore(add(b.slot, 1), or(caller(), shl(160, n)))
            mstore(m, root)
            mstore(add(m, 0x20), 0x40)
            mstore(add(m, 0x40), n)
            calldatacopy(add(m, 0x60), digests.offset, shl(5, n))
            log4(m, add(0x60, shl(5, n)), topic, batchId, caller(), and(record, ADDRESS_MASK))
        }
    }

    // ---------------------------------------------------------------- validators

    /// @notice Settles a submitted batch once: bit i of `acceptedBitmap` (word i / 256, bit i % 256)
    /// set = clip i accepted; `qualities` = one big-endian uint16 (0..10000 basis points) per accepted
    /// clip in index order; `rejectReasons` = one uint8 per rejected clip in index order.
    /// Each accepted clip earns min(rewardPerClip * quality / 10000, maxRewardPerClip); the sum is
    /// minted once to the contributor of the batch's device. Each rejected clip whose reason r has bit r
    /// set in the strike mask is a strike against the device.
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
        if (packed == 0) _refuseBatch(batchId, b); // the device is never address(0)
        (uint256 accepted, uint256 rejected) = _count(acceptedBitmap, uint32(packed >> 160));
        if (qualities.length != accepted * 2) revert QualitiesLength(accepted * 2, qualities.length);
        if (rejectReasons.length != rejected) revert RejectReasonsLength(rejected, rejectReasons.length);
        reward = _reward(qualities);
        assembly ("memory-safe") {
            sstore(add(b.slot, 1), 0) // settled; deleting the slot is refunded more than the store costs
        }
        address device = address(uint160(packed));
        uint256 record = _devices[device];
        if (rejected != 0) _strike(batchId, device, record, rejectReasons);
        _emitSettled(batchId, record, packed, reward, acceptedBitmap, qualities, rejectReasons);
        if (reward != 0) {
            address t = address(token);
            assembly ("memory-safe") {
                // token.mint(contributor, reward); the token is ours, so its code is there
                let m := mload(0x40)
                mstore(m, 0x40c10f1900000000000000000000000000000000000000000000000000000000)
                mstore(add(m, 0x04), and(record, ADDRESS_MASK))
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

    /// @notice Sets the network's policy digest (the labeler model and policy validators must run). Admin only.
    function setPolicy(bytes32 digest) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setPolicy(digest);
    }

    /// @notice A device is blocked when its strikes within one window of `window` seconds reach
    /// `maxStrikes` (0: never); a rejection with reason r is a strike when bit r of `reasonMask` is set.
    /// Admin only.
    function setStrikeRules(uint32 maxStrikes, uint40 window, uint256 reasonMask)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _setStrikeRules(maxStrikes, window, reasonMask);
    }

    // ---------------------------------------------------------------- views

    function batchCount() external view returns (uint256) {
        return _batchCount;
    }

    /// @notice A batch's record: device and count while it is pending (zero once settled: see its events);
    /// all zero for an id never submitted.
    function batch(uint256 batchId) external view returns (bytes32 root, address device, uint32 count, bool settled) {
        Batch storage b = _batches[batchId];
        (root, device, count) = (b.root, b.device, b.count);
        settled = root != 0 && device == address(0);
    }

    /// @notice A device's record; status STATUS_NONE (and the rest zero) for a key never registered.
    function deviceRecord(address device)
        external
        view
        returns (address contributor, uint8 status, bool blocked, uint32 strikes, uint40 windowStart)
    {
        uint256 record = _devices[device];
        return (
            address(uint160(record)),
            _status(record),
            record & BLOCKED != 0,
            uint32(record >> STRIKES_SHIFT),
            uint40(record >> WINDOW_SHIFT)
        );
    }

    function rewardPerClip() external view returns (uint256) {
        return _rewardPerClip;
    }

    function maxRewardPerClip() external view returns (uint256) {
        return _maxRewardPerClip;
    }

    /// @notice The digest of the labeler model and policy that validators run for this network.
    function policyDigest() external view returns (bytes32) {
        return _policyDigest;
    }

    function strikeRules() external view returns (uint32 maxStrikes, uint40 window, uint256 reasonMask) {
        uint256 rules = _strikeRules;
        return (uint32(rules), uint40(rules >> 32), _strikeMask);
    }

    /// @notice The EIP-712 domain separator ("Knack", "1", this chain, this registry).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice True when `digest` is clip number `index` of batch `batchId`, by `proof`.
    /// The index bound is what keeps an inner node from passing as a leaf (its first half as `index`):
    /// the batch's count while it is pending, MAX_BATCH once settled (an inner node's first 32 bytes are a
    /// hash, below 256 with odds of 2**-248).
    function verify(uint256 batchId, uint256 index, bytes32 digest, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        Batch storage b = _batches[batchId];
        bytes32 root = b.root;
        if (root == 0) return false;
        uint256 count = b.count;
        if (index >= (count == 0 ? MAX_BATCH : count)) return false;
        return MerkleProof.verifyCalldata(proof, root, leafHash(index, digest));
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

    function _setPolicy(bytes32 digest) private {
        _policyDigest = digest;
        emit PolicyChanged(digest);
    }

    function _setStrikeRules(uint32 maxStrikes, uint40 window, uint256 reasonMask) private {
        _strikeRules = uint256(maxStrikes) | (uint256(window) << 32);
        _strikeMask = reasonMask;
        emit StrikeRulesChanged(maxStrikes, window, reasonMask);
    }

    function _status(uint256 record) private pure returns (uint8) {
        return uint8((record >> STATUS_SHIFT) & 3);
    }

    /// Reverts with why batch `batchId` (no device in its record) cannot be settled.
    function _refuseBatch(uint256 batchId, Batch storage b) private view {
        if (b.root == 0) revert UnknownBatch(batchId);
        revert AlreadySettled(batchId);
    }

    /// Reverts with why `device` (whose record is not active-and-unblocked) may not submit.
    function _refuseDevice(address device, uint256 record) private pure {
        uint8 status = _status(record);
        if (status == STATUS_NONE) revert UnregisteredDevice(device);
        if (status == STATUS_REVOKED) revert RevokedDevice(device);
        revert BlockedDevice(device);
    }

    /// Counts the rejections whose reason is in the strike mask against `device` (record `record`):
    /// strikes accumulate within a window that starts at the first strike after the last one ended,
    /// and the device is blocked when they reach maxStrikes. Writes the record only when they change.
    function _strike(uint256 batchId, address device, uint256 record, bytes calldata rejectReasons) private {
        uint256 mask = _strikeMask;
        if (mask == 0) return;
        uint256 added;
        assembly ("memory-safe") {
            let off := rejectReasons.offset
            for { let i := 0 } lt(i, rejectReasons.length) { i := add(i, 1) } {
                added := add(added, and(shr(byte(0, calldataload(add(off, i))), mask), 1))
            }
        }
        if (added == 0) return;
        uint256 rules = _strikeRules;
        uint256 start = uint40(record >> WINDOW_SHIFT);
        uint256 strikes = uint32(record >> STRIKES_SHIFT);
        if (block.timestamp >= start + uint40(rules >> 32)) {
            (strikes, start) = (0, block.timestamp);
        }
        strikes += added;
        if (strikes > type(uint32).max) strikes = type(uint32).max;
        uint256 maxStrikes = uint32(rules);
        bool blocks = maxStrikes != 0 && strikes >= maxStrikes && record & BLOCKED == 0;
        record = (record & ~STRIKES_AND_WINDOW) | (strikes << STRIKES_SHIFT) | (start << WINDOW_SHIFT);
        if (blocks) record |= BLOCKED;
        _devices[device] = record;
        emit StrikesRecorded(device, batchId, added, strikes);
        if (blocks) emit DeviceBlocked(device, address(uint160(record)), strikes);
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
        uint256 record,
        uint256 packed,
        uint256 reward,
        uint256[] calldata acceptedBitmap,
        bytes calldata qualities,
        bytes calldata rejectReasons
    ) private {
        bytes32 topic = BatchSettled.selector;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, caller())
            mstore(add(m, 0x20), reward)
            // bitmap
            let p := add(m, 0xa0)
            mstore(add(m, 0x40), 0xa0)
            let words := acceptedBitmap.length
            mstore(p, words)
            calldatacopy(add(p, 0x20), acceptedBitmap.offset, shl(5, words))
            p := add(p, add(0x20, shl(5, words)))
            // qualities, zero-padded to whole words
            mstore(add(m, 0x60), sub(p, m))
            let len := qualities.length
            mstore(p, len)
            let padded := and(add(len, 31), not(31))
            mstore(add(add(p, 0x20), sub(padded, 0x20)), 0) // the last word's padding (len 0: the length, 0)
            calldatacopy(add(p, 0x20), qualities.offset, len)
            p := add(p, add(0x20, padded))
            // reject reasons, likewise
            mstore(add(m, 0x80), sub(p, m))
            len := rejectReasons.length
            mstore(p, len)
            padded := and(add(len, 31), not(31))
            mstore(add(add(p, 0x20), sub(padded, 0x20)), 0)
            calldatacopy(add(p, 0x20), rejectReasons.offset, len)
            p := add(p, add(0x20, padded))
            log4(m, sub(p, m), topic, batchId, and(record, ADDRESS_MASK), and(packed, ADDRESS_MASK))
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
