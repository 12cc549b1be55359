//! Unit tests: every refusal of `verify_batch_voucher`, the happy paths, `charge`, payload
//! parsing, escrow calldata (selectors and topics from the canonical contract) and the
//! response shapes. Signatures come from alloy's local signer.

use super::calldata::{self, BatchEvent};
use super::response::{self, ChannelSnapshot};
use super::types::IX402BatchSettlement as Escrow;
use super::verify::deposit_nonce;
use super::*;
use alloy_primitives::{aliases, b256, hex, Bytes, LogData, Signature};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolEvent;
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const CHAIN: u64 = 84532;
const USDC: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
const PAY_TO: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
const AUTHORIZER: Address = address!("15d34AAf54267DB7D7c367839AAf71A00a2C6A65");
const SALT: B256 = b256!("0101010101010101010101010101010101010101010101010101010101010101");

fn payer() -> PrivateKeySigner {
    // anvil account 2
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
        .parse()
        .unwrap()
}

fn stranger() -> PrivateKeySigner {
    // anvil account 3
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"
        .parse()
        .unwrap()
}

fn offer() -> BatchOffer {
    BatchOffer {
        channel_domain: ChannelDomain::new(CHAIN),
        token: TokenDomain::new("USDC", "2", CHAIN, USDC),
        pay_to: PAY_TO,
        receiver_authorizer: AUTHORIZER,
        withdraw_delay: 900,
        price: 1000,
        enforced_min_deposit: None,
    }
}

fn config() -> ChannelConfig {
    let payer = payer().address();
    ChannelConfig {
        payer,
        payerAuthorizer: payer,
        receiver: PAY_TO,
        receiverAuthorizer: AUTHORIZER,
        token: USDC,
        withdrawDelay: 900,
        salt: B256::ZERO,
    }
}

fn config_json(config: &ChannelConfig) -> Value {
    json!({
        "payer": config.payer.to_checksum(None),
        "payerAuthorizer": config.payerAuthorizer.to_checksum(None),
        "receiver": config.receiver.to_checksum(None),
        "receiverAuthorizer": config.receiverAuthorizer.to_checksum(None),
        "token": config.token.to_checksum(None),
        "withdrawDelay": config.withdrawDelay,
        "salt": config.salt.to_string(),
    })
}

fn hex_sig(signature: &Signature) -> String {
    hex::encode_prefixed(signature.as_bytes())
}

fn sign_voucher(signer: &PrivateKeySigner, id: B256, max: u128) -> String {
    hex_sig(
        &signer
            .sign_hash_sync(&ChannelDomain::new(CHAIN).voucher_hash(id, max))
            .unwrap(),
    )
}

fn voucher_json(config: &ChannelConfig, max: u128) -> Value {
    let id = ChannelDomain::new(CHAIN).channel_id(config);
    json!({"channelId": id.to_string(), "maxClaimableAmount": max.to_string(), "signature": sign_voucher(&payer(), id, max)})
}

fn voucher_payload(config: &ChannelConfig, max: u128) -> Value {
    json!({"type": "voucher", "channelConfig": config_json(config), "voucher": voucher_json(config, max)})
}

fn deposit_signature(
    signer: &PrivateKeySigner,
    config: &ChannelConfig,
    amount: u128,
    valid_before: u64,
    salt: B256,
) -> String {
    let id = ChannelDomain::new(CHAIN).channel_id(config);
    let message = ReceiveWithAuthorization {
        from: config.payer,
        to: DEPOSIT_COLLECTOR,
        value: U256::from(amount),
        validAfter: U256::ZERO,
        validBefore: U256::from(valid_before),
        nonce: deposit_nonce(id, salt),
    };
    let digest = signing_hash(offer().token.separator(), &message);
    hex_sig(&signer.sign_hash_sync(&digest).unwrap())
}

fn deposit_payload_with(amount: u128, max: u128, valid_before: u64, signature: String) -> Value {
    let config = config();
    json!({
        "type": "deposit",
        "channelConfig": config_json(&config),
        "voucher": voucher_json(&config, max),
        "deposit": {"amount": amount.to_string(), "authorization": {"erc3009Authorization": {
            "validAfter": "0", "validBefore": valid_before.to_string(), "salt": SALT.to_string(), "signature": signature
        }}}
    })
}

