//! Property: whatever path a client sends, if the gateway forwards it without payment, no
//! usual upstream normalisation of the forwarded path (Express: case and trailing slash;
//! a decoding router: percent-decoding, `;params`, dot segments, empty segments) turns it
//! into a priced resource. Priced matches are challenged and forward the canonical path.
//! The config puts a lenient free route in front of a strict priced one, so the priced
//! guard is exercised, not only the priced routes' own lenient matching.

use proptest::prelude::*;
use std::path::Path;
use x402_gateway::canonical::{canonical_path, PathParams};
use x402_gateway::config::{parse_config, Config, RouteMatch};

const CONFIG: &str = r#"
networks: { base-sepolia: { rpc_url: "http://127.0.0.1:8545" } }
payments: { pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
upstreams: { app: { addresses: ["127.0.0.1:8080"] } }
routes:
  - { name: health, path: /health, upstream: app, free: true }
  - { name: pages, path: "/{page}", upstream: app, free: true, case_sensitive: false, trailing_slash: optional }
  - { name: weather, methods: [GET], path: /weather, upstream: app, price: "$0.001", case_sensitive: true, trailing_slash: strict }
  - { name: reports, path: /api/reports/*, upstream: app, price: "$0.001" }
  - { name: everything, path: /*, upstream: app, free: true }
"#;

fn config() -> Config {
    parse_config(CONFIG, Path::new("test.yaml")).expect("the test config is valid")
}

/// What the priced routes are to an upstream that routes on `path` exactly.
fn is_priced_resource(path: &str, method: &str) -> bool {
    (path == "/weather" && (method == "GET" || method == "HEAD")) || path.starts_with("/api/reports/") || path == "/api/reports"
}

fn express(path: &str) -> String {
    let lower = path.to_ascii_lowercase();
    match lower.strip_suffix('/') {
        Some(without) if !without.is_empty() => without.to_owned(),
        _ => lower,
    }
}

fn decoding_router(path: &str) -> String {
    let without_params: Vec<&str> = path.split('/').map(|segment| segment.split(';').next().unwrap_or_default()).collect();
    let decoded = percent_decode(&without_params.join("/")).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every way the upstreams in front of which operators put the gateway may read `path`.
fn upstream_readings(path: &str) -> [String; 3] {
    [express(path), decoding_router(path), express(&decoding_router(path))]
}

/// A segment close to a priced one: its letters case-flipped or percent-encoded at random,
/// or one of the spellings servers resolve (dots, `;params`, empty).
fn segment() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec!["weather", "api", "reports", "health", "1", "free"]);
    let spelled = (word, prop::collection::vec(0u8..4, 8)).prop_map(|(word, choices)| {
        word.chars()
            .zip(choices.iter().cycle())
            .map(|(c, choice)| match choice {
                0 => c.to_ascii_uppercase().to_string(),
                1 => format!("%{:02x}", c as u32),
                2 => format!("%{:02X}", c as u32),
                _ => c.to_string(),
            })
            .collect::<String>()
    });
    let odd = prop::sample::select(vec![".", "..", "...", "", "%2e%2e", ".%2E", "..;", "x;y=1", "%2f", "%5c", "%00", "%20", "%25"]).prop_map(str::to_owned);
    prop_oneof![4 => spelled, 1 => odd]
}

fn raw_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 1..4), any::<bool>(), prop::option::of(prop::sample::select(vec![";v=1", ";", "%3B"]))).prop_map(
        |(segments, trailing_slash, params)| {
            let mut path = format!("/{}", segments.join("/"));
            if let Some(params) = params {
                path.push_str(params);
            }
            if trailing_slash {
                path.push('/');
            }
            path
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn nothing_priced_is_forwarded_unpaid(raw in raw_path(), head in any::<bool>()) {
        let config = config();
        let method = if head { http::Method::HEAD } else { http::Method::GET };
        for params in [PathParams::Refuse, PathParams::Strip] {
            let Ok(canonical) = canonical_path(&raw, params) else { continue };
            let resolved = config.resolve_route(&method, Some("api.local"), canonical.as_str());
            let priced = resolved.index().is_some_and(|i| config.routes[i].pricing.is_some());
            if priced {
                // Challenged; once paid, the canonical path of that match is what is forwarded.
                let route = &config.routes[resolved.index().unwrap_or_default()];
                prop_assert!(route.path.matches_with(canonical.as_str(), x402_gateway::routing::MatchRules::LENIENT));
                continue;
            }
            prop_assert!(matches!(resolved, RouteMatch::Route(_) | RouteMatch::Unmatched));
            for reading in upstream_readings(canonical.as_str()) {
                prop_assert!(
                    !is_priced_resource(&reading, method.as_str()),
                    "{raw:?} forwarded free as {:?}, which an upstream reads as {reading:?}",
                    canonical.as_str()
                );
            }
        }
    }
}
