use super::*;
use alloy_primitives::address;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const PAY_TO: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
const USDC: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");

fn payer() -> PrivateKeySigner {
    // anvil account 2
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a".parse().unwrap()
}

fn requirement() -> ExactEvmRequirement {
    ExactEvmRequirement {
        network: "eip155:84532".into(),
        v1_network: Some("base-sepolia"),
        domain: TokenDomain::new("USDC", "2", 84532, USDC),
        pay_to: PAY_TO,
        amount: U256::from(1000u64),
        max_timeout_seconds: 300,
        wire: json!({
            "scheme": "exact", "network": "eip155:84532", "amount": "1000",
            "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None),
            "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}
        }),
    }
}

fn authorization(signer: &PrivateKeySigner) -> ExactEvmAuthorization {
    ExactEvmAuthorization {
        from: signer.address().to_checksum(None),
        to: PAY_TO.to_checksum(None),
        value: "1000".into(),
        valid_after: (NOW - 600).to_string(),
        valid_before: (NOW + 300).to_string(),
        nonce: "0x0101010101010101010101010101010101010101010101010101010101010101".into(),
    }
}

fn sign_with(signer: &PrivateKeySigner, domain: &TokenDomain, raw: &ExactEvmAuthorization) -> String {
    let digest = domain.signing_hash(&parse_authorization(raw).unwrap().message());
    let signature = signer.sign_hash_sync(&digest).unwrap();
    format!("0x{}", hex::encode(signature.as_bytes()))
}

fn signed(raw: ExactEvmAuthorization) -> ExactEvmPayload {
    let signature = sign_with(&payer(), &requirement().domain, &raw);
    ExactEvmPayload { signature, authorization: raw }
}

fn v2_payment(payload: &ExactEvmPayload) -> v2::PaymentPayload {
    v2::PaymentPayload {
        x402_version: json!(2),
        resource: None,
        accepted: requirement().wire,
        payload: serde_json::to_value(payload).unwrap(),
        extensions: None,
    }
}

fn check(payload: &ExactEvmPayload) -> Result<VerifiedPayment, VerifyError> {
    verify_v2(&v2_payment(payload), &[requirement()], &VerifyPolicy::default(), NOW)
}

#[test]
fn a_valid_v2_payment_verifies() {
    let verified = check(&signed(authorization(&payer()))).unwrap();
    assert_eq!(verified.authorization.from, payer().address());
    assert_eq!(verified.requirement_index, 0);
}

#[test]
fn a_valid_v1_payment_verifies() {
    let payment = v1::PaymentPayload {
        x402_version: json!(1),
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        payload: serde_json::to_value(signed(authorization(&payer()))).unwrap(),
    };
    assert!(verify_v1(&payment, &[requirement()], &VerifyPolicy::default(), NOW).is_ok());
    let wrong_network = v1::PaymentPayload { network: "base".into(), ..payment };
    let err = verify_v1(&wrong_network, &[requirement()], &VerifyPolicy::default(), NOW).unwrap_err();
    assert_eq!(err.reason(), ReasonCode::InvalidExactEvmNetworkMismatch);
}

#[test]
fn recipient_must_be_pay_to() {
    let mut raw = authorization(&payer());
    raw.to = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into();
    assert_eq!(check(&signed(raw)).unwrap_err().reason(), ReasonCode::InvalidExactEvmRecipientMismatch);
}

#[test]
fn value_must_be_exact() {
    for value in ["999", "1001", "0"] {
        let mut raw = authorization(&payer());
        raw.value = value.into();
        assert_eq!(check(&signed(raw)).unwrap_err().reason(), ReasonCode::InvalidExactEvmAuthorizationValue);
    }
}

#[test]
fn not_yet_valid_is_refused() {
    let mut raw = authorization(&payer());
    raw.valid_after = (NOW + 1).to_string();
    assert_eq!(check(&signed(raw)).unwrap_err().reason(), ReasonCode::InvalidExactEvmValidAfter);
}