fn deposit_payload(amount: u128, max: u128) -> Value {
    let signature = deposit_signature(&payer(), &config(), amount, NOW + 300, SALT);
    deposit_payload_with(amount, max, NOW + 300, signature)
}

fn view(charged: Option<u128>, balance: u128, total_claimed: u128) -> ChannelView {
    ChannelView {
        charged_cumulative: charged,
        balance,
        total_claimed,
    }
}

fn verify(payload: &Value, view: &ChannelView) -> Result<CheckedVoucher, BatchError> {
    verify_batch_voucher(&BatchPayload::from_json(payload)?, &offer(), view, NOW)
}

fn verify_err(payload: &Value, view: &ChannelView) -> BatchError {
    verify(payload, view).expect_err("should be refused")
}

#[test]
fn voucher_on_a_known_channel_passes() {
    let checked = verify(
        &voucher_payload(&config(), 4000),
        &view(Some(3000), 10_000, 1000),
    )
    .unwrap();
    assert_eq!(checked.payer, payer().address());
    assert_eq!(
        checked.channel_id,
        ChannelDomain::new(CHAIN).channel_id(&config())
    );
    assert_eq!(
        (checked.max_claimable, checked.charged_before),
        (4000, 3000)
    );
    assert!(checked.deposit.is_none());
    assert_eq!(
        charge(checked.charged_before, 1000, checked.max_claimable).unwrap(),
        4000
    );
}

#[test]
fn without_a_record_the_base_is_the_claimed_total() {
    let checked = verify(&voucher_payload(&config(), 3000), &view(None, 10_000, 2000)).unwrap();
    assert_eq!(checked.charged_before, 2000);
}

#[test]
fn first_deposit_passes_and_keeps_the_authorization() {
    let checked = verify(&deposit_payload(10_000, 1000), &view(None, 0, 0)).unwrap();
    let deposit = checked.deposit.unwrap();
    assert_eq!(
        (deposit.amount, deposit.salt, deposit.valid_before),
        (10_000, SALT, U256::from(NOW + 300))
    );
    assert_eq!(deposit.signature.len(), 65);
}

#[test]
fn refund_voucher_charges_nothing() {
    let mut payload = voucher_payload(&config(), 3000);
    payload["type"] = json!("refund");
    let checked = verify(&payload, &view(Some(3000), 10_000, 0)).unwrap();
    assert_eq!(checked.charged_before, 3000);
}

#[test]
fn config_mismatches_are_refused() {
    let other = address!("90F79bf6EB2c4f870365E785982E1f101E93b906");
    type Mutate = fn(&mut ChannelConfig, Address);
    let cases: [(Mutate, x402::ReasonCode); 3] = [
        (
            |c, a| c.receiver = a,
            x402::ReasonCode::InvalidBatchSettlementEvmReceiverMismatch,
        ),
        (
            |c, a| c.receiverAuthorizer = a,
            x402::ReasonCode::InvalidBatchSettlementEvmReceiverAuthorizerMismatch,
        ),
        (
            |c, a| c.token = a,
            x402::ReasonCode::InvalidBatchSettlementEvmTokenMismatch,
        ),
    ];
    for (mutate, reason) in cases {
        let mut config = config();
        mutate(&mut config, other);
        assert_eq!(
            verify_err(&voucher_payload(&config, 1000), &view(None, 10_000, 0)).reason(),
            reason
        );
    }
}

#[test]
fn withdraw_delay_must_match_and_be_in_range() {
    let mut config = config();
    config.withdrawDelay = 1000;
    let error = verify_err(&voucher_payload(&config, 1000), &view(None, 10_000, 0));
    assert!(
        matches!(
            error,
            BatchError::WithdrawDelayMismatch {
                got: 1000,
                want: 900
            }
        ),
        "{error}"
    );
    config.withdrawDelay = 60;
    let error = verify_err(&voucher_payload(&config, 1000), &view(None, 10_000, 0));
    assert!(
        matches!(error, BatchError::WithdrawDelayOutOfRange(60)),
        "{error}"
    );
}

