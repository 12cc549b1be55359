//! The verification path of one paid request, piece by piece and whole:
//! header decode → requirement match and checks → EIP-712 digest → signature recovery →
//! replay reservation. Run: `cargo bench -p x402-gateway-benches`.

use alloy_primitives::{address, hex, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use x402_evm::eip712::TransferWithAuthorization;
use x402_evm::{ExactEvmRequirement, TokenDomain, VerifyPolicy};
use x402_store::{MemoryReplayStore, ReplayKey, ReplayStore};

struct Fixture {
    requirement: ExactEvmRequirement,
    signer: PrivateKeySigner,
    now: u64,
}

impl Fixture {
    fn new() -> Self {
        let usdc = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
        let pay_to = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let requirement = ExactEvmRequirement {
            network: "eip155:84532".into(),
            v1_network: Some("base-sepolia"),
            domain: TokenDomain::new("USDC", "2", 84532, usdc),
            pay_to,
            amount: U256::from(1000u64),
            max_timeout_seconds: 300,
            wire: serde_json::json!({
                "scheme": "exact", "network": "eip155:84532", "amount": "1000",
                "asset": usdc.to_checksum(None), "payTo": pay_to.to_checksum(None),
                "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}
            }),
        };
        let signer = PrivateKeySigner::random();
        Self { requirement, signer, now: x402_store::unix_now() }
    }

    /// A distinct, valid `PAYMENT-SIGNATURE` header value for nonce `n`.
    fn header(&self, n: u64) -> String {
        let nonce = B256::from(U256::from(n));
        let message = self.message(nonce);
        let signature = self.signer.sign_hash_sync(&self.requirement.domain.signing_hash(&message)).expect("sign");
        let payload = serde_json::json!({
            "x402Version": 2,
            "resource": {"url": "http://127.0.0.1:8402/weather", "description": "", "mimeType": ""},
            "accepted": self.requirement.wire,
            "payload": {
                "signature": format!("0x{}", hex::encode(signature.as_bytes())),
                "authorization": {
                    "from": self.signer.address().to_checksum(None),
                    "to": self.requirement.pay_to.to_checksum(None),
                    "value": "1000",
                    "validAfter": (self.now - 600).to_string(),
                    "validBefore": (self.now + 300).to_string(),
                    "nonce": nonce.to_string(),
                }
            }
        });
        x402::encode_header(&payload)
    }

    fn message(&self, nonce: B256) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.signer.address(),
            to: self.requirement.pay_to,
            value: U256::from(1000u64),
            validAfter: U256::from(self.now - 600),
            validBefore: U256::from(self.now + 300),
            nonce,
        }
    }
}