#[test]
fn expired_or_too_close_to_expiry_is_refused() {
    for valid_before in [NOW - 1, NOW + 29] {
        let mut raw = authorization(&payer());
        raw.valid_before = valid_before.to_string();
        assert_eq!(check(&signed(raw)).unwrap_err().reason(), ReasonCode::InvalidExactEvmValidBefore);
    }
}

#[test]
fn valid_before_beyond_max_timeout_plus_skew_is_refused() {
    let mut raw = authorization(&payer());
    raw.valid_before = (NOW + 300 + 60).to_string();
    assert!(check(&signed(raw.clone())).is_ok(), "at the bound");
    raw.valid_before = (NOW + 300 + 61).to_string();
    assert_eq!(check(&signed(raw)).unwrap_err().reason(), ReasonCode::InvalidExactEvmValidBefore);
}

#[test]
fn a_signature_by_someone_else_is_refused() {
    let raw = authorization(&payer());
    let other: PrivateKeySigner =
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6".parse().unwrap();
    let payload = ExactEvmPayload { signature: sign_with(&other, &requirement().domain, &raw), authorization: raw };
    assert!(matches!(check(&payload), Err(VerifyError::SignatureMismatch { .. })));
}

#[test]
fn a_signature_for_another_chain_or_token_name_is_refused() {
    let raw = authorization(&payer());
    for domain in [TokenDomain::new("USDC", "2", 8453, USDC), TokenDomain::new("USD Coin", "2", 84532, USDC)] {
        let payload = ExactEvmPayload { signature: sign_with(&payer(), &domain, &raw), authorization: raw.clone() };
        assert_eq!(check(&payload).unwrap_err().reason(), ReasonCode::InvalidExactEvmSignature);
    }
}

