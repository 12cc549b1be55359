//! The answers a priced route gives instead of the upstream's: 402 challenges (a v2
//! `PAYMENT-REQUIRED` header plus a v1 JSON body, or an HTML page for browsers) and 400
//! for payment headers that cannot be read.

use crate::config::{Pricing, Route};
use serde::Serialize;
use serde_json::value::RawValue;
use x402::{v1, v2, ReasonCode};

/// Lets browser code read the challenge and the receipt.
pub const EXPOSE_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";

/// A complete response the proxy writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Why a challenge is being repeated: the reason code and a sentence for people.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    pub reason: ReasonCode,
    pub message: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequiredOut<'a> {
    x402_version: u8,
    error: &'a str,
    resource: ResourceOut<'a>,
    accepts: &'a RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceOut<'a> {
    url: &'a str,
    description: &'a str,
    mime_type: &'a str,
}

/// The 402 for a priced route. `resource_url` is the URL the client asked for.
pub fn payment_required(route: &Route, pricing: &Pricing, resource_url: &str, refusal: Option<Refusal<'_>>, browser: bool) -> LocalResponse {
    if browser && refusal.is_none() {
        return paywall_page(route, pricing, resource_url);
    }
    required_with_accepts(pricing, resource_url, refusal, &pricing.accepts_raw)
}

/// The corrective 402 of the `batch-settlement` scheme: the route's offers, the channel's
/// offer carrying the channel's state and the last voucher the gateway holds, so the
/// official client can check it against its own key and resume from our charged total.
pub fn channel_resync(route: &Route, pricing: &Pricing, resource_url: &str, refusal: Refusal<'_>, record: &x402_store::ChannelRecord) -> LocalResponse {
    let mut accepts: Vec<serde_json::Value> = serde_json::from_str(pricing.accepts_raw.get()).unwrap_or_default();
    let snapshot = crate::channel_payment::snapshot(record);
    let last_voucher = crate::channel_payment::last_voucher(record);
    for offer in pricing.channel_offers.iter().filter(|offer| offer.batch.chain_id() == record.chain_id && offer.offer.pay_to.into_array() == record.terms.receiver) {
        for entry in accepts.iter_mut().filter(|entry| **entry == offer.wire) {
            if let Some(extra) = entry.get_mut("extra").and_then(serde_json::Value::as_object_mut) {
                x402_evm::batch_settlement::response::corrective_extra(extra, &snapshot, last_voucher.as_ref().map(|(max, signature)| (*max, signature)));
            }
        }
    }
    let Ok(accepts) = serde_json::value::to_raw_value(&accepts) else {
        tracing::error!(route = %route.name, "corrective 402 could not be built; answering the plain one");
        return required_with_accepts(pricing, resource_url, Some(refusal), &pricing.accepts_raw);
    };
    required_with_accepts(pricing, resource_url, Some(refusal), &accepts)
}

