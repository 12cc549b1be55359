//! The few chain calls the settler makes, through alloy providers for one or more RPC URLs
//! (tried in order: a transport failure moves on to the next, a node's own refusal does not).
//!
//! Settlement transactions are signed here, locally, and broadcast separately
//! ([`ChainClient::sign_call`] then [`ChainClient::send_raw`]) so the settler can
//! journal the exact signed bytes and their hash before anything reaches the network.

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use std::future::Future;
use std::time::Duration;
use x402_evm::calldata::{self, IEip3009};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// No RPC URL answered (down, unreachable, timed out).
    #[error("RPC unreachable: {0}")]
    Rpc(String),
    /// A node answered and refused (e.g. "nonce too low", "already known").
    #[error("RPC refused: {0}")]
    Rejected(String),
    #[error("could not decode {0}")]
    Decode(String),
    #[error("could not sign the settlement transaction: {0}")]
    Sign(String),
    #[error("gas price {offered} wei is above the configured cap {cap} wei; waiting")]
    GasPriceAboveCap { offered: u128, cap: u128 },
}

/// One network's RPC endpoints with the settlement key.
#[derive(Clone)]
pub struct ChainClient {
    providers: Vec<(String, DynProvider)>,
    wallet: EthereumWallet,
    settler: Address,
    chain_id: u64,
    /// Highest `maxFeePerGas` the settler pays, in wei.
    max_fee_per_gas: Option<u128>,
}

/// The outcome of a mined transaction.
pub struct Mined {
    pub transaction: B256,
    pub success: bool,
    pub gas_used: u64,
    /// Every authorization the transaction used, with the transfer it made, if any.
    pub used: Vec<UsedAuthorization>,
    /// Every log, for callers that read other contracts' events (payment channels).
    pub logs: Vec<alloy_primitives::Log>,
}

/// An `AuthorizationUsed(authorizer, nonce)` log and the `Transfer` that proves what it paid:
/// the token's very next log, from the same token and the same `from`. A nonce used by an
/// authorization that moved nothing, or moved it elsewhere, has `transfer: None` or a
/// transfer to someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedAuthorization {
    pub token: Address,
    pub authorizer: Address,
    pub nonce: B256,
    /// (to, value) of the transfer right after it.
    pub transfer: Option<(Address, U256)>,
}

impl Mined {
    /// Whether this transaction moved `value` of `token` from `authorizer` to `to` under
    /// `nonce`: the only proof that a payment was settled.
    pub fn paid(&self, token: Address, authorizer: Address, nonce: B256, to: Address, value: U256) -> bool {
        self.used.iter().any(|used| {
            used.token == token && used.authorizer == authorizer && used.nonce == nonce && used.transfer == Some((to, value))
        })
    }

    /// The use of `nonce` by `authorizer` on `token` in this transaction, if any.
    pub fn used(&self, token: Address, authorizer: Address, nonce: B256) -> Option<&UsedAuthorization> {
        self.used.iter().find(|used| used.token == token && used.authorizer == authorizer && used.nonce == nonce)
    }
}

/// What ended an authorization nonce on-chain, as the token's events tell it.
pub enum NonceEnd {
    /// `AuthorizationUsed` in this transaction (its transfer, if any, is in `Mined::used`).
    Used(Mined),
    /// `AuthorizationCanceled` in this transaction: the payer cancelled it.
    Canceled(B256),
}

/// Pairs each `AuthorizationUsed` with the `Transfer` the token emitted right after it.
fn used_authorizations(logs: &[alloy::rpc::types::Log]) -> Vec<UsedAuthorization> {
    logs.iter()
        .enumerate()
        .filter_map(|(index, log)| {
            let used = log.log_decode::<IEip3009::AuthorizationUsed>().ok()?;
            let (authorizer, nonce) = (used.inner.authorizer, used.inner.nonce);
            let transfer = logs
                .get(index + 1)
                .filter(|next| next.address() == log.address())
                .and_then(|next| next.log_decode::<IEip3009::Transfer>().ok())
                .filter(|next| next.inner.from == authorizer)
                .map(|next| (next.inner.to, next.inner.value));
            Some(UsedAuthorization { token: log.address(), authorizer, nonce, transfer })
        })
        .collect()
}