#[test]
fn high_s_signatures_are_refused() {
    let payload = signed(authorization(&payer()));
    let sig = Signature::from_raw(&hex::decode(&payload.signature).unwrap()).unwrap();
    let n = U256::from_str_radix("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16).unwrap();
    let high = Signature::new(sig.r(), n - sig.s(), !sig.v());
    let payload = ExactEvmPayload { signature: format!("0x{}", hex::encode(high.as_bytes())), ..payload };
    assert_eq!(check(&payload).unwrap_err(), VerifyError::SignatureHighS);
}

#[test]
fn malformed_signatures_are_refused() {
    let good = signed(authorization(&payer()));
    let cases = [
        (format!("{}00", good.signature), "length"),
        (good.signature[..good.signature.len() - 2].to_owned() + "05", "v"),
        ("0xzz".to_owned(), "hex"),
        (good.signature.trim_start_matches("0x").to_owned(), "prefix"),
    ];
    for (signature, what) in cases {
        let payload = ExactEvmPayload { signature, authorization: good.authorization.clone() };
        assert_eq!(check(&payload).unwrap_err().reason(), ReasonCode::InvalidExactEvmSignature, "{what}");
    }
}

#[test]
fn accepted_must_equal_an_offer() {
    let payload = signed(authorization(&payer()));
    let mut payment = v2_payment(&payload);
    payment.accepted["amount"] = json!("1");
    let err = verify_v2(&payment, &[requirement()], &VerifyPolicy::default(), NOW).unwrap_err();
    assert_eq!(err.reason(), ReasonCode::InvalidPaymentRequirements);
    payment.accepted = requirement().wire;
    payment.accepted["network"] = json!("eip155:1");
    let err = verify_v2(&payment, &[requirement()], &VerifyPolicy::default(), NOW).unwrap_err();
    assert_eq!(err.reason(), ReasonCode::InvalidExactEvmNetworkMismatch);
}

#[test]
fn accepted_key_order_does_not_matter() {
    let payload = signed(authorization(&payer()));
    let mut payment = v2_payment(&payload);
    let reordered: serde_json::Map<String, serde_json::Value> =
        payment.accepted.as_object().unwrap().clone().into_iter().rev().collect();
    payment.accepted = serde_json::Value::Object(reordered);
    assert!(verify_v2(&payment, &[requirement()], &VerifyPolicy::default(), NOW).is_ok());
}

#[test]
fn version_and_scheme_are_checked() {
    let payload = signed(authorization(&payer()));
    let mut payment = v2_payment(&payload);
    payment.x402_version = json!("2");
    assert_eq!(
        verify_v2(&payment, &[requirement()], &VerifyPolicy::default(), NOW).unwrap_err().reason(),
        ReasonCode::InvalidX402Version
    );
    let mut payment = v2_payment(&payload);
    payment.accepted["scheme"] = json!("upto");
    assert_eq!(
        verify_v2(&payment, &[requirement()], &VerifyPolicy::default(), NOW).unwrap_err().reason(),
        ReasonCode::UnsupportedScheme
    );
}

#[test]
fn malformed_authorization_fields_are_refused() {
    let base = authorization(&payer());
    let mut cases = Vec::new();
    let mut a = base.clone();
    a.from = "0x1234".into();
    cases.push(a);
    let mut a = base.clone();
    a.value = "1e3".into();
    cases.push(a);
    let mut a = base.clone();
    a.value = "-1".into();
    cases.push(a);
    let mut a = base.clone();
    a.valid_before = "9".repeat(79);
    cases.push(a);
    let mut a = base.clone();
    a.nonce = "0x01".into();
    cases.push(a);
    for raw in cases {
        let payload = ExactEvmPayload { signature: "0x00".into(), authorization: raw };
        assert_eq!(check(&payload).unwrap_err().reason(), ReasonCode::InvalidPayload);
    }
    let payment = v2::PaymentPayload { payload: json!({"signature": 5}), ..v2_payment(&signed(base)) };
    let err = verify_v2(&payment, &[requirement()], &VerifyPolicy::default(), NOW).unwrap_err();
    assert_eq!(err.reason(), ReasonCode::InvalidPayload);
}

/// The fuzz seed was signed by viem (the official clients' signer): our digest must agree.
#[test]
fn a_payment_signed_by_viem_verifies() {
    let seed = include_str!("../../../fuzz/seeds/decode_verify/v2-valid");
    let payment: v2::PaymentPayload = x402::decode_header(seed.as_bytes(), 8192).unwrap();
    let mut requirement = requirement();
    requirement.wire = payment.accepted.clone();
    let verified = verify_v2(&payment, &[requirement], &VerifyPolicy::default(), 1_800_000_000).unwrap();
    assert_eq!(verified.authorization.from, payer().address());
}

#[test]
fn the_cheap_checks_leave_a_forged_signature_to_recovery() {
    let forger: PrivateKeySigner = PrivateKeySigner::random();
    let raw = authorization(&payer());
    let forged = ExactEvmPayload { signature: sign_with(&forger, &requirement().domain, &raw), authorization: raw };
    let checked = check_v2(&v2_payment(&forged), &[requirement()], &VerifyPolicy::default(), NOW).unwrap();
    let err = checked.recover_signer().unwrap_err();
    assert!(matches!(err, VerifyError::SignatureMismatch { recovered, from } if recovered == forger.address() && from == payer().address()));
    // A mismatch the cheap checks can see never reaches recovery.
    let mut late = authorization(&payer());
    late.valid_before = (NOW + 5).to_string();
    assert!(matches!(check_v2(&v2_payment(&signed(late)), &[requirement()], &VerifyPolicy::default(), NOW), Err(VerifyError::ExpiresTooSoon { .. })));
}

#[test]
fn v1_recovery_picks_the_offer_whose_domain_was_signed() {
    let other_token = address!("1111111111111111111111111111111111111111");
    let mut second = requirement();
    second.domain = TokenDomain::new("USDC", "2", 84532, other_token);
    let raw = authorization(&payer());
    let payload = ExactEvmPayload { signature: sign_with(&payer(), &second.domain, &raw), authorization: raw };
    let payment = v1::PaymentPayload {
        x402_version: json!(1),
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        payload: serde_json::to_value(&payload).unwrap(),
    };
    let verified = verify_v1(&payment, &[requirement(), second], &VerifyPolicy::default(), NOW).unwrap();
    assert_eq!(verified.requirement_index, 1);
}
