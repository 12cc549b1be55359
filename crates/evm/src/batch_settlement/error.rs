//! Why a `batch-settlement` payment is refused, each reason mapped to the code the official
//! SDK uses, so its client reacts the same way (notably the corrective-402 recovery).

use alloy_primitives::{Address, B256, U256};
use x402::ReasonCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("malformed batch-settlement payload: {0}")]
    Payload(String),
    #[error("payload type {0:?} is not one of deposit, voucher, refund")]
    PayloadType(String),
    #[error("another request on this channel is in flight; retry when it completes")]
    ChannelBusy,
    #[error(
        "voucher ceiling {signed} exceeds the channel's deposited balance {balance}; deposit more"
    )]
    CumulativeExceedsBalance { signed: u128, balance: u128 },
    #[error("the payer asked to withdraw from this channel; the withdrawal can be finalized at {finalize_after} (now {now}), too soon for a claim to land, so the channel takes no more vouchers")]
    WithdrawalFinalizing { finalize_after: u64, now: u64 },
    #[error("channelConfig.receiver is {got}, but this route pays {want}")]
    ReceiverMismatch { got: Address, want: Address },
    #[error("channelConfig.receiverAuthorizer is {got}, but this route's is {want}")]
    ReceiverAuthorizerMismatch { got: Address, want: Address },
    #[error("channelConfig.token is {got}, but this route's asset is {want}")]
    TokenMismatch { got: Address, want: Address },
    #[error("channelConfig.withdrawDelay is {got}, but this route offers {want}")]
    WithdrawDelayMismatch { got: u64, want: u64 },
    #[error("withdrawDelay {0} is outside the escrow's range 900..=2592000 seconds")]
    WithdrawDelayOutOfRange(u64),
    #[error("channelConfig.payer is the zero address")]
    ZeroPayer,
    #[error("payerAuthorizer is zero (ERC-1271 smart-wallet vouchers); only EOA voucher signatures are verified here")]
    SmartWalletVoucher,
    #[error("voucher.channelId {got} is not the id of channelConfig ({want})")]
    ChannelIdMismatch { got: B256, want: B256 },
    #[error("voucher signature is malformed: {0}")]
    VoucherSignatureMalformed(String),
    #[error("voucher signature recovers to {recovered}, not to payerAuthorizer {expected}")]
    VoucherSignatureMismatch {
        recovered: Address,
        expected: Address,
    },
    #[error("voucher ceiling {signed} is not the expected cumulative {expected} (charged so far + price)")]
    CumulativeMismatch { signed: u128, expected: u128 },
    #[error("voucher ceiling {signed} is not above the channel's claimed total {total_claimed}")]
    CumulativeBelowClaimed { signed: u128, total_claimed: u128 },
    #[error("deposit {amount} is below this route's minimum deposit {min}")]
    DepositBelowMin { amount: u128, min: u128 },
    #[error("permit2 deposits are not supported here; use the ERC-3009 (eip3009) deposit")]
    Permit2NotSupported,
    #[error("deposit has no erc3009Authorization")]
    DepositAuthorizationMissing,
    #[error("deposit signature is {0} bytes: ERC-6492 (counterfactual wallet) signatures are not supported, only 65-byte EOA signatures")]
    DepositSignatureErc6492(usize),
    #[error("deposit authorization is not valid until {valid_after}; now is {now}")]
    DepositNotYetValid { valid_after: U256, now: u64 },
    #[error(
        "deposit authorization expires at {valid_before}; it must stay valid until at least {min}"
    )]
    DepositExpired { valid_before: U256, min: u64 },
    #[error("deposit authorization signature is malformed: {0}")]
    DepositSignatureMalformed(String),
    #[error("deposit authorization recovers to {recovered}, not to the payer {payer}")]
    DepositSignatureMismatch { recovered: Address, payer: Address },
    #[error(
        "charging {price} on top of {charged_before} exceeds the signed ceiling {max_claimable}"
    )]
    ChargeExceedsSigned {
        charged_before: u128,
        price: u128,
        max_claimable: u128,
    },
}

impl BatchError {
    /// The x402 reason code a client sees.
    pub fn reason(&self) -> ReasonCode {
        match self {
            Self::Payload(_) | Self::ZeroPayer => ReasonCode::InvalidPayload,
            Self::PayloadType(_) => ReasonCode::InvalidBatchSettlementEvmPayloadType,
            Self::ChannelBusy => ReasonCode::InvalidBatchSettlementEvmChannelBusy,
            Self::WithdrawalFinalizing { .. } => ReasonCode::InvalidBatchSettlementEvmInsufficientBalance,
            Self::CumulativeExceedsBalance { .. } => {
                ReasonCode::InvalidBatchSettlementEvmCumulativeExceedsBalance
            }
            Self::ReceiverMismatch { .. } => ReasonCode::InvalidBatchSettlementEvmReceiverMismatch,
            Self::ReceiverAuthorizerMismatch { .. } => {
                ReasonCode::InvalidBatchSettlementEvmReceiverAuthorizerMismatch
            }
            Self::TokenMismatch { .. } => ReasonCode::InvalidBatchSettlementEvmTokenMismatch,
            Self::WithdrawDelayMismatch { .. } => {
                ReasonCode::InvalidBatchSettlementEvmWithdrawDelayMismatch
            }
            Self::WithdrawDelayOutOfRange(_) => {
                ReasonCode::InvalidBatchSettlementEvmWithdrawDelayOutOfRange
            }
            Self::SmartWalletVoucher
            | Self::VoucherSignatureMalformed(_)
            | Self::VoucherSignatureMismatch { .. } => {
                ReasonCode::InvalidBatchSettlementEvmVoucherSignature
            }
            Self::ChannelIdMismatch { .. } => {
                ReasonCode::InvalidBatchSettlementEvmChannelIdMismatch
            }
            Self::CumulativeMismatch { .. } => {
                ReasonCode::InvalidBatchSettlementEvmCumulativeAmountMismatch
            }
            Self::CumulativeBelowClaimed { .. } => {
                ReasonCode::InvalidBatchSettlementEvmCumulativeBelowClaimed
            }
            Self::DepositBelowMin { .. } => {
                ReasonCode::InvalidBatchSettlementEvmDepositBelowMinDeposit
            }
            Self::Permit2NotSupported | Self::DepositAuthorizationMissing => {
                ReasonCode::InvalidBatchSettlementEvmErc3009AuthorizationRequired
            }
            Self::DepositSignatureErc6492(_) => {
                ReasonCode::InvalidBatchSettlementEvmEip6492FactoryNotAllowed
            }
            Self::DepositNotYetValid { .. } => {
                ReasonCode::InvalidBatchSettlementEvmPayloadAuthorizationValidAfter
            }
            Self::DepositExpired { .. } => {
                ReasonCode::InvalidBatchSettlementEvmPayloadAuthorizationValidBefore
            }
            Self::DepositSignatureMalformed(_) | Self::DepositSignatureMismatch { .. } => {
                ReasonCode::InvalidBatchSettlementEvmReceiveAuthorizationSignature
            }
            Self::ChargeExceedsSigned { .. } => {
                ReasonCode::InvalidBatchSettlementEvmChargeExceedsSignedCumulative
            }
        }
    }

    /// True for the two refusals the official client answers with its corrective-402
    /// recovery (resync its cumulative, then retry once); the 402 must then carry
    /// `channelState` and `voucherState` (see [`super::response::corrective_extra`]).
    pub fn is_corrective(&self) -> bool {
        matches!(
            self,
            Self::CumulativeMismatch { .. } | Self::CumulativeBelowClaimed { .. }
        )
    }
}
