//! Reason codes, spelled as the official SDKs emit them (the TS and Go SDKs share the list
//! character for character), so that clients which branch on them keep working.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    InvalidPayload,
    InvalidX402Version,
    UnsupportedScheme,
    InvalidNetwork,
    InvalidPaymentRequirements,
    InvalidExactEvmScheme,
    InvalidExactEvmNetworkMismatch,
    InvalidExactEvmMissingEip712Domain,
    InvalidExactEvmRecipientMismatch,
    InvalidExactEvmSignature,
    InvalidExactEvmValidBefore,
    InvalidExactEvmValidAfter,
    InvalidExactEvmAuthorizationValue,
    InvalidExactEvmUndeployedSmartWallet,
    InvalidExactEvmNonceAlreadyUsed,
    InvalidExactEvmInsufficientBalance,
    InvalidExactEvmTransactionFailed,
    InvalidTransactionState,
    UnexpectedVerifyError,
    UnexpectedSettleError,
    // `batch-settlement` (payment channels), as @x402/evm 2.27.0 spells them.
    InvalidBatchSettlementEvmChannelBusy,
    InvalidBatchSettlementEvmChannelIdInvalid,
    InvalidBatchSettlementEvmChannelIdMismatch,
    InvalidBatchSettlementEvmChargeExceedsSignedCumulative,
    InvalidBatchSettlementEvmCumulativeAmountMismatch,
    InvalidBatchSettlementEvmCumulativeBelowClaimed,
    InvalidBatchSettlementEvmCumulativeExceedsBalance,
    InvalidBatchSettlementEvmDepositBelowMinDeposit,
    InvalidBatchSettlementEvmDepositSimulationFailed,
    InvalidBatchSettlementEvmDepositTransactionFailed,
    InvalidBatchSettlementEvmEip6492FactoryNotAllowed,
    InvalidBatchSettlementEvmErc3009AuthorizationRequired,
    InvalidBatchSettlementEvmMissingEip712Domain,
    InvalidBatchSettlementEvmNetworkMismatch,
    InvalidBatchSettlementEvmPayloadAuthorizationValidAfter,
    InvalidBatchSettlementEvmPayloadAuthorizationValidBefore,
    InvalidBatchSettlementEvmPayloadType,
    InvalidBatchSettlementEvmReceiveAuthorizationSignature,
    InvalidBatchSettlementEvmReceiverAuthorizerMismatch,
    InvalidBatchSettlementEvmReceiverMismatch,
    InvalidBatchSettlementEvmRefundPayload,
    InvalidBatchSettlementEvmTokenMismatch,
    InvalidBatchSettlementEvmVoucherSignature,
    InvalidBatchSettlementEvmWithdrawDelayMismatch,
    InvalidBatchSettlementEvmWithdrawDelayOutOfRange,
    InvalidBatchSettlementEvmClaimSimulationFailed,
    InvalidBatchSettlementEvmClaimTransactionFailed,
    InvalidBatchSettlementEvmSettleSimulationFailed,
    InvalidBatchSettlementEvmSettleTransactionFailed,
    InvalidBatchSettlementEvmNothingToSettle,
    InvalidBatchSettlementEvmRpcReadFailed,
    InvalidBatchSettlementEvmInsufficientBalance,
}