fn verify_path(c: &mut Criterion) {
    let fixture = Fixture::new();
    let offers = [fixture.requirement.clone()];
    let policy = VerifyPolicy::default();
    let headers: Vec<String> = (0..4096).map(|n| fixture.header(n)).collect();
    let message = fixture.message(B256::ZERO);
    let digest = fixture.requirement.domain.signing_hash(&message);
    let signature = fixture.signer.sign_hash_sync(&digest).expect("sign");

    let mut group = c.benchmark_group("verify_path");
    group.bench_function("decode_header", |b| {
        b.iter(|| x402::decode_header::<x402::v2::PaymentPayload>(black_box(headers[0].as_bytes()), 8192).expect("decode"))
    });
    group.bench_function("eip712_digest", |b| b.iter(|| fixture.requirement.domain.signing_hash(black_box(&message))));
    group.bench_function("recover_signer", |b| b.iter(|| black_box(&signature).recover_address_from_prehash(black_box(&digest))));
    // The pure-Rust backend alloy would use without the `secp256k1` feature, for the ratio.
    group.bench_function("recover_signer (k256, not used)", |b| b.iter(|| black_box(&signature).recover_from_prehash(black_box(&digest))));
    let payload: x402::v2::PaymentPayload = x402::decode_header(headers[0].as_bytes(), 8192).expect("decode");
    group.bench_function("verify_v2 (match, checks, digest, recover)", |b| {
        b.iter(|| x402_evm::verify_v2(black_box(&payload), &offers, &policy, fixture.now).expect("valid"))
    });
    let store = MemoryReplayStore::default();
    let mut n = 0u64;
    group.bench_function("replay_reserve", |b| {
        b.iter(|| {
            n += 1;
            let key = ReplayKey { chain_id: 84532, asset: [1; 20], from: [2; 20], nonce: B256::from(U256::from(n)).0 };
            store.reserve(key, fixture.now + 300)
        })
    });
    let store = MemoryReplayStore::default();
    let mut i = 0usize;
    group.bench_function("whole path (decode → verify → reserve)", |b| {
        b.iter(|| {
            // Cycle through distinct payments; after the first lap each is a replay, which
            // costs the same work up to the reservation.
            let header = &headers[i % headers.len()];
            i += 1;
            let payment: x402::v2::PaymentPayload = x402::decode_header(header.as_bytes(), 8192).expect("decode");
            let verified = x402_evm::verify_v2(&payment, &offers, &policy, fixture.now).expect("valid");
            let key = ReplayKey {
                chain_id: 84532,
                asset: offers[0].domain.verifying_contract.into_array(),
                from: verified.authorization.from.into_array(),
                nonce: verified.authorization.nonce.0,
            };
            store.reserve(key, fixture.now + 300)
        })
    });
    group.bench_function("requirement_match (accepted == offered)", |b| {
        b.iter(|| offers.iter().position(|offer| offer.wire == black_box(&payload).accepted))
    });
    voucher(&mut group, &fixture);
    group.finish();
}

/// `batch-settlement`: one voucher on a funded channel, parsed and verified (config checks,
/// channel id digest, voucher digest, recovery, cumulative, balance).
fn voucher(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, fixture: &Fixture) {
    use x402_evm::batch_settlement::{verify_batch_voucher, BatchOffer, BatchPayload, ChannelConfig, ChannelDomain, ChannelView};
    let offer = BatchOffer {
        channel_domain: ChannelDomain::new(84532),
        token: fixture.requirement.domain.clone(),
        pay_to: fixture.requirement.pay_to,
        receiver_authorizer: address!("15d34AAf54267DB7D7c367839AAf71A00a2C6A65"),
        withdraw_delay: 900,
        price: 1000,
        enforced_min_deposit: None,
    };
    let payer = fixture.signer.address();
    let config = ChannelConfig {
        payer,
        payerAuthorizer: payer,
        receiver: offer.pay_to,
        receiverAuthorizer: offer.receiver_authorizer,
        token: offer.token.verifying_contract,
        withdrawDelay: 900,
        salt: B256::ZERO,
    };
    let channel_id = offer.channel_domain.channel_id(&config);
    let signature = fixture.signer.sign_hash_sync(&offer.channel_domain.voucher_hash(channel_id, 4000)).expect("sign");
    let wire = serde_json::json!({
        "type": "voucher",
        "channelConfig": {
            "payer": payer.to_checksum(None), "payerAuthorizer": payer.to_checksum(None),
            "receiver": config.receiver.to_checksum(None), "receiverAuthorizer": config.receiverAuthorizer.to_checksum(None),
            "token": config.token.to_checksum(None), "withdrawDelay": 900, "salt": B256::ZERO.to_string(),
        },
        "voucher": {"channelId": channel_id.to_string(), "maxClaimableAmount": "4000", "signature": format!("0x{}", hex::encode(signature.as_bytes()))},
    });
    let view = ChannelView { charged_cumulative: Some(3000), balance: 10_000, total_claimed: 0 };
    group.bench_function("voucher (batch-settlement: parse, digests, recover, cumulative)", |b| {
        b.iter(|| {
            let payload = BatchPayload::from_json(black_box(&wire)).expect("parses");
            verify_batch_voucher(&payload, &offer, &view, fixture.now).expect("valid")
        })
    });
}

