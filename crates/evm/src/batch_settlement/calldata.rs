//! What the gateway sends to the escrow (x402BatchSettlement at [`SETTLEMENT_CONTRACT`]):
//! deposits through the ERC-3009 collector, batched claims bundled with a settle in the
//! escrow's own `multicall`, the views used to mirror channel state, and its events.
//!
//! [`SETTLEMENT_CONTRACT`]: super::SETTLEMENT_CONTRACT

use super::config::ChannelConfig;
use super::types::IX402BatchSettlement as Escrow;
use super::verify::CheckedDeposit;
use super::DEPOSIT_COLLECTOR;
use alloy_primitives::{Address, Bytes, LogData, B256, U256};
use alloy_sol_types::{SolCall, SolEvent, SolValue};

/// One row of `claim(VoucherClaim[])`: the voucher (config + ceiling), its signature and
/// the cumulative the receiver claims (cumulative, so replaying a row is a no-op).
pub type ClaimRow = Escrow::VoucherClaim;

/// `channels(channelId)` calldata.
pub fn channels(id: B256) -> Bytes {
    Escrow::channelsCall { channelId: id }.abi_encode().into()
}

/// Decodes `channels` into (balance, totalClaimed).
pub fn decode_channels(out: &Bytes) -> Result<(u128, u128), alloy_sol_types::Error> {
    let r = Escrow::channelsCall::abi_decode_returns(out)?;
    Ok((r.balance, r.totalClaimed))
}

/// `pendingWithdrawals(channelId)` calldata.
pub fn pending_withdrawals(id: B256) -> Bytes {
    Escrow::pendingWithdrawalsCall { channelId: id }
        .abi_encode()
        .into()
}

/// Decodes `pendingWithdrawals` into (amount pending, initiatedAt unix seconds); (0, 0)
/// when none is pending.
pub fn decode_pending_withdrawals(out: &Bytes) -> Result<(u128, u64), alloy_sol_types::Error> {
    let r = Escrow::pendingWithdrawalsCall::abi_decode_returns(out)?;
    Ok((r.amount, r.initiatedAt.to::<u64>()))
}

/// `refundNonce(channelId)` calldata.
pub fn refund_nonce(id: B256) -> Bytes {
    Escrow::refundNonceCall { channelId: id }
        .abi_encode()
        .into()
}

/// `deposit(config, amount, DEPOSIT_COLLECTOR, collectorData)`: the collector pulls the
/// payer's ERC-3009 authorization into the escrow.
pub fn deposit(config: &ChannelConfig, deposit: &CheckedDeposit) -> Bytes {
    Escrow::depositCall {
        config: config.to_sol(),
        amount: deposit.amount,
        collector: DEPOSIT_COLLECTOR,
        collectorData: erc3009_collector_data(deposit),
    }
    .abi_encode()
    .into()
}

/// What the ERC3009DepositCollector decodes: abi.encode(uint256 validAfter, uint256
/// validBefore, uint256 salt, bytes signature).
pub fn erc3009_collector_data(deposit: &CheckedDeposit) -> Bytes {
    let salt = U256::from_be_bytes(deposit.salt.0);
    (
        deposit.valid_after,
        deposit.valid_before,
        salt,
        deposit.signature.clone(),
    )
        .abi_encode_params()
        .into()
}

/// One claim row for the payer's latest voucher.
pub fn claim_row(
    config: &ChannelConfig,
    signed_max: u128,
    signature: &[u8],
    total_claimed: u128,
) -> ClaimRow {
    Escrow::VoucherClaim {
        voucher: Escrow::ClaimVoucher {
            channel: config.to_sol(),
            maxClaimableAmount: signed_max,
        },
        signature: Bytes::copy_from_slice(signature),
        totalClaimed: total_claimed,
    }
}

/// `claim(VoucherClaim[])`, sent by the receiver authorizer (no batch signature needed).
pub fn claim(rows: Vec<ClaimRow>) -> Bytes {
    Escrow::claimCall {
        voucherClaims: rows,
    }
    .abi_encode()
    .into()
}

/// `claimWithSignature(VoucherClaim[], bytes)`: the rows with the receiver authorizer's
/// signature of their [`super::ChannelDomain::claim_batch_hash`]; any account may send it.
pub fn claim_with_signature(rows: Vec<ClaimRow>, authorizer_signature: &[u8]) -> Bytes {
    Escrow::claimWithSignatureCall {
        voucherClaims: rows,
        authorizerSignature: Bytes::copy_from_slice(authorizer_signature),
    }
    .abi_encode()
    .into()
}

