//! The scheme's Solidity types in one `sol!` block, so the EIP-712 structs and the escrow's
//! ABI share one `ChannelConfig` type. Field order is part of every type hash and selector.

use alloy_sol_types::sol;

sol! {
    #![sol(all_derives)]

    /// A channel's immutable parameters; its EIP-712 digest is the channel id.
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// The cumulative ceiling the payer authorizer signs for each request.
    struct Voucher {
        bytes32 channelId;
        uint128 maxClaimableAmount;
    }

    /// One row of a claim batch, as the receiver authorizer signs it.
    struct ClaimEntry {
        bytes32 channelId;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
    }

    /// What the receiver authorizer signs for `claimWithSignature`: any account may then send
    /// the claim (the authorizer key needs no gas, and no nonce of its own).
    struct ClaimBatch {
        ClaimEntry[] claims;
    }

    /// ERC-3009's receive authorization, signed by the payer over the token's domain.
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    /// The x402BatchSettlement surface the gateway uses. `ClaimVoucher` is the contract's
    /// `Voucher` struct, renamed here only to keep the EIP-712 `Voucher` above: struct names
    /// are not part of ABI selectors.
    interface IX402BatchSettlement {
        struct ClaimVoucher { ChannelConfig channel; uint128 maxClaimableAmount; }
        struct VoucherClaim { ClaimVoucher voucher; bytes signature; uint128 totalClaimed; }

        function deposit(ChannelConfig config, uint128 amount, address collector, bytes collectorData) external;
        function claim(VoucherClaim[] voucherClaims) external;
        function claimWithSignature(VoucherClaim[] voucherClaims, bytes authorizerSignature) external;
        function getClaimBatchDigest(VoucherClaim[] voucherClaims) external view returns (bytes32);
        function settle(address receiver, address token) external;
        function multicall(bytes[] data) external returns (bytes[] results);
        function channels(bytes32 channelId) external view returns (uint128 balance, uint128 totalClaimed);
        function pendingWithdrawals(bytes32 channelId) external view returns (uint128 amount, uint40 initiatedAt);
        function refundNonce(bytes32 channelId) external view returns (uint256);

        event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
        event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
        event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
        event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed);
        event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
        event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount);
        event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
        event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount);
    }
}