#[test]
fn smart_wallet_vouchers_are_refused() {
    let mut config = config();
    config.payerAuthorizer = Address::ZERO;
    let error = verify_err(&voucher_payload(&config, 1000), &view(None, 10_000, 0));
    assert!(matches!(error, BatchError::SmartWalletVoucher), "{error}");
    assert!(error.to_string().contains("ERC-1271"));
}

#[test]
fn channel_id_must_be_the_configs_and_hex_case_does_not_matter() {
    let mut payload = voucher_payload(&config(), 1000);
    let upper = payload["voucher"]["channelId"]
        .as_str()
        .unwrap()
        .to_uppercase()
        .replacen("0X", "0x", 1);
    payload["voucher"]["channelId"] = json!(upper);
    assert!(verify(&payload, &view(None, 10_000, 0)).is_ok());
    payload["voucher"]["channelId"] = json!(B256::repeat_byte(7).to_string());
    let error = verify_err(&payload, &view(None, 10_000, 0));
    assert!(
        matches!(error, BatchError::ChannelIdMismatch { .. }),
        "{error}"
    );
}

#[test]
fn voucher_signed_by_someone_else_is_refused() {
    let mut payload = voucher_payload(&config(), 1000);
    let id = ChannelDomain::new(CHAIN).channel_id(&config());
    payload["voucher"]["signature"] = json!(sign_voucher(&stranger(), id, 1000));
    let error = verify_err(&payload, &view(None, 10_000, 0));
    assert!(
        matches!(error, BatchError::VoucherSignatureMismatch { .. }),
        "{error}"
    );
    assert_eq!(
        error.reason().as_str(),
        "invalid_batch_settlement_evm_voucher_signature"
    );
}

#[test]
fn malformed_and_high_s_voucher_signatures_are_refused() {
    let payload = voucher_payload(&config(), 1000);
    let good = payload["voucher"]["signature"].as_str().unwrap().to_owned();
    let signature: Signature = good.parse().unwrap();
    let high_s = Signature::new(signature.r(), secp256k1_n() - signature.s(), !signature.v());
    let bad_v = format!("{}05", &good[..130]);
    let short = good[..130].to_owned();
    for bad in [hex_sig(&high_s), short, bad_v] {
        let mut payload = payload.clone();
        payload["voucher"]["signature"] = json!(bad);
        let error = verify_err(&payload, &view(None, 10_000, 0));
        assert!(
            matches!(
                error,
                BatchError::VoucherSignatureMalformed(_) | BatchError::Payload(_)
            ),
            "{error}"
        );
    }
}

fn secp256k1_n() -> U256 {
    U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .unwrap()
}

#[test]
fn cumulative_mismatch_is_corrective() {
    let error = verify_err(
        &voucher_payload(&config(), 2000),
        &view(Some(3000), 10_000, 0),
    );
    assert!(
        matches!(
            error,
            BatchError::CumulativeMismatch {
                signed: 2000,
                expected: 4000
            }
        ),
        "{error}"
    );
    assert!(error.is_corrective());
    assert_eq!(
        error.reason().as_str(),
        "invalid_batch_settlement_evm_cumulative_amount_mismatch"
    );
}

#[test]
fn cumulative_at_or_below_claimed_is_corrective() {
    let error = verify_err(
        &voucher_payload(&config(), 2000),
        &view(Some(1000), 10_000, 2000),
    );
    assert!(
        matches!(
            error,
            BatchError::CumulativeBelowClaimed {
                signed: 2000,
                total_claimed: 2000
            }
        ),
        "{error}"
    );
    assert!(error.is_corrective());
    assert_eq!(
        error.reason().as_str(),
        "invalid_batch_settlement_evm_cumulative_below_claimed"
    );
}

#[test]
fn an_unsigned_payload_cannot_fish_for_the_cumulative() {
    let mut payload = voucher_payload(&config(), 2000);
    payload["voucher"]["signature"] = json!(format!("0x{}", "11".repeat(65)));
    let error = verify_err(&payload, &view(Some(3000), 10_000, 0));
    assert!(!error.is_corrective(), "{error}");
}

