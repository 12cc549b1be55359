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
            Self::InvalidExactEvmValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Self::InvalidExactEvmValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Self::InvalidExactEvmAuthorizationValue => "invalid_exact_evm_authorization_value",
            Self::InvalidExactEvmUndeployedSmartWallet => "invalid_exact_evm_payload_undeployed_smart_wallet",
            Self::InvalidExactEvmNonceAlreadyUsed => "invalid_exact_evm_nonce_already_used",
            Self::InvalidExactEvmInsufficientBalance => "invalid_exact_evm_insufficient_balance",
            Self::InvalidExactEvmTransactionFailed => "invalid_exact_evm_transaction_failed",
            Self::InvalidTransactionState => "invalid_transaction_state",
            Self::UnexpectedVerifyError => "unexpected_verify_error",
            Self::UnexpectedSettleError => "unexpected_settle_error",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
