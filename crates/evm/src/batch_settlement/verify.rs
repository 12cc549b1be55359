//! Local verification of a `batch-settlement` payment, with no network call.
//!
//! Order: channel config against the offer → channel id → voucher signature → deposit
//! authorization (deposits) → cumulative → balance. Cheap checks come first; the
//! cumulative is checked only after every signature, so an unsigned payload cannot fish
//! for the gateway's channel state through the corrective 402.

use super::config::ChannelConfig;
use super::error::BatchError;
use super::payload::{BatchPayload, DepositAuthorization, DepositPayload, PayloadKind};
use super::types::ReceiveWithAuthorization;
use super::{
    signing_hash, BatchOffer, ChannelView, DEPOSIT_COLLECTOR, MAX_WITHDRAW_DELAY,
    MIN_WITHDRAW_DELAY,
};
use alloy_primitives::{keccak256, Address, Bytes, Signature, B256, U256};

/// A deposit authorization must stay valid at least this long, so the deposit can land
/// (the official facilitator's margin).
pub const DEPOSIT_VALID_BEFORE_MARGIN_SECS: u64 = 6;

/// An ERC-3009 deposit authorization whose signature recovered to the payer.
#[derive(Debug, Clone)]
pub struct CheckedDeposit {
    pub amount: u128,
    pub valid_after: U256,
    pub valid_before: U256,
    pub salt: B256,
    /// As sent (65 bytes r‖s‖v): forwarded verbatim in the collector data.
    pub signature: Bytes,
}

/// A payment that passed every local check.
#[derive(Debug, Clone)]
pub struct CheckedVoucher {
    pub payer: Address,
    pub channel_id: B256,
    pub config: ChannelConfig,
    pub max_claimable: u128,
    pub signature: Signature,
    /// The cumulative the voucher was checked against: the gateway's charged cumulative,
    /// or the on-chain claimed total when the gateway has no record of the channel.
    pub charged_before: u128,
    pub deposit: Option<CheckedDeposit>,
}

/// Verifies a deposit, voucher or refund payload against the offer and the channel view.
pub fn verify_batch_voucher(
    payload: &BatchPayload,
    offer: &BatchOffer,
    view: &ChannelView,
    now_unix: u64,
) -> Result<CheckedVoucher, BatchError> {
    let config = payload.channel_config();
    check_config(config, offer)?;
    let channel_id = check_channel_id(payload, offer)?;
    let voucher = payload.voucher();
    let signature =
        parse_signature(&voucher.signature).map_err(BatchError::VoucherSignatureMalformed)?;
    let digest = offer
        .channel_domain
        .voucher_hash(channel_id, voucher.max_claimable);
    let recovered = recover(&signature, &digest).map_err(BatchError::VoucherSignatureMalformed)?;
    if recovered != config.payerAuthorizer {
        return Err(BatchError::VoucherSignatureMismatch {
            recovered,
            expected: config.payerAuthorizer,
        });
    }
    let deposit = match payload.deposit() {
        Some(deposit) => Some(check_deposit(deposit, config, channel_id, offer, now_unix)?),
        None => None,
    };
    let charged_before =
        check_cumulative(payload.kind(), voucher.max_claimable, offer.price, view)?;
    check_balance(voucher.max_claimable, view.balance, deposit.as_ref())?;
    Ok(CheckedVoucher {
        payer: config.payer,
        channel_id,
        config: config.clone(),
        max_claimable: voucher.max_claimable,
        signature,
        charged_before,
        deposit,
    })
}

/// The charged cumulative after this request: `charged_before + price`, which must stay
/// within what the payer signed.
pub fn charge(charged_before: u128, price: u128, max_claimable: u128) -> Result<u128, BatchError> {
    charged_before
        .checked_add(price)
        .filter(|charged| *charged <= max_claimable)
        .ok_or(BatchError::ChargeExceedsSigned {
            charged_before,
            price,
            max_claimable,
        })
}

/// The config must be the one this offer implies, or the payment goes to another channel.
fn check_config(config: &ChannelConfig, offer: &BatchOffer) -> Result<(), BatchError> {
    if config.payer.is_zero() {
        return Err(BatchError::ZeroPayer);
    }
    if config.receiver != offer.pay_to {
        return Err(BatchError::ReceiverMismatch {
            got: config.receiver,
            want: offer.pay_to,
        });
    }
    if config.receiverAuthorizer != offer.receiver_authorizer {
        return Err(BatchError::ReceiverAuthorizerMismatch {
            got: config.receiverAuthorizer,
            want: offer.receiver_authorizer,
        });
    }
    if config.token != offer.token.verifying_contract {
        return Err(BatchError::TokenMismatch {
            got: config.token,
            want: offer.token.verifying_contract,
        });
    }
    if !(MIN_WITHDRAW_DELAY..=MAX_WITHDRAW_DELAY).contains(&config.withdrawDelay) {
        return Err(BatchError::WithdrawDelayOutOfRange(config.withdrawDelay));
    }
    if config.withdrawDelay != offer.withdraw_delay {
        return Err(BatchError::WithdrawDelayMismatch {
            got: config.withdrawDelay,
            want: offer.withdraw_delay,
        });
    }
    if config.payerAuthorizer.is_zero() {
        return Err(BatchError::SmartWalletVoucher);
    }
    Ok(())
}

