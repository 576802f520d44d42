// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {KnackToken} from "./KnackToken.sol";

/// @title NaiveRegistry -- BENCHMARK REFERENCE ONLY, not deployed by Knack.
/// @notice The straightforward design ClipRegistry is measured against (bench/gas.py,
/// storage/contracts/gas.py): one transaction per clip, which stores the clip's digest in a mapping
/// and mints that clip's reward right away. Same reward rule and token as ClipRegistry.
contract NaiveRegistry {
    KnackToken public immutable token;
    address public immutable validator;
    uint256 public immutable rewardPerClip;
    uint256 public immutable maxRewardPerClip;

    /// digest => contributor; a digest is rewarded once.
    mapping(bytes32 digest => address contributor) public contributorOf;

    event ClipRecorded(bytes32 indexed digest, address indexed contributor, uint256 quality, uint256 reward);

    error NotValidator(address caller);
    error AlreadyRecorded(bytes32 digest);
    error QualityTooHigh(uint256 quality);

    constructor(address validator_, uint256 rewardPerClip_, uint256 maxRewardPerClip_) {
        token = new KnackToken(address(this));
        validator = validator_;
        rewardPerClip = rewardPerClip_;
        maxRewardPerClip = maxRewardPerClip_;
    }

    /// @notice Records one accepted clip of `contributor` and mints its reward. Validator only.
    function recordClip(address contributor, bytes32 digest, uint256 quality) external {
        if (msg.sender != validator) revert NotValidator(msg.sender);
        if (quality > 10_000) revert QualityTooHigh(quality);
        if (contributorOf[digest] != address(0)) revert AlreadyRecorded(digest);
        contributorOf[digest] = contributor;
        uint256 reward = rewardPerClip * quality / 10_000;
        if (reward > maxRewardPerClip) reward = maxRewardPerClip;
        emit ClipRecorded(digest, contributor, quality, reward);
        token.mint(contributor, reward);
    }
}