#[test]
fn voucher_above_balance_is_refused_not_corrective() {
    let error = verify_err(
        &voucher_payload(&config(), 4000),
        &view(Some(3000), 3500, 0),
    );
    assert!(
        matches!(
            error,
            BatchError::CumulativeExceedsBalance {
                signed: 4000,
                balance: 3500
            }
        ),
        "{error}"
    );
    assert!(!error.is_corrective());
    assert!(!BatchError::ChannelBusy.is_corrective());
    assert_eq!(
        BatchError::ChannelBusy.reason().as_str(),
        "invalid_batch_settlement_evm_channel_busy"
    );
}

#[test]
fn deposit_counts_towards_the_balance() {
    assert!(verify(&deposit_payload(1000, 4000), &view(Some(3000), 3000, 0)).is_ok());
    let error = verify_err(&deposit_payload(500, 4000), &view(Some(3000), 3000, 0));
    assert!(
        matches!(
            error,
            BatchError::CumulativeExceedsBalance {
                signed: 4000,
                balance: 3500
            }
        ),
        "{error}"
    );
}

#[test]
fn deposit_below_the_enforced_minimum_is_refused() {
    let payload = BatchPayload::from_json(&deposit_payload(5000, 1000)).unwrap();
    let offer = BatchOffer {
        enforced_min_deposit: Some(10_000),
        ..offer()
    };
    let error = verify_batch_voucher(&payload, &offer, &view(None, 0, 0), NOW).unwrap_err();
    assert!(
        matches!(
            error,
            BatchError::DepositBelowMin {
                amount: 5000,
                min: 10_000
            }
        ),
        "{error}"
    );
}

#[test]
fn deposit_time_window_is_checked() {
    let soon = NOW + 5;
    let payload = deposit_payload_with(
        10_000,
        1000,
        soon,
        deposit_signature(&payer(), &config(), 10_000, soon, SALT),
    );
    let error = verify_err(&payload, &view(None, 0, 0));
    assert!(
        matches!(error, BatchError::DepositExpired { .. }),
        "{error}"
    );
    let mut payload = deposit_payload(10_000, 1000);
    payload["deposit"]["authorization"]["erc3009Authorization"]["validAfter"] =
        json!((NOW + 10).to_string());
    let error = verify_err(&payload, &view(None, 0, 0));
    assert!(
        matches!(error, BatchError::DepositNotYetValid { .. }),
        "{error}"
    );
}

#[test]
fn deposit_authorization_must_be_the_payers_for_this_channel() {
    let by_stranger = deposit_signature(&stranger(), &config(), 10_000, NOW + 300, SALT);
    let other_salt =
        deposit_signature(&payer(), &config(), 10_000, NOW + 300, B256::repeat_byte(2));
    for signature in [by_stranger, other_salt] {
        let error = verify_err(
            &deposit_payload_with(10_000, 1000, NOW + 300, signature),
            &view(None, 0, 0),
        );
        assert!(
            matches!(error, BatchError::DepositSignatureMismatch { .. }),
            "{error}"
        );
        assert_eq!(
            error.reason().as_str(),
            "invalid_batch_settlement_evm_receive_authorization_signature"
        );
    }
}

#[test]
fn erc6492_and_permit2_deposits_are_refused_clearly() {
    let wrapped = format!(
        "{}{}",
        deposit_signature(&payer(), &config(), 10_000, NOW + 300, SALT),
        "ab".repeat(64)
    );
    let error = verify_err(
        &deposit_payload_with(10_000, 1000, NOW + 300, wrapped),
        &view(None, 0, 0),
    );
    assert!(
        matches!(error, BatchError::DepositSignatureErc6492(129)),
        "{error}"
    );
    let mut payload = deposit_payload(10_000, 1000);
    payload["deposit"]["authorization"] = json!({"permit2Authorization": {"nonce": "1"}});
    let error = verify_err(&payload, &view(None, 0, 0));
    assert!(matches!(error, BatchError::Permit2NotSupported), "{error}");
    assert!(error.to_string().contains("not supported"));
}

#[test]
fn charge_stays_within_the_signed_ceiling() {
    assert_eq!(charge(3000, 1000, 4000).unwrap(), 4000);
    assert!(matches!(
        charge(3000, 1001, 4000),
        Err(BatchError::ChargeExceedsSigned { .. })
    ));
    assert!(charge(u128::MAX, 1, u128::MAX).is_err());
}