/// The voucher must name the channel its config hashes to (B256 compares bytes, so hex
/// case on the wire does not matter).
fn check_channel_id(payload: &BatchPayload, offer: &BatchOffer) -> Result<B256, BatchError> {
    let want = offer.channel_domain.channel_id(payload.channel_config());
    let got = payload.voucher().channel_id;
    if got != want {
        return Err(BatchError::ChannelIdMismatch { got, want });
    }
    Ok(want)
}

/// Checks an ERC-3009 deposit the way the escrow's collector will use it.
fn check_deposit(
    deposit: &DepositPayload,
    config: &ChannelConfig,
    channel_id: B256,
    offer: &BatchOffer,
    now: u64,
) -> Result<CheckedDeposit, BatchError> {
    let DepositAuthorization::Erc3009 {
        valid_after,
        valid_before,
        salt,
        signature,
    } = &deposit.authorization
    else {
        return Err(BatchError::Permit2NotSupported);
    };
    if let Some(min) = offer
        .enforced_min_deposit
        .filter(|min| deposit.amount < *min)
    {
        return Err(BatchError::DepositBelowMin {
            amount: deposit.amount,
            min,
        });
    }
    if *valid_after > U256::from(now) {
        return Err(BatchError::DepositNotYetValid {
            valid_after: *valid_after,
            now,
        });
    }
    let min = now.saturating_add(DEPOSIT_VALID_BEFORE_MARGIN_SECS);
    if *valid_before < U256::from(min) {
        return Err(BatchError::DepositExpired {
            valid_before: *valid_before,
            min,
        });
    }
    if signature.len() > 65 {
        return Err(BatchError::DepositSignatureErc6492(signature.len()));
    }
    let parsed = parse_signature(signature).map_err(BatchError::DepositSignatureMalformed)?;
    let message = ReceiveWithAuthorization {
        from: config.payer,
        to: DEPOSIT_COLLECTOR,
        value: U256::from(deposit.amount),
        validAfter: *valid_after,
        validBefore: *valid_before,
        nonce: deposit_nonce(channel_id, *salt),
    };
    let digest = signing_hash(offer.token.separator(), &message);
    let recovered = recover(&parsed, &digest).map_err(BatchError::DepositSignatureMalformed)?;
    if recovered != config.payer {
        return Err(BatchError::DepositSignatureMismatch {
            recovered,
            payer: config.payer,
        });
    }
    Ok(CheckedDeposit {
        amount: deposit.amount,
        valid_after: *valid_after,
        valid_before: *valid_before,
        salt: *salt,
        signature: signature.clone(),
    })
}

/// The ERC-3009 nonce of a deposit: keccak256(abi.encode(channelId, salt)), which binds the
/// authorization to one channel.
pub fn deposit_nonce(channel_id: B256, salt: B256) -> B256 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(channel_id.as_slice());
    buf[32..].copy_from_slice(salt.as_slice());
    keccak256(buf)
}

/// The voucher must be exactly the base plus the price (a refund: exactly the base), and
/// above what is already claimed on-chain. Returns the base.
fn check_cumulative(
    kind: PayloadKind,
    signed: u128,
    price: u128,
    view: &ChannelView,
) -> Result<u128, BatchError> {
    let base = view.charged_cumulative.unwrap_or(view.total_claimed);
    let below_claimed = match kind {
        PayloadKind::Refund => signed < view.total_claimed,
        PayloadKind::Deposit | PayloadKind::Voucher => signed <= view.total_claimed,
    };
    if below_claimed {
        return Err(BatchError::CumulativeBelowClaimed {
            signed,
            total_claimed: view.total_claimed,
        });
    }
    let charge = if kind == PayloadKind::Refund {
        0
    } else {
        price
    };
    let expected = base.saturating_add(charge);
    if signed != expected {
        return Err(BatchError::CumulativeMismatch { signed, expected });
    }
    Ok(base)
}

/// The ceiling must be covered by escrow: the on-chain balance, plus the deposit this
/// payload brings.
fn check_balance(
    signed: u128,
    balance: u128,
    deposit: Option<&CheckedDeposit>,
) -> Result<(), BatchError> {
    let available = balance.saturating_add(deposit.map_or(0, |d| d.amount));
    if signed > available {
        return Err(BatchError::CumulativeExceedsBalance {
            signed,
            balance: available,
        });
    }
    Ok(())
}

/// Parses a 65-byte r‖s‖v signature, refusing other lengths, odd `v` values and high `s`.
fn parse_signature(raw: &[u8]) -> Result<Signature, String> {
    let bytes: &[u8; 65] = raw
        .try_into()
        .map_err(|_| format!("{} bytes, expected 65", raw.len()))?;
    if !matches!(bytes[64], 0 | 1 | 27 | 28) {
        return Err(format!("v is {}, expected 27 or 28", bytes[64]));
    }
    let signature = Signature::from_raw_array(bytes).map_err(|e| e.to_string())?;
    if signature.normalize_s().is_some() {
        return Err("high s value (malleable); wallets sign with low s".into());
    }
    Ok(signature)
}

/// Recovery through libsecp256k1, as the `exact` verifier does.
fn recover(signature: &Signature, digest: &B256) -> Result<Address, String> {
    signature
        .recover_address_from_prehash(digest)
        .map_err(|e| e.to_string())
}
