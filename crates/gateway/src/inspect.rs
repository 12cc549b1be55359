//! What the gateway would do, for operators: the resolved route table (`x402-gateway
//! routes`) and the exact answer to one request (`x402-gateway quote`), computed by the same
//! code the proxy serves with; and why a request goes where it goes (`routes --explain`,
//! admin `GET /routes?explain=`).

use crate::challenge;
use crate::config::raw::SettleMode;
use crate::canonical::{self, TargetRefusal};
use crate::config::{Config, Route, RouteMatch, Unmatched};
use std::fmt::Write;

/// The route table in match order, with every price in dollars and atomic units.
pub fn route_table(config: &Config) -> String {
    let mut out = String::new();
    for (index, route) in config.routes.iter().enumerate() {
        let methods = if route.methods.is_empty() { "*".to_owned() } else { route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",") };
        let host = route.host.as_deref().unwrap_or("*");
        let upstream = &config.upstreams[route.upstream].name;
        let _ = writeln!(out, "{index:>3}  {:<16} {methods:<10} {host:<16} {:<28} -> {upstream}", route.name, route.path.to_string());
        if route.pricing.is_some() && route.rules != crate::routing::MatchRules::LENIENT {
            let _ = writeln!(out, "       strict: case {}, trailing slash {}", if route.rules.case_sensitive { "sensitive" } else { "ignored" }, if route.rules.strict_trailing_slash { "strict" } else { "optional" });
        }
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
        for channel in &pricing.channel_offers {
            let offer = &channel.offer;
            let _ = writeln!(
                out,
                "       {} = {} atomic {} per request, batch-settlement channel on {} ({}), pay to {}; withdraw delay {} s, minimum deposit {} atomic",
                offer.dollars,
                offer.amount,
                offer.asset.symbol,
                offer.network,
                offer.network_id,
                offer.pay_to.to_checksum(None),
                channel.withdraw_delay_seconds,
                channel.min_deposit
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
    let host = url.authority().map(|a| a.as_str());
    let path = match canonical::canonical_path(url.path(), config.requests.path_params) {
        Ok(path) => path,
        Err(refusal) => return format!("400 {}: {refusal}\n", refusal.code()),
    };
    let Some(index) = config.match_route(method, host, path.as_str()) else {
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
                "caseSensitive": route.rules.case_sensitive,
                "trailingSlash": if route.rules.strict_trailing_slash { "strict" } else { "optional" },
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

/// Why a request goes where it goes: its canonical target, the route it matches and the
/// rule that decided, as the proxy decides it. `url` is a path or an absolute URL.
pub fn explain(config: &Config, method: &http::Method, url: &http::Uri) -> serde_json::Value {
    let refused = |refusal: TargetRefusal| serde_json::json!({"method": method.as_str(), "target": url.to_string(), "status": 400, "error": refusal.code(), "why": refusal.to_string()});
    let path = match canonical::canonical_path(url.path(), config.requests.path_params) {
        Ok(path) => path,
        Err(refusal) => return refused(refusal),
    };
    let host = match canonical::request_host(url.authority().map(|a| a.as_str()), None, config.requests.host_routes) {
        Ok(host) => host,
        Err(refusal) => return refused(refusal),
    };
    let forwarded = match url.query() {
        Some(query) => format!("{}?{query}", path.as_str()),
        None => path.as_str().to_owned(),
    };
    let route_json = |index: usize| {
        let route = &config.routes[index];
        serde_json::json!({"name": route.name, "path": route.path.to_string(), "priced": route.pricing.is_some(), "upstream": config.upstreams[route.upstream].name})
    };
    let (route, status, why) = match config.resolve_route(method, host, path.as_str()) {
        RouteMatch::Route(index) => {
            let route = &config.routes[index];
            let rules = format!(
                "{}, trailing slash {}",
                if route.rules.case_sensitive { "case-sensitive" } else { "case-insensitive" },
                if route.rules.strict_trailing_slash { "strict" } else { "optional" }
            );
            let (status, what) = if route.pricing.is_some() { (402, "priced") } else { (200, "free") };
            (Some(route_json(index)), status, format!("the first route that matches ({rules}); {what}"))
        }
        RouteMatch::Guarded { priced, instead_of } => {
            let passed = instead_of.map_or("no route".to_owned(), |i| format!("free route {:?}", config.routes[i].name));
            (Some(route_json(priced)), 402, format!("{passed} matches first, but priced route {:?} matches in its lenient form (case-insensitive, optional trailing slash, HEAD as GET): charged as that route", config.routes[priced].name))
        }
        RouteMatch::Unmatched => match config.unmatched {
            Unmatched::NotFound => (None, 404, "no route matches; unmatched: not_found".to_owned()),
            Unmatched::Forward { upstream } => (None, 200, format!("no route matches, nor any priced route's lenient form; forwarded free to upstream {}", config.upstreams[upstream].name)),
        },
    };
    serde_json::json!({
        "method": method.as_str(),
        "target": url.to_string(),
        "canonical": forwarded,
        "host": host,
        "route": route,
        "status": status,
        "why": why,
    })
}

/// [`explain`] as lines of text for the command line.
pub fn explain_text(explanation: &serde_json::Value) -> String {
    let field = |name: &str| explanation.get(name).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).unwrap_or_default();
    let mut out = format!("{} {}\n", field("method"), field("target"));
    if let Some(error) = explanation.get("error") {
        let _ = writeln!(out, "  refused: 400 {}: {}", error.as_str().unwrap_or_default(), field("why"));
        return out;
    }
    let _ = writeln!(out, "  canonical target: {}", field("canonical"));
    if let Some(route) = explanation.get("route").filter(|r| !r.is_null()) {
        let _ = writeln!(out, "  route: {} ({})", route["name"].as_str().unwrap_or_default(), route["path"].as_str().unwrap_or_default());
    }
    let _ = writeln!(out, "  answer: {} without payment", field("status"));
    let _ = writeln!(out, "  why: {}", field("why"));
    out
}

/// Warnings for `validate`: free routes and `unmatched: forward` whose requests a priced
/// route's lenient form takes over, so the operator learns it before a client does.
pub fn routing_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for priced in config.routes.iter().filter(|r| r.pricing.is_some()) {
        for free in config.routes.iter().filter(|r| r.pricing.is_none()) {
            let methods_meet = free.methods.is_empty() || priced.methods.is_empty() || free.methods.iter().any(|m| priced.methods.contains(m) || (*m == http::Method::HEAD && priced.methods.contains(&http::Method::GET)));
            let hosts_meet = match (&free.host, &priced.host) {
                (Some(a), Some(b)) => canonical::same_host(a, b),
                _ => true,
            };
            if methods_meet && hosts_meet && free.path.overlaps_lenient(&priced.path) {
                warnings.push(format!(
                    "free route {:?} ({}) overlaps priced route {:?} ({}) in its lenient form: those requests are charged as {:?}",
                    free.name, free.path, priced.name, priced.path, priced.name
                ));
            }
        }
        let strict = priced.rules != crate::routing::MatchRules::LENIENT;
        if strict && matches!(config.unmatched, Unmatched::Forward { .. }) {
            warnings.push(format!(
                "unmatched: forward overlaps priced route {:?} ({}) in its lenient form (other case or trailing slash): those requests are charged as {:?}, not forwarded free",
                priced.name, priced.path, priced.name
            ));
        }
    }
    warnings
}
