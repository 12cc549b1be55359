//! The x402 `exact` scheme on EVM chains, EIP-3009 path.
//!
//! - [`network`]: CAIP-2 ids, v1 network names and the USDC deployments known by name.
//! - [`eip712`]: the `TransferWithAuthorization` digest, with the domain separator
//!   computed once per (chain, token).
//! - [`verify`]: how a payment is checked, locally and without any network call.
//! - [`calldata`]: the contract ABIs the settler needs (EIP-3009 token, Multicall3).
//! - [`batch_settlement`]: the `batch-settlement` scheme (payment channels on the x402
//!   escrow): payload, local voucher verification, escrow calldata, response extras.

pub mod batch_settlement;
pub mod calldata;
pub mod eip712;
pub mod network;
pub mod verify;

pub use eip712::TokenDomain;
pub use network::{chain_id_from_caip2, known_asset, v1_name_for_chain, KnownAsset};
pub use verify::{
    check_v1, check_v2, parse_authorization, parse_signature, verify_exact_evm, verify_v1, verify_v2, Authorization, CheckedPayment,
    ExactEvmRequirement, VerifiedPayment, VerifyError, VerifyPolicy,
};