/// `settle(receiver, token)`: moves claimed funds to the receiver.
pub fn settle(receiver: Address, token: Address) -> Bytes {
    Escrow::settleCall { receiver, token }.abi_encode().into()
}

/// The escrow's own `multicall(bytes[])` (OpenZeppelin, delegatecall to itself, so
/// `msg.sender` stays the receiver authorizer): claim and settle in one transaction.
pub fn multicall(calls: Vec<Bytes>) -> Bytes {
    Escrow::multicallCall { data: calls }.abi_encode().into()
}

/// An escrow event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchEvent {
    ChannelCreated {
        channel_id: B256,
        config: ChannelConfig,
    },
    ChannelClosed {
        channel_id: B256,
        config: ChannelConfig,
    },
    Deposited {
        channel_id: B256,
        sender: Address,
        amount: u128,
        new_balance: u128,
    },
    Claimed {
        channel_id: B256,
        sender: Address,
        claim_amount: u128,
        total_claimed: u128,
    },
    Settled {
        receiver: Address,
        token: Address,
        amount: u128,
    },
    Refunded {
        channel_id: B256,
        sender: Address,
        amount: u128,
    },
    WithdrawInitiated {
        channel_id: B256,
        amount: u128,
        finalize_after: u64,
    },
    WithdrawFinalized {
        channel_id: B256,
        sender: Address,
        amount: u128,
    },
}

/// topic0 of `WithdrawInitiated`, the event a server watches to claim before a payer can
/// take back what it owes.
pub const WITHDRAW_INITIATED_TOPIC: B256 = Escrow::WithdrawInitiated::SIGNATURE_HASH;

/// Decodes an escrow log by its topic0; `None` for other events or malformed data.
pub fn decode_event(log: &LogData) -> Option<BatchEvent> {
    let topic0 = *log.topics().first()?;
    Some(match topic0 {
        Escrow::ChannelCreated::SIGNATURE_HASH => {
            let e = Escrow::ChannelCreated::decode_log_data(log).ok()?;
            BatchEvent::ChannelCreated {
                channel_id: e.channelId,
                config: ChannelConfig::from_sol(&e.config),
            }
        }
        Escrow::ChannelClosed::SIGNATURE_HASH => {
            let e = Escrow::ChannelClosed::decode_log_data(log).ok()?;
            BatchEvent::ChannelClosed {
                channel_id: e.channelId,
                config: ChannelConfig::from_sol(&e.config),
            }
        }
        Escrow::Deposited::SIGNATURE_HASH => {
            let e = Escrow::Deposited::decode_log_data(log).ok()?;
            BatchEvent::Deposited {
                channel_id: e.channelId,
                sender: e.sender,
                amount: e.amount,
                new_balance: e.newBalance,
            }
        }
        Escrow::Claimed::SIGNATURE_HASH => {
            let e = Escrow::Claimed::decode_log_data(log).ok()?;
            BatchEvent::Claimed {
                channel_id: e.channelId,
                sender: e.sender,
                claim_amount: e.claimAmount,
                total_claimed: e.newTotalClaimed,
            }
        }
        Escrow::Settled::SIGNATURE_HASH => {
            let e = Escrow::Settled::decode_log_data(log).ok()?;
            BatchEvent::Settled {
                receiver: e.receiver,
                token: e.token,
                amount: e.amount,
            }
        }
        _ => return decode_payer_event(topic0, log),
    })
}

/// The refund and withdrawal events (split out to keep [`decode_event`] short).
fn decode_payer_event(topic0: B256, log: &LogData) -> Option<BatchEvent> {
    Some(match topic0 {
        Escrow::Refunded::SIGNATURE_HASH => {
            let e = Escrow::Refunded::decode_log_data(log).ok()?;
            BatchEvent::Refunded {
                channel_id: e.channelId,
                sender: e.sender,
                amount: e.amount,
            }
        }
        Escrow::WithdrawInitiated::SIGNATURE_HASH => {
            let e = Escrow::WithdrawInitiated::decode_log_data(log).ok()?;
            BatchEvent::WithdrawInitiated {
                channel_id: e.channelId,
                amount: e.amount,
                finalize_after: e.finalizeAfter.to::<u64>(),
            }
        }
        Escrow::WithdrawFinalized::SIGNATURE_HASH => {
            let e = Escrow::WithdrawFinalized::decode_log_data(log).ok()?;
            BatchEvent::WithdrawFinalized {
                channel_id: e.channelId,
                sender: e.sender,
                amount: e.amount,
            }
        }
        _ => return None,
    })
}
