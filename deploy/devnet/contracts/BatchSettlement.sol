// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IDepositCollector} from "./DepositCollector.sol";

/// @title BatchSettlement: the escrow of the x402 `batch-settlement` scheme, for the dev chain.
/// @notice DEV CHAIN ONLY. This project's own implementation, written from the scheme's
/// specification. It is ABI-compatible with the official `x402BatchSettlement` contract
/// (same function selectors, struct encodings, events, errors, EIP-712 domain and types), so
/// the official x402 EVM client package and the gateway use it exactly as the real one at
/// 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003 on Base.
///
/// Channels are unidirectional: a payer escrows tokens (through a deposit collector), signs
/// cumulative vouchers off-chain, and the receiver side claims the latest voucher's amount;
/// claimed funds are swept to the receiver by `settle`. The payer can leave through a timed
/// withdrawal (`initiateWithdraw`, then `finalizeWithdraw` after the channel's withdrawDelay)
/// and the receiver side can refund cooperatively at any time.
///
/// @dev The code is placed with `anvil_setCode` at the canonical address, so no constructor
/// runs: there are no immutables and no storage written at construction. The EIP-712 name
/// and version are constants and the domain separator is derived at each call from
/// `block.chainid` and `address(this)` (== the canonical address once placed there).
/// The reentrancy guard lives in transient storage (EIP-1153, cancun), needing no set-up.
/// The storage layout mirrors the official contract's (slots 0 and 1 are OpenZeppelin
/// EIP712's unused name/version fallbacks there, reserved here): channels = 2,
/// refundNonce = 3, pendingWithdrawals = 4, receivers = 5.
contract BatchSettlement {
    // ---------------------------------------------------------------- structs

    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
    }

    struct WithdrawalState {
        uint128 amount;
        uint40 initiatedAt;
    }

    struct ReceiverState {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// @dev `totalClaimed` is the cumulative amount claimed for the channel after this row,
    /// not a delta, so replaying a row that was already applied changes nothing.
    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    // -------------------------------------------------------------- constants

    uint40 public constant MIN_WITHDRAW_DELAY = 900; // 15 minutes
    uint40 public constant MAX_WITHDRAW_DELAY = 2_592_000; // 30 days

    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
    );
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    string private constant DOMAIN_NAME = "x402 Batch Settlement";
    string private constant DOMAIN_VERSION = "1";
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant HASHED_NAME = keccak256(bytes(DOMAIN_NAME));
    bytes32 private constant HASHED_VERSION = keccak256(bytes(DOMAIN_VERSION));

    /// @dev ERC-1271 `isValidSignature(bytes32,bytes)` magic value.
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;
    /// @dev Upper bound of a canonical (low) ECDSA `s` (secp256k1n / 2).
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    /// @dev Transient-storage slot of the reentrancy guard (OpenZeppelin's ReentrancyGuardTransient slot).
    bytes32 private constant REENTRANCY_SLOT = 0x9b779b17422d0df92223018b32b4d1fa46e071723d6817e2486d003becc55f00;

    // ---------------------------------------------------------------- storage

    uint256 private _reservedSlot0;
    uint256 private _reservedSlot1;
    mapping(bytes32 channelId => ChannelState) public channels;
    mapping(bytes32 channelId => uint256) public refundNonce;
    mapping(bytes32 channelId => WithdrawalState) public pendingWithdrawals;
    mapping(address receiver => mapping(address token => ReceiverState)) public receivers;

    // ----------------------------------------------------------------- events

    event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
    event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
    event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
    event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed);
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount);
    event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
    event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount);
    /// @dev ERC-5267: the EIP-712 domain never changes (it is derived, not stored).
    event EIP712DomainChanged();

    // ----------------------------------------------------------------- errors

    error InvalidChannel();
    error ZeroDeposit();
    error DepositOverflow();
    error InvalidSignature();
    error NotReceiverAuthorizer();
    error NotAuthorizedToClaim();
    error NotAuthorizedToRefund();
    error ClaimExceedsCeiling();
    error ClaimExceedsBalance();
    error WithdrawalAlreadyPending();
    error WithdrawalNotPending();
    error NotAuthorizedToFinalizeWithdraw();
    error WithdrawDelayNotElapsed();
    error NothingToWithdraw();
    error WithdrawAmountExceedsAvailable();
    error WithdrawDelayOutOfRange();
    error EmptyBatch();
    error DepositCollectionFailed();
    error InvalidCollector();
    error InvalidRefundNonce();
    error ZeroRefund();
    // The errors the official contract inherits from its OpenZeppelin bases, same selectors.
    error ReentrancyGuardReentrantCall();
    error SafeERC20FailedOperation(address token);
    error ECDSAInvalidSignature();
    error ECDSAInvalidSignatureLength(uint256 length);
    error ECDSAInvalidSignatureS(bytes32 s);
    error FailedCall();

    modifier nonReentrant() {
        bytes32 slot = REENTRANCY_SLOT;
        uint256 entered;
        assembly {
            entered := tload(slot)
        }
        if (entered != 0) revert ReentrancyGuardReentrantCall();
        assembly {
            tstore(slot, 1)
        }
        _;
        assembly {
            tstore(slot, 0)
        }
    }

    // --------------------------------------------------------------- deposits

    /// @notice Escrows `amount` of `config.token` for the channel of `config`, pulled from the
    /// payer by `collector` (which must hand exactly `amount` to this contract). Anyone may call.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        if (
            config.payer == address(0) || config.receiver == address(0) || config.receiverAuthorizer == address(0)
                || config.token == address(0)
        ) revert InvalidChannel();
        if (config.withdrawDelay < MIN_WITHDRAW_DELAY || config.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert WithdrawDelayOutOfRange();
        }
        if (amount == 0) revert ZeroDeposit();
        if (collector == address(0)) revert InvalidCollector();

        bytes32 channelId = getChannelId(config);
        ChannelState storage ch = channels[channelId];
        if (amount > type(uint128).max - ch.balance) revert DepositOverflow();
        uint128 newBalance = ch.balance + amount;
        ch.balance = newBalance;

        uint256 before = _balanceOfThis(config.token);
        IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        if (_balanceOfThis(config.token) != before + amount) revert DepositCollectionFailed();

        if (newBalance == amount && ch.totalClaimed == 0) emit ChannelCreated(channelId, config);
        emit Deposited(channelId, msg.sender, amount, newBalance);
    }

    // ---------------------------------------------------------- claim, settle

    /// @notice Applies voucher claims; the caller must be the receiver or the receiverAuthorizer
    /// of every row's channel. A row at or below the channel's recorded total is skipped.
    function claim(VoucherClaim[] calldata voucherClaims) external nonReentrant {
        uint256 n = voucherClaims.length;
        if (n == 0) revert EmptyBatch();
        for (uint256 i = 0; i < n; ++i) {
            ChannelConfig calldata c = voucherClaims[i].voucher.channel;
            if (msg.sender != c.receiverAuthorizer && msg.sender != c.receiver) revert NotAuthorizedToClaim();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Applies voucher claims authorized by the receiverAuthorizer's EIP-712 ClaimBatch
    /// signature; anyone may relay it. Every row must share row 0's receiverAuthorizer.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature)
        external
        nonReentrant
    {
        uint256 n = voucherClaims.length;
        if (n == 0) revert EmptyBatch();
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        if (!_isValidSignatureNow(authorizer, getClaimBatchDigest(voucherClaims), authorizerSignature)) {
            revert InvalidSignature();
        }
        for (uint256 i = 0; i < n; ++i) {
            if (voucherClaims[i].voucher.channel.receiverAuthorizer != authorizer) revert NotReceiverAuthorizer();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Pays `receiver` everything claimed for it in `token` and not yet paid out.
    /// Anyone may call; nothing happens when there is nothing to pay.
    function settle(address receiver, address token) external nonReentrant {
        ReceiverState storage rs = receivers[receiver][token];
        uint128 amount = rs.totalClaimed - rs.totalSettled;
        if (amount == 0) return;
        rs.totalSettled = rs.totalClaimed;
        _safeTransfer(token, receiver, amount);
        emit Settled(receiver, token, msg.sender, amount);
    }

    // ------------------------------------------------------------- withdrawal

    /// @notice The payer (or its payerAuthorizer) asks for `amount` of the unclaimed escrow
    /// back; it can be finalized `withdrawDelay` seconds later. One pending at a time.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) revert InvalidChannel();
        if (amount == 0) revert NothingToWithdraw();
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage ws = pendingWithdrawals[channelId];
        if (ws.initiatedAt != 0) revert WithdrawalAlreadyPending();
        ChannelState storage ch = channels[channelId];
        if (amount > ch.balance - ch.totalClaimed) revert WithdrawAmountExceedsAvailable();
        uint40 now40 = uint40(block.timestamp);
        ws.amount = amount;
        ws.initiatedAt = now40;
        emit WithdrawInitiated(channelId, amount, now40 + config.withdrawDelay);
    }

    /// @notice Pays the pending withdrawal to the payer once the delay has passed, capped at
    /// what is unclaimed now (claims made during the delay take precedence).
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) {
            revert NotAuthorizedToFinalizeWithdraw();
        }
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage ws = pendingWithdrawals[channelId];
        uint40 initiatedAt = ws.initiatedAt;
        if (initiatedAt == 0) revert WithdrawalNotPending();
        if (block.timestamp < uint256(initiatedAt) + uint256(config.withdrawDelay)) revert WithdrawDelayNotElapsed();

        ChannelState storage ch = channels[channelId];
        uint128 available = ch.balance - ch.totalClaimed;
        uint128 amount = ws.amount < available ? ws.amount : available;
        ws.amount = 0;
        ws.initiatedAt = 0;
        ch.balance -= amount;

        emit WithdrawFinalized(channelId, msg.sender, amount);
        if (ch.balance == 0 && ch.totalClaimed == 0) emit ChannelClosed(channelId, config);
        if (amount > 0) _safeTransfer(config.token, config.payer, amount);
    }

    // ---------------------------------------------------------------- refunds

    /// @notice Cooperative refund by the receiver side, capped at the unclaimed escrow.
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.receiverAuthorizer && msg.sender != config.receiver) revert NotAuthorizedToRefund();
        _refund(config, amount);
    }

    /// @notice Cooperative refund relayed by anyone with the receiverAuthorizer's EIP-712
    /// Refund signature for the channel's current refund nonce.
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external nonReentrant {
        bytes32 channelId = getChannelId(config);
        if (nonce != refundNonce[channelId]) revert InvalidRefundNonce();
        if (
            !_isValidSignatureNow(
                config.receiverAuthorizer, getRefundDigest(channelId, nonce, amount), receiverAuthorizerSignature
            )
        ) revert InvalidSignature();
        _refund(config, amount);
    }

    // -------------------------------------------------------------- multicall

    /// @notice Runs each call on this contract in order (delegatecall, so msg.sender is kept);
    /// any failure reverts the whole transaction with that call's revert data.
    function multicall(bytes[] calldata data) external returns (bytes[] memory results) {
        results = new bytes[](data.length);
        for (uint256 i = 0; i < data.length; ++i) {
            (bool ok, bytes memory ret) = address(this).delegatecall(data[i]);
            if (!ok) {
                if (ret.length == 0) revert FailedCall();
                assembly {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
            results[i] = ret;
        }
    }

    // ------------------------------------------------------------------ views

    /// @notice The channel id: the EIP-712 digest of `config` under this contract's domain.
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        return _hashTypedData(
            keccak256(
                abi.encode(
                    CHANNEL_CONFIG_TYPEHASH,
                    config.payer,
                    config.payerAuthorizer,
                    config.receiver,
                    config.receiverAuthorizer,
                    config.token,
                    config.withdrawDelay,
                    config.salt
                )
            )
        );
    }

    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTypedData(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTypedData(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @notice The EIP-712 ClaimBatch digest (standard array encoding: keccak of the
    /// concatenated ClaimEntry struct hashes; keccak256("") for an empty batch).
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) public view returns (bytes32) {
        uint256 n = voucherClaims.length;
        bytes32[] memory entries = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            entries[i] = keccak256(
                abi.encode(
                    CLAIM_ENTRY_TYPEHASH,
                    getChannelId(voucherClaims[i].voucher.channel),
                    voucherClaims[i].voucher.maxClaimableAmount,
                    voucherClaims[i].totalClaimed
                )
            );
        }
        return _hashTypedData(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entries)))));
    }

    /// @notice ERC-5267 description of the EIP-712 domain (name, version, chainId, verifyingContract).
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", DOMAIN_NAME, DOMAIN_VERSION, block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    // --------------------------------------------------------------- internal

    function _applyClaim(VoucherClaim calldata vc) internal {
        ChannelConfig calldata c = vc.voucher.channel;
        bytes32 channelId = getChannelId(c);
        ChannelState storage ch = channels[channelId];
        uint128 newTotal = vc.totalClaimed;
        uint128 oldTotal = ch.totalClaimed;
        if (newTotal <= oldTotal) return;
        if (newTotal > vc.voucher.maxClaimableAmount) revert ClaimExceedsCeiling();
        if (newTotal > ch.balance) revert ClaimExceedsBalance();

        bytes32 digest = getVoucherDigest(channelId, vc.voucher.maxClaimableAmount);
        if (c.payerAuthorizer != address(0)) {
            if (_recoverStrict(digest, vc.signature) != c.payerAuthorizer) revert InvalidSignature();
        } else if (!_isValidSignatureNow(c.payer, digest, vc.signature)) {
            revert InvalidSignature();
        }

        uint128 delta = newTotal - oldTotal;
        ch.totalClaimed = newTotal;
        receivers[c.receiver][c.token].totalClaimed += delta;
        emit Claimed(channelId, msg.sender, delta, newTotal);
    }

    function _refund(ChannelConfig calldata config, uint128 amount) internal {
        if (amount == 0) revert ZeroRefund();
        bytes32 channelId = getChannelId(config);
        unchecked {
            refundNonce[channelId]++;
        }
        ChannelState storage ch = channels[channelId];
        uint128 available = ch.balance - ch.totalClaimed;
        uint128 paid = amount < available ? amount : available;
        if (paid == 0) return;
        ch.balance -= paid;

        WithdrawalState storage ws = pendingWithdrawals[channelId];
        if (ws.initiatedAt != 0) {
            if (paid >= ws.amount) {
                ws.amount = 0;
                ws.initiatedAt = 0;
            } else {
                ws.amount -= paid;
            }
        }

        emit Refunded(channelId, msg.sender, paid);
        if (ch.balance == 0 && ch.totalClaimed == 0) emit ChannelClosed(channelId, config);
        _safeTransfer(config.token, config.payer, paid);
    }

    function _domainSeparator() internal view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, HASHED_NAME, HASHED_VERSION, block.chainid, address(this)));
    }

    function _hashTypedData(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash));
    }

    /// @dev (signer, ok) for a 65-byte r||s||v signature with low s; never reverts.
    function _tryRecover(bytes32 digest, bytes calldata signature) internal pure returns (address, uint8) {
        if (signature.length != 65) return (address(0), 2);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > HALF_ORDER) return (address(0), 3);
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) return (address(0), 1);
        return (signer, 0);
    }

    /// @dev ECDSA recovery that reverts on a malformed signature, with OpenZeppelin ECDSA's errors.
    function _recoverStrict(bytes32 digest, bytes calldata signature) internal pure returns (address signer) {
        uint8 err;
        (signer, err) = _tryRecover(digest, signature);
        if (err == 1) revert ECDSAInvalidSignature();
        if (err == 2) revert ECDSAInvalidSignatureLength(signature.length);
        if (err == 3) revert ECDSAInvalidSignatureS(bytes32(signature[32:64]));
    }

    /// @dev ECDSA for accounts without code, ERC-1271 `isValidSignature` for contracts.
    function _isValidSignatureNow(address signer, bytes32 digest, bytes calldata signature)
        internal
        view
        returns (bool)
    {
        if (signer.code.length == 0) {
            (address recovered, uint8 err) = _tryRecover(digest, signature);
            return err == 0 && recovered == signer;
        }
        (bool ok, bytes memory ret) =
            signer.staticcall(abi.encodeWithSelector(ERC1271_MAGIC, digest, signature));
        return ok && ret.length >= 32 && abi.decode(ret, (bytes32)) == bytes32(ERC1271_MAGIC);
    }

    function _balanceOfThis(address token) internal view returns (uint256) {
        (bool ok, bytes memory ret) = token.staticcall(abi.encodeWithSignature("balanceOf(address)", address(this)));
        if (!ok || ret.length < 32) revert DepositCollectionFailed();
        return abi.decode(ret, (uint256));
    }

    /// @dev ERC-20 transfer that accepts tokens returning nothing, as SafeERC20 does.
    function _safeTransfer(address token, address to, uint256 amount) internal {
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSignature("transfer(address,uint256)", to, amount));
        if (!ok && ret.length > 0) {
            assembly {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        if (!ok || (ret.length == 0 ? token.code.length == 0 : !abi.decode(ret, (bool)))) {
            revert SafeERC20FailedOperation(token);
        }
    }
}
