//! Header decoding → verification → reservation, on arbitrary bytes: must never panic, and
//! must never accept a payment that does not recover to its `from`.
#![no_main]

use alloy_primitives::{address, U256};
use libfuzzer_sys::fuzz_target;
use x402_evm::{ExactEvmRequirement, TokenDomain, VerifyPolicy};
use x402_store::{MemoryReplayStore, ReplayKey, ReplayStore};

fn requirement() -> ExactEvmRequirement {
    let usdc = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
    ExactEvmRequirement {
        network: "eip155:84532".into(),
        v1_network: Some("base-sepolia"),
        domain: TokenDomain::new("USDC", "2", 84532, usdc),
        pay_to: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        amount: U256::from(1000u64),
        max_timeout_seconds: 300,
        wire: serde_json::json!({
            "scheme": "exact", "network": "eip155:84532", "amount": "1000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let offers = [requirement()];
    let policy = VerifyPolicy::default();
    // A fixed clock inside the seeds' validity windows.
    let now = 1_800_000_000;
    let store = MemoryReplayStore::default();
    let verified = if data.first() == Some(&b'1') {
        x402::decode_header::<x402::v1::PaymentPayload>(&data[1..], x402::MAX_PAYMENT_HEADER_BYTES)
            .ok()
            .and_then(|p| x402_evm::verify_v1(&p, &offers, &policy, now).ok())
    } else {
        x402::decode_header::<x402::v2::PaymentPayload>(data, x402::MAX_PAYMENT_HEADER_BYTES)
            .ok()
            .and_then(|p| x402_evm::verify_v2(&p, &offers, &policy, now).ok())
    };
    if let Some(payment) = verified {
        let digest = offers[0].domain.signing_hash(&payment.authorization.message());
        assert_eq!(payment.signature.recover_address_from_prehash(&digest).ok(), Some(payment.authorization.from));
        assert_eq!(payment.authorization.to, offers[0].pay_to);
        assert_eq!(payment.authorization.value, offers[0].amount);
        let key = ReplayKey {
            chain_id: 84532,
            asset: offers[0].domain.verifying_contract.into_array(),
            from: payment.authorization.from.into_array(),
            nonce: payment.authorization.nonce.0,
        };
        assert!(store.reserve(key, u64::MAX));
        assert!(!store.reserve(key, u64::MAX), "a reserved payment is never reserved twice");
    }
});
