//! What the gateway would do, for operators: the resolved route table (`x402-gateway
//! routes`) and the exact answer to one request (`x402-gateway quote`), computed by the same
//! code the proxy serves with.

use crate::challenge;
use crate::config::raw::SettleMode;
use crate::config::{Config, Route, Unmatched};
use crate::routing::is_ambiguous_path;
use std::fmt::Write;

/// The route table in match order, with every price in dollars and atomic units.
pub fn route_table(config: &Config) -> String {
    let mut out = String::new();
    for (index, route) in config.routes.iter().enumerate() {
        let methods = if route.methods.is_empty() { "*".to_owned() } else { route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",") };
        let host = route.host.as_deref().unwrap_or("*");
        let upstream = &config.upstreams[route.upstream].name;
        let _ = writeln!(out, "{index:>3}  {:<16} {methods:<10} {host:<16} {:<28} -> {upstream}", route.name, route.path.to_string());
        let Some(pricing) = &route.pricing else {
            let _ = writeln!(out, "       free");
            continue;
        };
        for offer in &pricing.offers {
            let _ = writeln!(
                out,
                "       {} = {} atomic {} ({}) on {} ({}), pay to {}",
                offer.dollars,
                offer.amount,
                offer.asset.symbol,
                offer.asset.address.to_checksum(None),
                offer.network,
                offer.network_id,
                offer.pay_to.to_checksum(None)
            );
        }
        let settle = match pricing.settle {
            SettleMode::Batched => "batched",
            SettleMode::Before => "before",
        };
        let billable: Vec<String> = pricing.billable.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "       settle: {settle}; billable statuses: {}", billable.join(", "));
    }
    let unmatched = match config.unmatched {
        Unmatched::NotFound => "404".to_owned(),
        Unmatched::Forward { upstream } => format!("forward free -> {}", config.upstreams[upstream].name),
    };
    let _ = writeln!(out, "unmatched: {unmatched}");
    out
}

/// The quote for one request, as text: the status line, headers and body the gateway would
/// send when it carries no payment (or where it would forward it).
pub fn quote(config: &Config, method: &http::Method, url: &http::Uri) -> String {
    let path = url.path();
    let host = url.authority().map(|a| a.as_str());
    if is_ambiguous_path(path) {
        return "400 ambiguous_path: the gateway refuses this path\n".into();
    }
    let Some(index) = config.match_route(method, host, path) else {
        return match config.unmatched {
            Unmatched::NotFound => "404 not_found: no route matches this request\n".into(),
            Unmatched::Forward { upstream } => format!("no route matches; forwarded free to upstream {}\n", config.upstreams[upstream].name),
        };
    };
    let route: &Route = &config.routes[index];
    let Some(pricing) = &route.pricing else {
        return format!("route {}: free, forwarded to upstream {}\n", route.name, config.upstreams[route.upstream].name);
    };
    let response = challenge::payment_required(route, pricing, &url.to_string(), None, false);
    let mut out = format!("route {}\nHTTP/1.1 {}\n", route.name, response.status);
    for (name, value) in &response.headers {
        let _ = writeln!(out, "{name}: {value}");
    }
    let _ = writeln!(out, "\n{}", String::from_utf8_lossy(&response.body));
    out
}

/// The route table as JSON, for the admin API: what each route matches, where it goes, what
/// it charges now and which earlier quotes it still honours.
pub fn routes_json(config: &Config) -> serde_json::Value {
    let offers = |pricing: &crate::config::Pricing| -> Vec<serde_json::Value> {
        pricing
            .offers
            .iter()
            .map(|offer| {
                serde_json::json!({
                    "price": offer.dollars,
                    "amount": offer.amount.to_string(),
                    "asset": offer.asset.symbol,
                    "assetAddress": offer.asset.address.to_checksum(None),
                    "network": offer.network_id,
                    "payTo": offer.pay_to.to_checksum(None),
                    "maxTimeoutSeconds": pricing.max_timeout_seconds,
                })
            })
            .collect()
    };
    let routes: Vec<serde_json::Value> = config
        .routes
        .iter()
        .map(|route| {
            serde_json::json!({
                "name": route.name,
                "methods": route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "host": route.host,
                "path": route.path.to_string(),
                "upstream": config.upstreams[route.upstream].name,
                "free": route.pricing.is_none(),
                "offers": route.pricing.as_ref().map(offers).unwrap_or_default(),
                "settle": route.pricing.as_ref().map(|p| match p.settle { SettleMode::Batched => "batched", SettleMode::Before => "before" }),
                "honoured": route.honoured.iter().map(|h| serde_json::json!({"until": h.until, "offers": offers(&h.pricing)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "routes": routes })
}