impl ReasonCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPayload => "invalid_payload",
            Self::InvalidX402Version => "invalid_x402_version",
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::InvalidNetwork => "invalid_network",
            Self::InvalidPaymentRequirements => "invalid_payment_requirements",
            Self::InvalidExactEvmScheme => "invalid_exact_evm_scheme",
            Self::InvalidExactEvmNetworkMismatch => "invalid_exact_evm_network_mismatch",
            Self::InvalidExactEvmMissingEip712Domain => "invalid_exact_evm_missing_eip712_domain",
            Self::InvalidExactEvmRecipientMismatch => "invalid_exact_evm_recipient_mismatch",
            Self::InvalidExactEvmSignature => "invalid_exact_evm_signature",
            Self::InvalidExactEvmValidBefore => {
                "invalid_exact_evm_payload_authorization_valid_before"
            }
            Self::InvalidExactEvmValidAfter => {
                "invalid_exact_evm_payload_authorization_valid_after"
            }
            Self::InvalidExactEvmAuthorizationValue => "invalid_exact_evm_authorization_value",
            Self::InvalidExactEvmUndeployedSmartWallet => {
                "invalid_exact_evm_payload_undeployed_smart_wallet"
            }
            Self::InvalidExactEvmNonceAlreadyUsed => "invalid_exact_evm_nonce_already_used",
            Self::InvalidExactEvmInsufficientBalance => "invalid_exact_evm_insufficient_balance",
            Self::InvalidExactEvmTransactionFailed => "invalid_exact_evm_transaction_failed",
            Self::InvalidTransactionState => "invalid_transaction_state",
            Self::UnexpectedVerifyError => "unexpected_verify_error",
            Self::UnexpectedSettleError => "unexpected_settle_error",
            Self::InvalidBatchSettlementEvmChannelBusy => {
                "invalid_batch_settlement_evm_channel_busy"
            }
            Self::InvalidBatchSettlementEvmChannelIdInvalid => {
                "invalid_batch_settlement_evm_channel_id_invalid"
            }
            Self::InvalidBatchSettlementEvmChannelIdMismatch => {
                "invalid_batch_settlement_evm_channel_id_mismatch"
            }
            Self::InvalidBatchSettlementEvmChargeExceedsSignedCumulative => {
                "invalid_batch_settlement_evm_charge_exceeds_signed_cumulative"
            }
            Self::InvalidBatchSettlementEvmCumulativeAmountMismatch => {
                "invalid_batch_settlement_evm_cumulative_amount_mismatch"
            }
            Self::InvalidBatchSettlementEvmCumulativeBelowClaimed => {
                "invalid_batch_settlement_evm_cumulative_below_claimed"
            }
            Self::InvalidBatchSettlementEvmCumulativeExceedsBalance => {
                "invalid_batch_settlement_evm_cumulative_exceeds_balance"
            }
            Self::InvalidBatchSettlementEvmDepositBelowMinDeposit => {
                "invalid_batch_settlement_evm_deposit_below_min_deposit"
            }
            Self::InvalidBatchSettlementEvmDepositSimulationFailed => {
                "invalid_batch_settlement_evm_deposit_simulation_failed"
            }
            Self::InvalidBatchSettlementEvmDepositTransactionFailed => {
                "invalid_batch_settlement_evm_deposit_transaction_failed"
            }
            Self::InvalidBatchSettlementEvmEip6492FactoryNotAllowed => {
                "invalid_batch_settlement_evm_eip6492_factory_not_allowed"
            }
            Self::InvalidBatchSettlementEvmErc3009AuthorizationRequired => {
                "invalid_batch_settlement_evm_erc3009_authorization_required"
            }
            Self::InvalidBatchSettlementEvmMissingEip712Domain => {
                "invalid_batch_settlement_evm_missing_eip712_domain"
            }
            Self::InvalidBatchSettlementEvmNetworkMismatch => {
                "invalid_batch_settlement_evm_network_mismatch"
            }
            Self::InvalidBatchSettlementEvmPayloadAuthorizationValidAfter => {
                "invalid_batch_settlement_evm_payload_authorization_valid_after"
            }
            Self::InvalidBatchSettlementEvmPayloadAuthorizationValidBefore => {
                "invalid_batch_settlement_evm_payload_authorization_valid_before"
            }
            Self::InvalidBatchSettlementEvmPayloadType => {
                "invalid_batch_settlement_evm_payload_type"
            }
            Self::InvalidBatchSettlementEvmReceiveAuthorizationSignature => {
                "invalid_batch_settlement_evm_receive_authorization_signature"
            }
            Self::InvalidBatchSettlementEvmReceiverAuthorizerMismatch => {
                "invalid_batch_settlement_evm_receiver_authorizer_mismatch"
            }
            Self::InvalidBatchSettlementEvmReceiverMismatch => {
                "invalid_batch_settlement_evm_receiver_mismatch"
            }
            Self::InvalidBatchSettlementEvmRefundPayload => {
                "invalid_batch_settlement_evm_refund_payload"
            }
            Self::InvalidBatchSettlementEvmTokenMismatch => {
                "invalid_batch_settlement_evm_token_mismatch"
            }
            Self::InvalidBatchSettlementEvmVoucherSignature => {
                "invalid_batch_settlement_evm_voucher_signature"
            }
            Self::InvalidBatchSettlementEvmWithdrawDelayMismatch => {
                "invalid_batch_settlement_evm_withdraw_delay_mismatch"
            }
            Self::InvalidBatchSettlementEvmWithdrawDelayOutOfRange => {
                "invalid_batch_settlement_evm_withdraw_delay_out_of_range"
            }
            Self::InvalidBatchSettlementEvmClaimSimulationFailed => {
                "invalid_batch_settlement_evm_claim_simulation_failed"
            }
            Self::InvalidBatchSettlementEvmClaimTransactionFailed => {
                "invalid_batch_settlement_evm_claim_transaction_failed"
            }
            Self::InvalidBatchSettlementEvmSettleSimulationFailed => {
                "invalid_batch_settlement_evm_settle_simulation_failed"
            }
            Self::InvalidBatchSettlementEvmSettleTransactionFailed => {
                "invalid_batch_settlement_evm_settle_transaction_failed"
            }
            Self::InvalidBatchSettlementEvmNothingToSettle => {
                "invalid_batch_settlement_evm_nothing_to_settle"
            }
            Self::InvalidBatchSettlementEvmRpcReadFailed => {
                "invalid_batch_settlement_evm_rpc_read_failed"
            }
            Self::InvalidBatchSettlementEvmInsufficientBalance => {
                "invalid_batch_settlement_evm_insufficient_balance"
            }
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
