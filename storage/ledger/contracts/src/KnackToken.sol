// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Knack Reward (KNACK)
/// @notice The reward token. It has exactly one minter, fixed at deployment: the ClipRegistry that
/// deploys it in its own constructor. Nobody else, the registry's admin included, can mint.
contract KnackToken is ERC20 {
    /// @notice The only address allowed to mint (the ClipRegistry).
    address public immutable minter;

    /// @notice `caller` tried to mint and is not the minter.
    error NotMinter(address caller);

    constructor(address minter_) ERC20("Knack Reward", "KNACK") {
        minter = minter_;
    }

    /// @notice Mints `amount` (18 decimals) to `to`. Only the minter.
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        _mint(to, amount);
    }
}