/// A signed settlement transaction, not yet broadcast.
pub struct SignedTransaction {
    pub hash: B256,
    pub raw: Vec<u8>,
}

/// The two EIP-1559 fee fields of a transaction, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// What a journaled signed transaction says of itself, read back from its bytes.
#[derive(Debug, Clone)]
pub struct SignedFields {
    pub hash: B256,
    pub signer: Address,
    pub nonce: u64,
    pub to: Address,
    pub input: Bytes,
    pub gas_limit: u64,
    pub fees: Fees,
}

impl SignedFields {
    /// Decodes an EIP-2718 EIP-1559 transaction (the only kind the settler signs) and
    /// recovers its signer.
    pub fn decode(raw: &[u8]) -> Result<Self, ChainError> {
        use alloy::consensus::{Transaction, TxEnvelope};
        use alloy::eips::eip2718::Decodable2718;
        use alloy::consensus::transaction::SignableTransaction;
        let envelope = TxEnvelope::decode_2718(&mut &raw[..]).map_err(|e| ChainError::Decode(format!("signed transaction: {e}")))?;
        let signed = envelope.as_eip1559().ok_or_else(|| ChainError::Decode("signed transaction is not EIP-1559".into()))?;
        let signer = signed
            .signature()
            .recover_address_from_prehash(&signed.tx().signature_hash())
            .map_err(|e| ChainError::Decode(format!("signed transaction's signer: {e}")))?;
        let to = envelope.to().ok_or_else(|| ChainError::Decode("signed transaction creates a contract".into()))?;
        Ok(Self {
            hash: *envelope.tx_hash(),
            signer,
            nonce: envelope.nonce(),
            to,
            input: envelope.input().clone(),
            gas_limit: envelope.gas_limit(),
            fees: Fees { max_fee_per_gas: envelope.max_fee_per_gas(), max_priority_fee_per_gas: envelope.max_priority_fee_per_gas().unwrap_or_default() },
        })
    }
}

/// How long one RPC URL gets to answer one call before the next URL is asked.
const RPC_CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn rpc_error(error: RpcError<TransportErrorKind>) -> ChainError {
    match error {
        RpcError::ErrorResp(payload) => ChainError::Rejected(payload.message.to_string()),
        other => ChainError::Rpc(other.to_string()),
    }
}

impl ChainClient {
    pub fn new(rpc_urls: &[String], key: PrivateKeySigner, chain_id: u64, max_fee_per_gas: Option<u128>) -> Result<Self, ChainError> {
        let providers = rpc_urls
            .iter()
            .map(|rpc_url| {
                let url = rpc_url.parse().map_err(|e| ChainError::Rpc(format!("bad URL {rpc_url}: {e}")))?;
                // No fillers: nonce, gas and fees are set explicitly when signing, so a
                // failed send never leaves a cached nonce ahead of the chain.
                let provider = ProviderBuilder::new().disable_recommended_fillers().connect_http(url).erased();
                Ok((rpc_url.clone(), provider))
            })
            .collect::<Result<Vec<_>, ChainError>>()?;
        if providers.is_empty() {
            return Err(ChainError::Rpc("no RPC URL configured".into()));
        }
        let settler = key.address();
        Ok(Self { providers, wallet: EthereumWallet::from(key), settler, chain_id, max_fee_per_gas })
    }

    pub fn settler_address(&self) -> Address {
        self.settler
    }

