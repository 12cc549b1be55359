//! What a payment looks like to the payer (`GET /.well-known/x402/receipts/{id}`) and to
//! the operator (`x402-gateway payments`): one JSON shape for both.

use serde_json::{json, Value};
use x402_store::{PaymentRecord, PaymentState};

/// A journaled payment as JSON: its state, and once settled the transaction hash.
pub fn receipt_json(record: &PaymentRecord) -> Value {
    let mut receipt = json!({
        "id": record.receipt_id,
        "state": record.state.name(),
        "network": record.item.network,
        "asset": record.item.asset,
        "payer": record.payer,
        "payTo": record.item.payload.authorization.to,
        "amount": record.amount,
        "route": record.route,
        "nonce": record.item.payload.authorization.nonce,
        "validBefore": record.item.valid_before,
        "acceptedAtMs": record.accepted_at_ms,
        "updatedAtMs": record.updated_at_ms,
        "attempts": record.attempts,
    });
    match &record.state {
        PaymentState::Submitted { transaction } | PaymentState::Settled { transaction } => {
            receipt["transaction"] = json!(transaction);
        }
        PaymentState::Failed { reason } => receipt["reason"] = json!(reason),
        PaymentState::Accepted => {}
    }
    receipt
}

/// The id part of a receipt path, if it has the shape of one (32 lower-case hex digits).
pub fn receipt_id_from_path(path: &str) -> Option<&str> {
    let id = path.strip_prefix(crate::payment::RECEIPTS_PATH)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_receipt_paths_name_an_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(receipt_id_from_path(&format!("/.well-known/x402/receipts/{id}")), Some(id));
        assert_eq!(receipt_id_from_path("/.well-known/x402/receipts/"), None);
        assert_eq!(receipt_id_from_path("/.well-known/x402/receipts/0123456789ABCDEF0123456789abcdef"), None);
        assert_eq!(receipt_id_from_path(&format!("/.well-known/x402/receipts/{id}/x")), None);
        assert_eq!(receipt_id_from_path(&format!("/weather/{id}")), None);
    }
}
