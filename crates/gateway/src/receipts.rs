//! What a payment looks like to the payer (`GET /.well-known/x402/receipts/{id}`) and to
//! the operator (`x402-gateway payments`): one JSON shape for both, and its flat form for
//! `payments export`.

use serde::Serialize;
use serde_json::{json, Value};
use x402_store::{PaymentRecord, PaymentState};

/// Marks a receipt look-up one replica forwarded to another: answered from that replica's
/// journal alone, never forwarded again.
pub const FORWARDED_HEADER: &str = "x402-gateway-forwarded";

/// Asks the replica at `owner` (its advertised `http://host:port`) for a receipt this one does
/// not hold, and relays its answer.
pub async fn forwarded_lookup(client: &reqwest::Client, owner: &str, receipt_id: &str) -> Result<(u16, Value), String> {
    let url = format!("{owner}{}{receipt_id}", crate::payment::RECEIPTS_PATH);
    let response = client.get(&url).header(FORWARDED_HEADER, "1").send().await.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|error| error.to_string())?;
    let value = serde_json::from_slice(&body).map_err(|error| format!("not JSON: {error}"))?;
    Ok((status, value))
}

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

/// One payment as `payments export` writes it: flat, so that CSV and JSON lines carry the
/// same fields, named as in [`receipt_json`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRow<'a> {
    pub id: &'a str,
    pub state: &'static str,
    pub route: &'a str,
    pub payer: &'a str,
    /// Atomic units of the asset.
    pub amount: &'a str,
    pub usd_micros: u64,
    pub network: &'a str,
    pub asset: &'a str,
    pub pay_to: &'a str,
    pub nonce: &'a str,
    pub valid_before: u64,
    /// The settlement transaction (settled or submitted).
    pub transaction: Option<&'a str>,
    /// Why a failed payment failed.
    pub reason: Option<&'a str>,
    pub accepted_at_ms: u64,
    pub updated_at_ms: u64,
}

impl ExportRow<'_> {
    /// The CSV header: the fields above, in order, as serialized (a test keeps them equal).
    pub const COLUMNS: [&'static str; 15] = [
        "id", "state", "route", "payer", "amount", "usdMicros", "network", "asset", "payTo", "nonce", "validBefore", "transaction", "reason",
        "acceptedAtMs", "updatedAtMs",
    ];
}

impl<'a> From<&'a PaymentRecord> for ExportRow<'a> {
    fn from(record: &'a PaymentRecord) -> Self {
        Self {
            id: &record.receipt_id,
            state: record.state.name(),
            route: &record.route,
            payer: &record.payer,
            amount: &record.amount,
            usd_micros: record.usd_micros,
            network: &record.item.network,
            asset: &record.item.asset,
            pay_to: &record.item.payload.authorization.to,
            nonce: &record.item.payload.authorization.nonce,
            valid_before: record.item.valid_before,
            transaction: record.state.transaction(),
            reason: match &record.state {
                PaymentState::Failed { reason } => Some(reason),
                _ => None,
            },
            accepted_at_ms: record.accepted_at_ms,
            updated_at_ms: record.updated_at_ms,
        }
    }
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
    fn the_csv_header_names_every_exported_field_in_order() {
        let record = x402_store::PaymentRecord {
            id: 1,
            receipt_id: "r".into(),
            route: "weather".into(),
            amount: "1000".into(),
            payer: "0xA1".into(),
            usd_micros: 1000,
            accepted_at_ms: 1,
            updated_at_ms: 2,
            item: x402_store::SettlementItem {
                network: "eip155:84532".into(),
                chain_id: 84532,
                asset: "0xT".into(),
                payload: x402::ExactEvmPayload {
                    signature: "0xsig".into(),
                    authorization: x402::ExactEvmAuthorization {
                        from: "0xa1".into(),
                        to: "0xB2".into(),
                        value: "1000".into(),
                        valid_after: "0".into(),
                        valid_before: "300".into(),
                        nonce: "0x01".into(),
                    },
                },
                valid_before: 300,
            },
            state: PaymentState::Settled { transaction: "0xfeed".into() },
            attempts: 1,
        };
        let json = serde_json::to_value(ExportRow::from(&record)).unwrap();
        let names: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names, ExportRow::COLUMNS);
        assert_eq!((json["transaction"].as_str(), json["payTo"].as_str()), (Some("0xfeed"), Some("0xB2")));
    }

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