#[test]
fn payload_shape_is_checked() {
    let mut payload = voucher_payload(&config(), 1000);
    payload["type"] = json!("close");
    assert!(matches!(
        BatchPayload::from_json(&payload),
        Err(BatchError::PayloadType(_))
    ));
    let mut payload = voucher_payload(&config(), 1000);
    payload["type"] = json!("deposit");
    assert!(matches!(
        BatchPayload::from_json(&payload),
        Err(BatchError::Payload(_))
    ));
    let mut payload = voucher_payload(&config(), 1000);
    payload["channelConfig"]["payer"] = json!("0x1234");
    assert!(matches!(
        BatchPayload::from_json(&payload),
        Err(BatchError::Payload(_))
    ));
    let mut payload = voucher_payload(&config(), 1000);
    payload["voucher"]["maxClaimableAmount"] = json!("-1");
    assert!(matches!(
        BatchPayload::from_json(&payload),
        Err(BatchError::Payload(_))
    ));
    let mut payload = voucher_payload(&config(), 1000);
    payload["channelConfig"]["withdrawDelay"] = json!("900");
    let parsed = BatchPayload::from_json(&payload).unwrap();
    assert_eq!(
        (parsed.kind(), parsed.channel_config()),
        (PayloadKind::Voucher, &config())
    );
}

#[test]
fn selectors_match_the_canonical_escrow() {
    let selector = |data: Bytes| hex::encode(&data[..4]);
    let row = calldata::claim_row(&config(), 2000, &[0u8; 65], 2000);
    assert_eq!(selector(calldata::claim(vec![row.clone()])), "29237b0c");
    assert_eq!(selector(calldata::claim_with_signature(vec![row], &[0u8; 65])), "e43ce1f2");
    assert_eq!(selector(calldata::settle(PAY_TO, USDC)), "9db32a8f");
    assert_eq!(selector(calldata::multicall(vec![])), "ac9650d8");
    assert_eq!(selector(calldata::channels(B256::ZERO)), "7a7ebd7b");
    assert_eq!(
        selector(calldata::pending_withdrawals(B256::ZERO)),
        "b7f06ebe"
    );
    assert_eq!(selector(calldata::refund_nonce(B256::ZERO)), "f0dc792e");
    let checked = verify(&deposit_payload(10_000, 1000), &view(None, 0, 0)).unwrap();
    let deposit = checked.deposit.unwrap();
    assert_eq!(
        selector(calldata::deposit(&checked.config, &deposit)),
        "140f1e75"
    );
}

#[test]
fn views_decode() {
    let out: Bytes =
        alloy_sol_types::SolValue::abi_encode(&(U256::from(5000u64), U256::from(2000u64))).into();
    assert_eq!(calldata::decode_channels(&out).unwrap(), (5000, 2000));
    let out: Bytes =
        alloy_sol_types::SolValue::abi_encode(&(U256::from(700u64), U256::from(NOW))).into();
    assert_eq!(
        calldata::decode_pending_withdrawals(&out).unwrap(),
        (700, NOW)
    );
    assert!(calldata::decode_channels(&Bytes::from_static(&[1, 2])).is_err());
}