    /// Runs `call` against each RPC URL in order until one answers; a node's refusal is an
    /// answer and is not retried elsewhere.
    async fn first_answer<T, F, Fut>(&self, call: F) -> Result<T, ChainError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let mut last = ChainError::Rpc("no RPC URL configured".into());
        for (url, provider) in &self.providers {
            // A node that takes the connection and never answers must not hold up the others.
            let answer = match tokio::time::timeout(RPC_CALL_TIMEOUT, call(provider.clone())).await {
                Ok(answer) => answer.map_err(rpc_error),
                Err(_) => Err(ChainError::Rpc(format!("no answer in {} s", RPC_CALL_TIMEOUT.as_secs()))),
            };
            match answer {
                Err(ChainError::Rpc(error)) => {
                    tracing::debug!(rpc = %url, %error, "RPC unreachable; trying the next URL");
                    last = ChainError::Rpc(format!("{url}: {error}"));
                }
                answer => return answer,
            }
        }
        Err(last)
    }

    fn request(&self, to: Address, data: Bytes) -> TransactionRequest {
        TransactionRequest::default().with_from(self.settler).with_to(to).with_input(data)
    }

    /// Runs `aggregate3` as an `eth_call` and returns each call's (success, returnData).
    pub async fn simulate_aggregate3(&self, multicall: Address, data: Bytes) -> Result<Vec<(bool, Bytes)>, ChainError> {
        let request = self.request(multicall, data);
        let output = self.first_answer(|p| { let r = request.clone(); async move { p.call(r).await } }).await?;
        calldata::decode_aggregate3_result(&output).map_err(|e| ChainError::Decode(e.to_string()))
    }

    /// Runs `data` against `to` as an `eth_call` from the settlement account, at the latest
    /// block; a revert is `ChainError::Rejected` with the node's message.
    pub async fn call(&self, to: Address, data: Bytes) -> Result<Bytes, ChainError> {
        let request = self.request(to, data);
        // Mined state only: what a transaction still in the pool would change is no fact yet.
        self.first_answer(|p| { let r = request.clone(); async move { p.call(r).block(alloy::eips::BlockId::latest()).await } }).await
    }

    /// Gas for `data` sent to `multicall`, as `eth_estimateGas` answers it.
    pub async fn estimate_gas(&self, multicall: Address, data: Bytes) -> Result<u64, ChainError> {
        let request = self.request(multicall, data);
        self.first_answer(|p| { let r = request.clone(); async move { p.estimate_gas(r).await } }).await
    }

    /// The fees a new settlement transaction offers now, or an error when they are above the
    /// configured cap (the settler waits rather than overpay).
    pub async fn fees(&self) -> Result<Fees, ChainError> {
        let fees = self.first_answer(|p| async move { p.estimate_eip1559_fees().await }).await?;
        let offered = Fees { max_fee_per_gas: fees.max_fee_per_gas, max_priority_fee_per_gas: fees.max_priority_fee_per_gas.min(fees.max_fee_per_gas) };
        match self.max_fee_per_gas {
            Some(cap) if offered.max_fee_per_gas > cap => Err(ChainError::GasPriceAboveCap { offered: offered.max_fee_per_gas, cap }),
            _ => Ok(offered),
        }
    }

    /// The fees that replace a transaction offering `old`: at least 12.5% more on both fields
    /// (nodes refuse a replacement with less; 10% is geth's floor) and no less than `now`.
    /// `None` when the cap leaves no room for a replacement a node would take.
    pub fn bumped_fees(&self, old: Fees, now: Option<Fees>) -> Option<Fees> {
        let raise = |value: u128| value.saturating_add(value.div_ceil(8)).max(value.saturating_add(1));
        let mut max_fee_per_gas = raise(old.max_fee_per_gas);
        let mut max_priority_fee_per_gas = raise(old.max_priority_fee_per_gas);
        if let Some(now) = now {
            max_fee_per_gas = max_fee_per_gas.max(now.max_fee_per_gas);
            max_priority_fee_per_gas = max_priority_fee_per_gas.max(now.max_priority_fee_per_gas);
        }
        if let Some(cap) = self.max_fee_per_gas {
            if raise(old.max_fee_per_gas) > cap {
                return None;
            }
            max_fee_per_gas = max_fee_per_gas.min(cap);
        }
        if max_priority_fee_per_gas > max_fee_per_gas {
            // The tip cannot exceed the fee cap; both must still rise by the minimum.
            if raise(old.max_priority_fee_per_gas) > max_fee_per_gas {
                return None;
            }
            max_priority_fee_per_gas = max_fee_per_gas;
        }
        Some(Fees { max_fee_per_gas, max_priority_fee_per_gas })
    }

    /// The settlement account's transaction count: at the latest block (`pending: false`,
    /// the next nonce the chain will mine) or counting the node's pool (`pending: true`).
    pub async fn account_nonce(&self, pending: bool) -> Result<u64, ChainError> {
        let settler = self.settler;
        self.first_answer(|p| async move {
            let count = p.get_transaction_count(settler);
            if pending { count.pending().await } else { count.latest().await }
        })
        .await
    }

    /// Signs a call to `to` with the settlement key at account nonce `nonce`.
    pub async fn sign_call(&self, to: Address, data: Bytes, gas_limit: u64, nonce: u64, fees: Fees) -> Result<SignedTransaction, ChainError> {
        let envelope = self
            .request(to, data)
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            .build(&self.wallet)
            .await
            .map_err(|e| ChainError::Sign(e.to_string()))?;
        Ok(SignedTransaction { hash: *envelope.tx_hash(), raw: envelope.encoded_2718() })
    }

    /// Broadcasts a signed transaction.
    pub async fn send_raw(&self, raw: &[u8]) -> Result<(), ChainError> {
        self.first_answer(|p| async move { p.send_raw_transaction(raw).await.map(drop) }).await
    }

    /// Whether any node knows the transaction (pending or mined).
    pub async fn transaction_known(&self, transaction: B256) -> Result<bool, ChainError> {
        let found = self.first_answer(|p| async move { p.get_transaction_by_hash(transaction).await }).await?;
        Ok(found.is_some())
    }

    /// The receipt of a mined transaction, if it is mined.
    pub async fn receipt(&self, transaction: B256) -> Result<Option<Mined>, ChainError> {
        let receipt = self.first_answer(|p| async move { p.get_transaction_receipt(transaction).await }).await?;
        Ok(receipt.map(|receipt| Mined {
            transaction,
            success: receipt.status(),
            gas_used: receipt.gas_used,
            used: used_authorizations(receipt.logs()),
            logs: receipt.logs().iter().map(|log| log.inner.clone()).collect(),
        }))
    }

    /// Polls for a transaction's receipt up to `timeout`; `None` if it is not mined by then.
    pub async fn wait_for_receipt(&self, transaction: B256, timeout: Duration) -> Result<Option<Mined>, ChainError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(mined) = self.receipt(transaction).await? {
                return Ok(Some(mined));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `authorizationState(authorizer, nonce)` on `token`: true once used or cancelled.
    pub async fn authorization_state(&self, token: Address, authorizer: Address, nonce: B256) -> Result<bool, ChainError> {
        let request = TransactionRequest::default().with_to(token).with_input(calldata::authorization_state(authorizer, nonce));
        // Mined state only: a transaction still in the pool has settled nothing (some nodes
        // answer a call without a block from their pending state).
        let output = self.first_answer(|p| { let r = request.clone(); async move { p.call(r).block(alloy::eips::BlockId::latest()).await } }).await?;
        IEip3009::authorizationStateCall::abi_decode_returns(&output).map_err(|e| ChainError::Decode(e.to_string()))
    }

    /// `balanceOf(owner)` on `token`.
    pub async fn balance_of(&self, token: Address, owner: Address) -> Result<alloy_primitives::U256, ChainError> {
        let data = IEip3009::balanceOfCall { account: owner }.abi_encode();
        let request = TransactionRequest::default().with_to(token).with_input(Bytes::from(data));
        let output = self.first_answer(|p| { let r = request.clone(); async move { p.call(r).await } }).await?;
        IEip3009::balanceOfCall::abi_decode_returns(&output).map_err(|e| ChainError::Decode(e.to_string()))
    }

    /// The latest block number: a cheap sign that some RPC node of this chain answers.
    pub async fn head(&self) -> Result<u64, ChainError> {
        self.first_answer(|p| async move { p.get_block_number().await }).await
    }

    /// The logs `address` emitted with one of `topics` in blocks `from..=to`.
    pub async fn logs(&self, address: Address, topics: Vec<B256>, from: u64, to: u64) -> Result<Vec<alloy_primitives::Log>, ChainError> {
        let filter = Filter::new().address(address).event_signature(topics).from_block(from).to_block(to);
        let logs = self.first_answer(|p| { let f = filter.clone(); async move { p.get_logs(&f).await } }).await?;
        Ok(logs.into_iter().map(|log| log.inner).collect())
    }

    /// What used or cancelled `nonce` of `authorizer` on `token`, if the token's events say
    /// so within the last `lookback` blocks: the transaction's receipt (with the transfer it
    /// made, if any) or the cancellation.
    pub async fn find_nonce_end(&self, token: Address, authorizer: Address, nonce: B256, lookback: u64) -> Result<Option<NonceEnd>, ChainError> {
        let head = self.first_answer(|p| async move { p.get_block_number().await }).await?;
        let filter = Filter::new()
            .address(token)
            .event_signature(vec![IEip3009::AuthorizationUsed::SIGNATURE_HASH, IEip3009::AuthorizationCanceled::SIGNATURE_HASH])
            .topic1(authorizer.into_word())
            .topic2(nonce)
            .from_block(head.saturating_sub(lookback))
            .to_block(head);
        let logs = self.first_answer(|p| { let f = filter.clone(); async move { p.get_logs(&f).await } }).await?;
        let Some(log) = logs.first() else { return Ok(None) };
        let transaction = log.transaction_hash.ok_or_else(|| ChainError::Decode("a log without its transaction hash".into()))?;
        if log.topic0() == Some(&IEip3009::AuthorizationCanceled::SIGNATURE_HASH) {
            return Ok(Some(NonceEnd::Canceled(transaction)));
        }
        let mined = self.receipt(transaction).await?.ok_or_else(|| ChainError::Rpc(format!("no receipt for {transaction}, which emitted a log")))?;
        Ok(Some(NonceEnd::Used(mined)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    fn log(token: Address, event: &impl SolEvent) -> alloy::rpc::types::Log {
        alloy::rpc::types::Log { inner: alloy_primitives::Log { address: token, data: event.encode_log_data() }, ..Default::default() }
    }

    fn mined(logs: &[alloy::rpc::types::Log]) -> Mined {
        Mined { transaction: B256::ZERO, success: true, gas_used: 0, used: used_authorizations(logs), logs: Vec::new() }
    }

    const TOKEN: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
    const OTHER_TOKEN: Address = address!("00000000000000000000000000000000000000ee");
    const PAYER: Address = address!("00000000000000000000000000000000000000a1");
    const PAY_TO: Address = address!("00000000000000000000000000000000000000b2");

    fn used(nonce: B256) -> IEip3009::AuthorizationUsed {
        IEip3009::AuthorizationUsed { authorizer: PAYER, nonce }
    }

    fn transfer(from: Address, to: Address, value: u64) -> IEip3009::Transfer {
        IEip3009::Transfer { from, to, value: U256::from(value) }
    }

    #[test]
    fn a_payment_is_proven_only_by_its_transfer_right_after_its_authorization() {
        let nonce = B256::repeat_byte(7);
        let paid = mined(&[log(TOKEN, &used(nonce)), log(TOKEN, &transfer(PAYER, PAY_TO, 1000))]);
        assert!(paid.paid(TOKEN, PAYER, nonce, PAY_TO, U256::from(1000)));
        assert!(!paid.paid(TOKEN, PAYER, nonce, PAY_TO, U256::from(999)), "another value");
        assert!(!paid.paid(TOKEN, PAYER, B256::repeat_byte(8), PAY_TO, U256::from(1000)), "another nonce");

        // The burnt-nonce attack: the same nonce, used to pay the payer itself nothing.
        let burnt = mined(&[log(TOKEN, &used(nonce)), log(TOKEN, &transfer(PAYER, PAYER, 0))]);
        assert!(burnt.used(TOKEN, PAYER, nonce).is_some());
        assert!(!burnt.paid(TOKEN, PAYER, nonce, PAY_TO, U256::from(1000)));

        // A transfer that is not the authorization's own: another token's, another payer's,
        // or not the very next log.
        for logs in [
            vec![log(TOKEN, &used(nonce)), log(OTHER_TOKEN, &transfer(PAYER, PAY_TO, 1000))],
            vec![log(TOKEN, &used(nonce)), log(TOKEN, &transfer(PAY_TO, PAY_TO, 1000))],
            vec![log(TOKEN, &used(nonce)), log(TOKEN, &used(B256::repeat_byte(9))), log(TOKEN, &transfer(PAYER, PAY_TO, 1000))],
            vec![log(TOKEN, &transfer(PAYER, PAY_TO, 1000)), log(TOKEN, &used(nonce))],
        ] {
            assert!(!mined(&logs).paid(TOKEN, PAYER, nonce, PAY_TO, U256::from(1000)));
        }
    }
}
