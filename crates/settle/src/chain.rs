//! The few chain calls the settler makes, through an alloy provider that signs with the
//! settlement key.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, Bytes, B256};
use alloy_sol_types::{SolCall, SolEvent};
use std::time::Duration;
use x402_evm::calldata::{self, IEip3009};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("RPC {0}")]
    Rpc(String),
    #[error("no receipt within {0:?}")]
    ReceiptTimeout(Duration, B256),
    #[error("could not decode {0}")]
    Decode(String),
}

/// One network's RPC endpoint with the settlement key.
#[derive(Clone)]
pub struct ChainClient {
    provider: DynProvider,
    settler: Address,
}

/// The outcome of a mined settlement transaction.
pub struct Mined {
    pub transaction: B256,
    pub success: bool,
    /// (authorizer, nonce) of every `AuthorizationUsed` the transaction emitted, per token.
    pub used: Vec<(Address, Address, B256)>,
}

impl ChainClient {
    pub fn new(rpc_url: &str, key: PrivateKeySigner) -> Result<Self, ChainError> {
        let url = rpc_url.parse().map_err(|e| ChainError::Rpc(format!("bad URL {rpc_url}: {e}")))?;
        let settler = key.address();
        let provider = ProviderBuilder::new().wallet(EthereumWallet::from(key)).connect_http(url).erased();
        Ok(Self { provider, settler })
    }

    pub fn settler_address(&self) -> Address {
        self.settler
    }

    /// Runs `aggregate3` as an `eth_call` and returns each call's (success, returnData).
    pub async fn simulate_aggregate3(&self, multicall: Address, data: Bytes) -> Result<Vec<(bool, Bytes)>, ChainError> {
        let request = TransactionRequest::default().with_from(self.settler).with_to(multicall).with_input(data);
        let output = self.provider.call(request).await.map_err(|e| ChainError::Rpc(e.to_string()))?;
        calldata::decode_aggregate3_result(&output).map_err(|e| ChainError::Decode(e.to_string()))
    }

    /// Gas for `data` sent to `multicall`, as `eth_estimateGas` answers it.
    pub async fn estimate_gas(&self, multicall: Address, data: Bytes) -> Result<u64, ChainError> {
        let request = TransactionRequest::default().with_from(self.settler).with_to(multicall).with_input(data);
        self.provider.estimate_gas(request).await.map_err(|e| ChainError::Rpc(e.to_string()))
    }

    /// Broadcasts `aggregate3` with a fixed gas limit and returns its hash once the node
    /// accepted it.
    pub async fn send_aggregate3(&self, multicall: Address, data: Bytes, gas_limit: u64) -> Result<B256, ChainError> {
        let request = TransactionRequest::default()
            .with_from(self.settler)
            .with_to(multicall)
            .with_input(data)
            .with_gas_limit(gas_limit);
        let pending = self.provider.send_transaction(request).await.map_err(|e| ChainError::Rpc(e.to_string()))?;
        Ok(*pending.tx_hash())
    }

    /// Waits for a transaction's receipt, polling, up to `timeout`.
    pub async fn wait_for_receipt(&self, transaction: B256, timeout: Duration) -> Result<Mined, ChainError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let receipt = self
                .provider
                .get_transaction_receipt(transaction)
                .await
                .map_err(|e| ChainError::Rpc(e.to_string()))?;
            if let Some(receipt) = receipt {
                let used = receipt
                    .logs()
                    .iter()
                    .filter_map(|log| {
                        let decoded = log.log_decode::<IEip3009::AuthorizationUsed>().ok()?;
                        Some((log.address(), decoded.inner.authorizer, decoded.inner.nonce))
                    })
                    .collect();
                return Ok(Mined { transaction, success: receipt.status(), used });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChainError::ReceiptTimeout(timeout, transaction));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `authorizationState(authorizer, nonce)` on `token`: true once used or cancelled.
    pub async fn authorization_state(&self, token: Address, authorizer: Address, nonce: B256) -> Result<bool, ChainError> {
        let request = TransactionRequest::default().with_to(token).with_input(calldata::authorization_state(authorizer, nonce));
        let output = self.provider.call(request).await.map_err(|e| ChainError::Rpc(e.to_string()))?;
        IEip3009::authorizationStateCall::abi_decode_returns(&output).map_err(|e| ChainError::Decode(e.to_string()))
    }

    /// The transaction that emitted `AuthorizationUsed(authorizer, nonce)` on `token`, if any
    /// within the last `lookback` blocks.
    pub async fn find_authorization_used(
        &self,
        token: Address,
        authorizer: Address,
        nonce: B256,
        lookback: u64,
    ) -> Result<Option<B256>, ChainError> {
        let head = self.provider.get_block_number().await.map_err(|e| ChainError::Rpc(e.to_string()))?;
        let filter = Filter::new()
            .address(token)
            .event_signature(IEip3009::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(authorizer.into_word())
            .topic2(nonce)
            .from_block(head.saturating_sub(lookback))
            .to_block(head);
        let logs = self.provider.get_logs(&filter).await.map_err(|e| ChainError::Rpc(e.to_string()))?;
        Ok(logs.first().and_then(|log| log.transaction_hash))
    }
}
