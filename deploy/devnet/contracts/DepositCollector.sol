// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice What the batch-settlement escrow calls to pull a deposit (same ABI as the official
/// `IDepositCollector`): the collector must leave exactly `amount` of `token` with the caller.
interface IDepositCollector {
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external;
}

/// @notice The ERC-3009 entry point the collector uses: FiatToken v2.2's bytes-signature
/// `receiveWithAuthorization` (selector 0x88b7ab63).
interface IERC3009Receive {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}

/// @title ERC3009DepositCollector: the batch-settlement ERC-3009 deposit collector, for the dev chain.
/// @notice DEV CHAIN ONLY. This project's own implementation, ABI-compatible with the official
/// `ERC3009DepositCollector` at 0x4020806089470a89826cB9fB1f4059150b550004. The payer signs an
/// ERC-3009 `ReceiveWithAuthorization` to this address with
/// `nonce = keccak256(abi.encode(channelId, salt))`; the escrow's `deposit` calls `collect`,
/// which pulls the tokens here with `receiveWithAuthorization` (ERC-3009 requires
/// `msg.sender == to`) and forwards them to the escrow.
/// @dev Placed with `anvil_setCode`, so no constructor runs: the escrow address the official
/// contract keeps in an immutable set by its constructor is a constant here (the canonical
/// escrow address), and nothing is stored.
contract ERC3009DepositCollector is IDepositCollector {
    /// @notice The escrow allowed to call `collect` (the official contract's getter, same selector).
    address public constant x402BatchSettlement = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;

    error OnlyX402BatchSettlement();
    error SafeERC20FailedOperation(address token);

    /// @param collectorData `abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`.
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        if (msg.sender != x402BatchSettlement) revert OnlyX402BatchSettlement();
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        IERC3009Receive(token).receiveWithAuthorization(
            payer, address(this), amount, validAfter, validBefore, keccak256(abi.encode(channelId, salt)), signature
        );
        (bool ok, bytes memory ret) =
            token.call(abi.encodeWithSignature("transfer(address,uint256)", x402BatchSettlement, amount));
        if (!ok || (ret.length == 0 ? token.code.length == 0 : !abi.decode(ret, (bool)))) {
            revert SafeERC20FailedOperation(token);
        }
    }
}