fn required_with_accepts(pricing: &Pricing, resource_url: &str, refusal: Option<Refusal<'_>>, accepts: &RawValue) -> LocalResponse {
    let error = refusal.map_or("Payment required", |r| r.reason.as_str());
    let v2_header = PaymentRequiredOut {
        x402_version: v2::X402_VERSION,
        error,
        resource: ResourceOut { url: resource_url, description: &pricing.description, mime_type: &pricing.mime_type },
        accepts,
    };
    let v1_body = v1::PaymentRequirementsResponse {
        x402_version: v1::X402_VERSION,
        error: refusal.map_or_else(|| "X-PAYMENT header is required".to_owned(), |r| r.reason.as_str().to_owned()),
        message: Some(refusal.map_or_else(|| "This resource requires payment; see accepts or the PAYMENT-REQUIRED header.".to_owned(), |r| r.message.to_owned())),
        accepts: v1_accepts(pricing, resource_url),
    };
    LocalResponse {
        status: 402,
        headers: vec![
            (x402::headers::PAYMENT_REQUIRED, x402::encode_header(&v2_header)),
            ("Content-Type", "application/json".into()),
            ("Cache-Control", "no-store".into()),
            ("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()),
        ],
        body: serde_json::to_vec(&v1_body).unwrap_or_default(),
    }
}

fn v1_accepts(pricing: &Pricing, resource_url: &str) -> Vec<v1::PaymentRequirements> {
    pricing
        .requirements
        .iter()
        .filter_map(|req| {
            Some(v1::PaymentRequirements {
                scheme: x402::SCHEME_EXACT.into(),
                network: req.v1_network?.to_owned(),
                max_amount_required: req.amount.to_string(),
                resource: resource_url.to_owned(),
                description: pricing.description.clone(),
                mime_type: pricing.mime_type.clone(),
                output_schema: None,
                pay_to: req.pay_to.to_checksum(None),
                max_timeout_seconds: req.max_timeout_seconds,
                asset: req.domain.verifying_contract.to_checksum(None),
                extra: serde_json::Map::from_iter([
                    ("name".to_owned(), req.domain.name.clone().into()),
                    ("version".to_owned(), req.domain.version.clone().into()),
                ]),
            })
        })
        .collect()
}

/// 400 for a payment header that is not base64 JSON of the right shape.
pub fn malformed_payment(message: &str) -> LocalResponse {
    let body = serde_json::json!({ "x402Version": v2::X402_VERSION, "error": ReasonCode::InvalidPayload.as_str(), "message": message });
    json_response(400, &body)
}

/// 503 for a payment the verify threads had no room for. It was not reserved, so the client
/// may send the same one again.
pub fn verification_at_capacity(message: &str) -> LocalResponse {
    let body = serde_json::json!({ "x402Version": v2::X402_VERSION, "error": ReasonCode::UnexpectedVerifyError.as_str(), "message": message });
    let mut response = json_response(503, &body);
    response.headers.push(("Retry-After", "1".into()));
    response
}

/// 503 for a payment the gateway cannot take now for a reason of its own (`code`); the
/// payment was not used up, so the client may send it again after `Retry-After`.
pub fn retry_later(code: &str, reason: ReasonCode, message: &str, retry_after_secs: u64) -> LocalResponse {
    let body = serde_json::json!({ "x402Version": v2::X402_VERSION, "error": code, "reason": reason.as_str(), "message": message });
    let mut response = json_response(503, &body);
    response.headers.push(("Retry-After", retry_after_secs.to_string()));
    response
}

/// 403 for a protocol upgrade (WebSocket) on a priced route that does not charge for one:
/// a tunnel outlives the response its payment was for, so it is refused outright.
pub fn upgrade_refused(route: &str) -> LocalResponse {
    let body = serde_json::json!({
        "error": "upgrade_not_allowed",
        "message": format!("route {route:?} is priced per response and does not allow this protocol upgrade (only a WebSocket, on a route with upgrades: charge); nothing was charged"),
    });
    json_response(403, &body)
}

/// 503 for a `settle: before` payment refused before it was journaled (queue full, chain
/// unreadable): nobody was charged, so the client may send the same payment again.
pub fn settlement_unavailable(message: &str) -> LocalResponse {
    let body = serde_json::json!({ "x402Version": v2::X402_VERSION, "error": ReasonCode::UnexpectedSettleError.as_str(), "message": message });
    let mut response = json_response(503, &body);
    response.headers.push(("Retry-After", "1".into()));
    response
}

/// A small JSON answer (404 for unmatched paths, 400 for ambiguous ones).
pub fn json_response(status: u16, body: &serde_json::Value) -> LocalResponse {
    LocalResponse {
        status,
        headers: vec![("Content-Type", "application/json".into()), ("Cache-Control", "no-store".into())],
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// The official SDKs' rule: a browser sends `Accept: text/html` and a `Mozilla` agent.
pub fn is_browser(accept: Option<&str>, user_agent: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/html")) && user_agent.is_some_and(|ua| ua.contains("Mozilla"))
}

fn paywall_page(route: &Route, pricing: &Pricing, resource_url: &str) -> LocalResponse {
    let options: String = pricing
        .offers
        .iter()
        .map(|o| {
            format!(
                "<li><strong>{}</strong> ({} atomic units) of {} <code>{}</code> on {} (<code>{}</code>), paid to <code>{}</code></li>",
                escape(&o.dollars),
                o.amount,
                escape(&o.asset.symbol),
                o.asset.address.to_checksum(None),
                escape(&o.network),
                escape(&o.network_id),
                o.pay_to.to_checksum(None)
            )
        })
        .collect();
    let title = if pricing.description.is_empty() { route.name.as_str() } else { pricing.description.as_str() };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment required: {title}</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
<body style=\"font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5\">\
<h1>Payment required</h1><p><strong>{title}</strong> at <code>{url}</code> costs:</p><ul>{options}</ul>\
<p>This resource is paid per request with the <a href=\"https://x402.org\">x402 protocol</a>. \
Use an x402 client (for example <code>@x402/fetch</code> with <code>@x402/evm</code>, or Python's <code>x402</code>): \
it reads the <code>PAYMENT-REQUIRED</code> header of a non-browser request, signs an EIP-3009 authorization and retries \
with a <code>PAYMENT-SIGNATURE</code> header.</p></body></html>\n",
        title = escape(title),
        url = escape(resource_url),
    );
    LocalResponse {
        status: 402,
        headers: vec![("Content-Type", "text/html; charset=utf-8".into()), ("Cache-Control", "no-store".into())],
        body: html.into_bytes(),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