#[test]
fn event_topics_match_the_canonical_escrow_and_decode() {
    assert_eq!(
        Escrow::Deposited::SIGNATURE_HASH,
        b256!("6c2a09353b5e75e70d0b9778b80a413809bb235d46c211811c474b3346791d89")
    );
    assert_eq!(
        Escrow::Claimed::SIGNATURE_HASH,
        b256!("36bd546bb573e8921fdbfd934bbed62d872796b01792cd240cce27f79dd3eddd")
    );
    assert_eq!(
        Escrow::Settled::SIGNATURE_HASH,
        b256!("7337b4386b690fdb8ba66905b92b9d45d33bc6626ee2620c905fb150ec0cc47d")
    );
    assert_eq!(
        Escrow::WithdrawInitiated::SIGNATURE_HASH,
        b256!("e4280d0d903c7f258f62b07c62f262377cbaa23f7791d78126e6446e0f0e3c23")
    );
    assert_eq!(
        Escrow::ChannelCreated::SIGNATURE_HASH,
        b256!("69d8248d5566bdb2ebc4d218970710d8378a2ff9b709a999e052b71970f808fa")
    );
    let id = B256::repeat_byte(9);
    let log: LogData = Escrow::Deposited {
        channelId: id,
        sender: PAY_TO,
        amount: 10,
        newBalance: 30,
    }
    .encode_log_data();
    assert_eq!(
        calldata::decode_event(&log),
        Some(BatchEvent::Deposited {
            channel_id: id,
            sender: PAY_TO,
            amount: 10,
            new_balance: 30
        })
    );
    let log = Escrow::ChannelCreated {
        channelId: id,
        config: config().to_sol(),
    }
    .encode_log_data();
    assert_eq!(
        calldata::decode_event(&log),
        Some(BatchEvent::ChannelCreated {
            channel_id: id,
            config: config()
        })
    );
    let log = Escrow::WithdrawInitiated {
        channelId: id,
        amount: 5,
        finalizeAfter: aliases::U40::from(NOW),
    }
    .encode_log_data();
    assert_eq!(
        calldata::decode_event(&log),
        Some(BatchEvent::WithdrawInitiated {
            channel_id: id,
            amount: 5,
            finalize_after: NOW
        })
    );
    assert_eq!(
        calldata::decode_event(&LogData::new_unchecked(vec![B256::ZERO], Bytes::new())),
        None
    );
}

fn snapshot() -> ChannelSnapshot {
    ChannelSnapshot {
        channel_id: B256::repeat_byte(0xab),
        balance: 10_000,
        total_claimed: 1000,
        withdraw_requested_at: 0,
        refund_nonce: 2,
        charged_cumulative: 4000,
    }
}

#[test]
fn settle_extra_has_the_official_shape() {
    let extra = response::settle_extra(&snapshot(), Some(1000));
    let expected = json!({
        "channelState": {
            "channelId": format!("0x{}", "ab".repeat(32)), "balance": "10000", "totalClaimed": "1000",
            "withdrawRequestedAt": 0, "refundNonce": "2", "chargedCumulativeAmount": "4000"
        },
        "chargedAmount": "1000"
    });
    assert_eq!(serde_json::to_string(&extra).unwrap(), expected.to_string());
    assert!(!response::settle_extra(&snapshot(), None).contains_key("chargedAmount"));
}

#[test]
fn corrective_extra_carries_the_last_voucher() {
    let signature: Signature = voucher_json(&config(), 4000)["signature"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("name".into(), json!("USDC"));
    response::corrective_extra(&mut extra, &snapshot(), Some((4000, &signature)));
    assert_eq!(extra["voucherState"]["signedMaxClaimable"], json!("4000"));
    assert_eq!(
        extra["voucherState"]["signature"],
        json!(hex_sig(&signature))
    );
    assert_eq!(
        extra["channelState"]["chargedCumulativeAmount"],
        json!("4000")
    );
    let mut bare = serde_json::Map::new();
    response::corrective_extra(&mut bare, &snapshot(), None);
    assert!(!bare.contains_key("voucherState"));
}

#[test]
fn payment_requirements_have_the_official_shape() {
    let entry =
        serde_json::to_string(&response::payment_requirements(&offer(), 300, 10_000)).unwrap();
    let expected = json!({
        "scheme": "batch-settlement", "network": "eip155:84532", "amount": "1000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "payTo": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2", "receiverAuthorizer": "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
                  "withdrawDelay": 900, "minDeposit": "10000"}
    });
    assert_eq!(entry, expected.to_string());
}

/// The ClaimBatch digest of the official package's types (`claimBatchTypes` and
/// `BATCH_SETTLEMENT_DOMAIN` of @x402/evm, hashed with viem): the same entries give the same
/// value in tests/e2e/devnet-batch-settlement.test.mjs.
#[test]
fn the_claim_batch_digest_is_the_official_one() {
    let entries = [(B256::repeat_byte(0x11), 2000, 1500), (B256::repeat_byte(0x22), 5000, 5000)];
    assert_eq!(
        ChannelDomain::new(84532).claim_batch_hash(&entries).to_string(),
        "0x3c79a54b3a7c79080cd8c5944e8126f7c9b4037577786111133001b1b8a87a11"
    );
}
