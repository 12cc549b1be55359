//! Cross-implementation check of `batch-settlement`: channel ids, voucher and deposit
//! digests, the client's own deposit and voucher payloads (verified end to end) and the
//! escrow calldata, against vectors the official `@x402/evm` client and viem produced
//! (`tests/vectors/batch-settlement.mjs` → `tests/vectors/batch-settlement.json`).

use alloy_primitives::{hex, Address, Bytes, B256, U256};
use serde_json::Value;
use x402_evm::batch_settlement::{
    calldata, signing_hash, verify::deposit_nonce, verify_batch_voucher, BatchOffer, BatchPayload,
    ChannelDomain, ChannelView, PayloadKind, ReceiveWithAuthorization, DEPOSIT_COLLECTOR,
};
use x402_evm::TokenDomain;

fn vectors() -> Vec<Value> {
    let raw = include_str!("vectors/batch-settlement.json");
    let parsed: Value = serde_json::from_str(raw).expect("vectors are JSON");
    parsed["cases"].as_array().expect("cases").clone()
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, key| &v[*key])
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is a string"))
}

fn parsed<T: std::str::FromStr>(v: &Value, path: &[&str]) -> T
where
    T::Err: std::fmt::Debug,
{
    str_of(v, path).parse().expect("parses")
}

fn bytes(v: &Value, path: &[&str]) -> Bytes {
    hex::decode(str_of(v, path)).expect("hex").into()
}

fn offer(case: &Value) -> BatchOffer {
    let chain_id = case["chainId"].as_u64().expect("chainId");
    let req = &case["requirements"];
    let token: Address = parsed(req, &["asset"]);
    BatchOffer {
        channel_domain: ChannelDomain::new(chain_id),
        token: TokenDomain::new(
            str_of(case, &["tokenName"]),
            str_of(case, &["tokenVersion"]),
            chain_id,
            token,
        ),
        pay_to: parsed(req, &["payTo"]),
        receiver_authorizer: parsed(req, &["extra", "receiverAuthorizer"]),
        withdraw_delay: req["extra"]["withdrawDelay"]
            .as_u64()
            .expect("withdrawDelay"),
        price: parsed(req, &["amount"]),
        enforced_min_deposit: Some(parsed(req, &["extra", "minDeposit"])),
    }
}

#[test]
fn channel_ids_and_digests_match_the_official_client() {
    for case in vectors() {
        let offer = offer(&case);
        let payload =
            BatchPayload::from_json(&case["depositPayload"]).expect("deposit payload parses");
        let channel_id: B256 = parsed(&case, &["channelId"]);
        assert_eq!(
            offer.channel_domain.channel_id(payload.channel_config()),
            channel_id,
            "{}",
            case["name"]
        );
        let max: u128 = parsed(&case, &["depositPayload", "voucher", "maxClaimableAmount"]);
        assert_eq!(
            offer.channel_domain.voucher_hash(channel_id, max),
            parsed::<B256>(&case, &["voucherDigest"])
        );
        let auth = &case["depositPayload"]["deposit"]["authorization"]["erc3009Authorization"];
        let salt = B256::from(
            U256::from_str_radix(str_of(auth, &["salt"]).trim_start_matches("0x"), 16)
                .expect("salt"),
        );
        let nonce = deposit_nonce(channel_id, salt);
        assert_eq!(nonce, parsed::<B256>(&case, &["depositNonce"]));
        let message = ReceiveWithAuthorization {
            from: payload.channel_config().payer,
            to: DEPOSIT_COLLECTOR,
            value: parsed(&case, &["depositPayload", "deposit", "amount"]),
            validAfter: parsed(auth, &["validAfter"]),
            validBefore: parsed(auth, &["validBefore"]),
            nonce,
        };
        assert_eq!(
            signing_hash(offer.token.separator(), &message),
            parsed::<B256>(&case, &["depositDigest"])
        );
    }
}

#[test]
fn the_official_clients_deposit_and_next_voucher_verify() {
    for case in vectors() {
        let offer = offer(&case);
        let now = case["now"].as_u64().expect("now");
        let deposit = BatchPayload::from_json(&case["depositPayload"]).expect("parses");
        assert_eq!(deposit.kind(), PayloadKind::Deposit);
        // The gateway has charged everything before this request; nothing is deposited yet.
        let charged = deposit.voucher().max_claimable - offer.price;
        let before = ChannelView {
            charged_cumulative: Some(charged),
            balance: 0,
            total_claimed: 0,
        };
        let checked =
            verify_batch_voucher(&deposit, &offer, &before, now).expect("deposit verifies");
        let amount = checked.deposit.as_ref().expect("deposit").amount;
        assert_eq!(
            calldata::deposit(&checked.config, checked.deposit.as_ref().expect("deposit")),
            bytes(&case, &["calldata", "deposit"])
        );

        let view = ChannelView {
            charged_cumulative: Some(checked.max_claimable),
            balance: amount,
            total_claimed: charged,
        };
        let voucher = BatchPayload::from_json(&case["voucherPayload"]).expect("parses");
        let next = verify_batch_voucher(&voucher, &offer, &view, now).expect("voucher verifies");
        assert_eq!(next.charged_before, checked.max_claimable);

        let signature = bytes(&case, &["voucherPayload", "voucher", "signature"]);
        let row = calldata::claim_row(
            &next.config,
            next.max_claimable,
            &signature,
            next.max_claimable,
        );
        let claim = calldata::claim(vec![row]);
        assert_eq!(claim, bytes(&case, &["calldata", "claim"]));
        let settle = calldata::settle(next.config.receiver, next.config.token);
        assert_eq!(settle, bytes(&case, &["calldata", "settle"]));
        assert_eq!(
            calldata::multicall(vec![claim, settle]),
            bytes(&case, &["calldata", "multicall"])
        );
    }
}
