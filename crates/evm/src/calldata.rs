//! What the settler sends on-chain: EIP-3009 `transferWithAuthorization` calls, batched
//! through Multicall3's `aggregate3` with `allowFailure`, plus the reads used to reconcile.

use crate::verify::Authorization;
use alloy_primitives::{Address, Bytes, Signature, B256};
use alloy_sol_types::{sol, SolCall, SolError};

sol! {
    /// The EIP-3009 token surface the settler uses (FiatToken v2 compatible).
    interface IEip3009 {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
        event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }

    /// Multicall3's `aggregate3`.
    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
    }
}

/// Multicall3's address, the same on every chain that has it.
pub const MULTICALL3_ADDRESS: Address = alloy_primitives::address!("cA11bde05977b3631167028862bE2a173976CA11");

/// `transferWithAuthorization(..., v, r, s)` calldata for one verified payment.
pub fn transfer_with_authorization(authorization: &Authorization, signature: &Signature) -> Bytes {
    IEip3009::transferWithAuthorizationCall {
        from: authorization.from,
        to: authorization.to,
        value: authorization.value,
        validAfter: authorization.valid_after,
        validBefore: authorization.valid_before,
        nonce: authorization.nonce,
        v: 27 + u8::from(signature.v()),
        r: B256::from(signature.r()),
        s: B256::from(signature.s()),
    }
    .abi_encode()
    .into()
}

/// `aggregate3` calldata for (token, call) pairs, each allowed to fail on its own.
pub fn aggregate3(calls: impl IntoIterator<Item = (Address, Bytes)>) -> Bytes {
    aggregate3_with(calls, true)
}

/// `aggregate3` calldata in which any failing call reverts the whole batch. Gas is
/// estimated on this form: estimating the `allowFailure` form finds the least gas at which
/// the *outer* call succeeds, which can leave the inner transfers out of gas.
pub fn aggregate3_strict(calls: impl IntoIterator<Item = (Address, Bytes)>) -> Bytes {
    aggregate3_with(calls, false)
}

fn aggregate3_with(calls: impl IntoIterator<Item = (Address, Bytes)>, allow_failure: bool) -> Bytes {
    let calls = calls
        .into_iter()
        .map(|(target, call_data)| IMulticall3::Call3 { target, allowFailure: allow_failure, callData: call_data })
        .collect();
    IMulticall3::aggregate3Call { calls }.abi_encode().into()
}

/// Decodes `aggregate3`'s return data into (success, returnData) per call.
pub fn decode_aggregate3_result(data: &[u8]) -> Result<Vec<(bool, Bytes)>, alloy_sol_types::Error> {
    let results = IMulticall3::aggregate3Call::abi_decode_returns(data)?;
    Ok(results.into_iter().map(|r| (r.success, r.returnData)).collect())
}

/// `authorizationState(authorizer, nonce)` calldata.
pub fn authorization_state(authorizer: Address, nonce: B256) -> Bytes {
    IEip3009::authorizationStateCall { authorizer, nonce }.abi_encode().into()
}

/// Decodes a revert's `Error(string)` message, if it is one.
pub fn revert_reason(data: &[u8]) -> Option<String> {
    alloy_sol_types::Revert::abi_decode(data).ok().map(|r| r.reason)
}