/// One paid route whose offer is the fixture's requirement.
fn bench_config() -> x402_gateway::config::Config {
    let yaml = r#"
networks: { base-sepolia: { rpc_url: "http://127.0.0.1:8545" } }
payments: { pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
upstreams: { sample: { addresses: ["127.0.0.1:8080"] } }
routes:
  - { name: weather, methods: [GET], path: /weather, upstream: sample, price: "$0.001", description: Current weather }
"#;
    x402_gateway::config::parse_config(yaml, std::path::Path::new("bench.yaml")).expect("valid config")
}

/// What moving signature recovery off the worker costs a payment: the gateway's cheap checks
/// and recovery, inline and through a verify thread (queue, wake-up, reply).
fn verifier_hop(c: &mut Criterion) {
    use x402_gateway::payment::{check_payment, PaymentHeader};
    use x402_gateway::verifier::SignatureVerifier;
    let fixture = Fixture::new();
    let header = fixture.header(1);
    let config = bench_config();
    let route = &config.routes[0];
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut group = c.benchmark_group("verifier");
    for (name, threads) in [("check + recover, inline (verify_threads: 0)", 0), ("check + recover on a verify thread", 1)] {
        let waiting = prometheus::IntGauge::new("verify_queue_depth", "bench").expect("gauge");
        let verifier = SignatureVerifier::start(threads, 256, waiting).expect("verifier");
        group.bench_function(name, |b| {
            b.iter(|| {
                let check = check_payment(PaymentHeader::V2(header.as_bytes()), route, &config.verify_policy, 8192, fixture.now).expect("checks pass");
                runtime.block_on(verifier.recover_signer(check)).expect("valid")
            })
        });
    }
    group.finish();
}

/// The 402 a request without payment gets: its header bytes are precomputed at config load,
/// so rendering is a copy of them plus the resource URL.
fn challenge(c: &mut Criterion) {
    let config = bench_config();
    let route = &config.routes[0];
    let pricing = route.pricing.as_ref().expect("priced");
    c.bench_function("render_402 (v2 header + v1 body)", |b| {
        b.iter(|| x402_gateway::challenge::payment_required(route, pricing, black_box("http://127.0.0.1:8402/weather"), None, false))
    });
    c.bench_function("match_route", |b| b.iter(|| config.match_route(&http::Method::GET, Some("127.0.0.1:8402"), black_box("/weather"))));
}

/// What every request, free ones included, pays before it is forwarded: the canonical
/// target (a byte scan that borrows a plain path) and the route match with the priced guard.
fn route(c: &mut Criterion) {
    use x402_gateway::canonical::{canonical_path, PathParams};
    let yaml = r#"
networks: { base-sepolia: { rpc_url: "http://127.0.0.1:8545" } }
payments: { pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
upstreams: { sample: { addresses: ["127.0.0.1:8080"] } }
routes:
  - { name: health, path: /health, upstream: sample, free: true }
  - { name: weather, methods: [GET], path: /weather, upstream: sample, price: "$0.001" }
  - { name: reports, path: /api/reports/*, upstream: sample, price: "$0.001" }
  - { name: free, path: /*, upstream: sample, free: true }
"#;
    let config = x402_gateway::config::parse_config(yaml, std::path::Path::new("bench.yaml")).expect("valid config");
    let mut group = c.benchmark_group("route");
    for (name, path) in [("canonical_target plain", "/static/app/main.js"), ("canonical_target encoded", "/static/%61pp/main%20file.js")] {
        group.bench_function(name, |b| b.iter(|| canonical_path(black_box(path), PathParams::Refuse).map(|p| p.as_str().len())));
    }
    for (name, path) in [("free request: canonical + match", "/static/app/main.js"), ("priced request: canonical + match", "/weather")] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let canonical = canonical_path(black_box(path), PathParams::Refuse).ok()?;
                config.match_route(&http::Method::GET, Some("127.0.0.1:8402"), canonical.as_str())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, verify_path, verifier_hop, challenge, route);
criterion_main!(benches);
