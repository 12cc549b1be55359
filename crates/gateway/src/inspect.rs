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
