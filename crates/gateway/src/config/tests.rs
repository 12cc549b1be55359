use super::*;
use model::RouteMatch;
use alloy_primitives::U256;

use super::TEST_YAML as BASE;

fn parse(text: &str) -> Result<Config, String> {
    parse_config(text, Path::new("test.yaml")).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_gateway_yaml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.yaml");
    // Inspection does not need the settlement key (it may be unset here); `run` does.
    let (config, _) = load_config_for_inspection(&path).unwrap();
    let weather = &config.routes[config.match_route(&http::Method::GET, None, "/weather").unwrap()];
    let pricing = weather.pricing.as_ref().unwrap();
    assert_eq!(pricing.offers[0].amount, U256::from(1000u64));
    assert_eq!(pricing.offers[0].network_id, "eip155:84532");
    let health = config.match_route(&http::Method::GET, None, "/health").unwrap();
    assert!(config.routes[health].pricing.is_none());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8402");
    let metered = &config.routes[config.match_route(&http::Method::GET, None, "/echo/hello").unwrap()];
    assert_eq!(metered.pricing.as_ref().unwrap().channel_offers[0].withdraw_delay_seconds, 900);
}

#[test]
fn a_minimal_config_resolves_defaults() {
    let config = parse(BASE).unwrap();
    let pricing = config.routes[0].pricing.as_ref().unwrap();
    assert_eq!(pricing.requirements[0].max_timeout_seconds, 300);
    assert_eq!(pricing.requirements[0].v1_network, Some("base-sepolia"));
    assert!(pricing.is_billable(200) && pricing.is_billable(304) && !pricing.is_billable(404) && !pricing.is_billable(500));
    assert!(pricing.accepts_raw.get().contains(r#""extra":{"name":"USDC","version":"2"}"#));
    assert!(matches!(config.unmatched, Unmatched::NotFound));
}

#[test]
fn first_matching_route_wins() {
    let text = BASE.replace("  - name: health", "  - name: all\n    path: /*\n    upstream: sample\n    free: true\n  - name: health");
    let config = parse(&text).unwrap();
    assert_eq!(config.match_route(&http::Method::GET, None, "/weather"), Some(0));
    assert_eq!(config.match_route(&http::Method::POST, None, "/weather"), Some(1));
    assert_eq!(config.match_route(&http::Method::GET, None, "/health"), Some(1));
}

/// Each broken config names the field and, where the YAML library knows it, the line.
#[test]
fn errors_name_field_and_line() {
    let cases = [
        (BASE.replace("\"$0.001\"", "\"$0.0000001\""), "routes[0]: price \"$0.0000001\" has more decimal places", Some("line 11")),
        (BASE.replace("upstream: sample\n    price", "upstream: nowhere\n    price"), "routes[0]: unknown upstream \"nowhere\"", Some("line 11")),
        (BASE.replace("path: /weather", "path: weather"), "routes[0]: path pattern \"weather\" must start with '/'", Some("line 11")),
        (BASE.replace("methods: [GET]", "methods: [FETCH]"), "routes[0].methods: \"FETCH\" is not an HTTP method", Some("line 12")),
        (BASE.replace("\"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"", "\"0x1234\""), "payments: \"0x1234\" is not a 0x-prefixed", Some("line 6")),
        (BASE.replace("    free: true\n", "    colour: blue\n    free: true\n"), "routes[1]: unknown field `colour`", Some("line 19")),
        (BASE.replace("    price: \"$0.001\"\n", ""), "routes[0]: route has no price", Some("line 11")),
        (BASE.replace("    free: true\n", "    free: true\n    price: \"$1\"\n"), "routes[1]: a route is either `free: true` or priced", Some("line 16")),
        (BASE.replace("base-sepolia:", "mystery:"), "networks.mystery", Some("line 3")),
        (BASE.replace("routes:", "routes: ["), "did not find expected node content", Some("line 11")),
        (BASE.replace("pay_to: \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"", "max_timeout_seconds: 10"), "must exceed", None),
    ];
    for (text, want, line) in cases {
        let err = parse(&text).expect_err(want);
        assert!(err.starts_with("test.yaml: "), "{err}");
        assert!(err.contains(want), "expected {want:?} in {err}");
        if let Some(line) = line {
            assert!(err.contains(line), "expected {line:?} in {err}");
        }
    }
}

#[test]
fn several_offers_and_custom_networks() {
    let text = r#"
networks:
  base-sepolia: { rpc_url: "http://127.0.0.1:8545" }
  local:
    id: eip155:31337
    rpc_url: http://127.0.0.1:8546
    assets:
      TOKEN: { address: "0x5FbDB2315678afecb367f032d93F642f64180aa3", decimals: 18, eip712: { name: "Token", version: "1" } }
payments: { pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
upstreams: { a: { addresses: ["127.0.0.1:1"] } }
routes:
  - path: /multi
    upstream: a
    accepts:
      - { network: base-sepolia, price: "$0.01" }
      - { network: local, asset: token, amount: "5" }
"#;
    let config = parse(text).unwrap();
    let pricing = config.routes[0].pricing.as_ref().unwrap();
    assert_eq!(pricing.offers.len(), 2);
    assert_eq!(pricing.offers[0].amount, U256::from(10_000u64));
    assert_eq!(pricing.requirements[1].network, "eip155:31337");
    assert_eq!(pricing.requirements[1].v1_network, None);
    assert_eq!(config.routes[0].name, "route-0");
    let ambiguous = text.replace("      - { network: base-sepolia, price: \"$0.01\" }\n", "      - { price: \"$0.01\" }\n");
    assert!(parse(&ambiguous).unwrap_err().contains("several networks"));
}

#[test]
fn priced_routes_match_leniently_and_free_routes_never_take_their_requests() {
    let text = BASE.replace("  - name: health", "  - name: all\n    path: /*\n    upstream: sample\n    free: true\n  - name: health");
    let config = parse(&text).unwrap();
    for path in ["/WEATHER", "/weather/", "/Weather/"] {
        assert_eq!(config.resolve_route(&http::Method::GET, None, path), RouteMatch::Route(0), "{path}");
    }
    assert_eq!(config.resolve_route(&http::Method::HEAD, None, "/weather"), RouteMatch::Route(0));
    assert_eq!(config.resolve_route(&http::Method::POST, None, "/weather"), RouteMatch::Route(1));
}

#[test]
fn a_strict_route_is_still_guarded_in_its_lenient_form() {
    let text = BASE.replace("    path: /weather\n", "    path: /weather\n    case_sensitive: true\n    trailing_slash: strict\n")
        + "unmatched: { action: forward, upstream: sample }\n";
    let config = parse(&text).unwrap();
    assert_eq!(config.resolve_route(&http::Method::GET, None, "/weather"), RouteMatch::Route(0));
    assert_eq!(config.resolve_route(&http::Method::GET, None, "/WEATHER/"), RouteMatch::Guarded { priced: 0, instead_of: None });
    let warnings = crate::inspect::routing_warnings(&config);
    assert!(warnings.iter().any(|w| w.contains("unmatched: forward overlaps priced route \"weather\"")), "{warnings:?}");
}

#[test]
fn request_settings_default_and_refuse_bad_header_names() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.requests.path_params, crate::canonical::PathParams::Refuse);
    assert!(config.requests.strip_headers.iter().any(|h| h == "x-original-url"));
    let text = format!("{BASE}requests:\n  path_params: strip\n  strip_headers: [X-Debug]\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.requests.path_params, crate::canonical::PathParams::Strip);
    assert!(config.requests.strip_headers.iter().any(|h| h == "x-debug"));
    let error = parse(&format!("{BASE}requests:\n  strip_headers: [\"bad header\"]\n")).unwrap_err();
    assert!(error.contains("requests.strip_headers"), "{error}");
    let error = parse(&format!("{BASE}requests:\n  path_params: keep\n")).unwrap_err();
    assert!(error.contains("path_params"), "{error}");
    let error = parse(&BASE.replace("    path: /weather\n", "    path: /weather\n    trailing_slash: maybe\n")).unwrap_err();
    assert!(error.contains("trailing_slash"), "{error}");
}

#[test]
fn explain_names_the_canonical_target_and_the_deciding_rule() {
    let text = BASE.replace("  - name: health", "  - name: all\n    path: /*\n    upstream: sample\n    free: true\n  - name: health");
    let config = parse(&text).unwrap();
    let explain = |url: &str| crate::inspect::explain(&config, &http::Method::GET, &url.parse().unwrap());
    let guarded = explain("/W%65ather/?x=1");
    assert_eq!(guarded["canonical"], "/Weather/?x=1");
    assert_eq!(guarded["route"]["name"], "weather");
    assert_eq!(guarded["status"], 402);
    let refused = explain("/a/..;/weather");
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["error"], "ambiguous_path");
    let free = explain("http://api.example/other");
    assert_eq!(free["route"]["name"], "all");
    assert_eq!(free["host"], "api.example");
    assert!(crate::inspect::routing_warnings(&config).iter().any(|w| w.contains("free route \"all\"")));
}

#[test]
fn duplicate_route_names_are_refused_with_the_field_named() {
    let text = BASE.replace("  - name: health", "  - name: weather");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("routes[1].name: \"weather\" is already the name of routes[0]"), "{error}");
    // An explicit name that collides with an unnamed route's generated one is refused too.
    let text = BASE.replace("  - name: health\n    path", "  - path").replace("  - name: weather", "  - name: route-1");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("routes[1].name: \"route-1\""), "{error}");
}

#[test]
fn the_settle_before_queue_has_a_default_and_refuses_zero() {
    assert_eq!(parse(BASE).unwrap().settlement.settle_before_queue, 64);
    let sized = parse(&format!("{BASE}settlement:\n  settle_before_queue: 8\n")).unwrap();
    assert_eq!(sized.settlement.settle_before_queue, 8);
    let err = parse(&format!("{BASE}settlement:\n  settle_before_queue: 0\n")).unwrap_err();
    assert!(err.contains("settlement.settle_before_queue: must be at least 1"), "{err}");
}

#[test]
fn the_journal_retention_has_a_default_takes_fractions_and_refuses_nonsense() {
    assert_eq!(parse(BASE).unwrap().settlement.journal_retention, std::time::Duration::from_secs(30 * 86_400));
    let seconds = parse(&format!("{BASE}settlement:\n  journal_retention_days: 0.0001\n")).unwrap();
    assert_eq!(seconds.settlement.journal_retention.as_millis(), 8_640);
    for bad in ["0", "-1", ".nan", ".inf", "36501"] {
        let err = parse(&format!("{BASE}settlement:\n  journal_retention_days: {bad}\n")).unwrap_err();
        assert!(err.contains("settlement.journal_retention_days: must be above 0"), "{bad}: {err}");
    }
}

/// Anvil's first dev key, under a variable no other test uses.
const CHANNEL_KEY_ENV: &str = "X402_CONFIG_TEST_CHANNEL_KEY";
const CHANNEL_KEY_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn channel_yaml(route_extra: &str) -> String {
    std::env::set_var(CHANNEL_KEY_ENV, "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
    format!("settlement:\n  private_key_env: {CHANNEL_KEY_ENV}\n{BASE}").replace("    price: \"$0.001\"\n", &format!("    price: \"$0.001\"\n{route_extra}"))
}

#[test]
fn a_batch_settlement_offer_announces_the_channel_terms() {
    let config = parse(&channel_yaml("    accepts:\n      - { price: \"$0.001\", scheme: batch-settlement }\n    channel: { withdraw_delay_seconds: 3600, min_deposit: \"$2\" }\n")).unwrap();
    let pricing = config.routes[0].pricing.as_ref().unwrap();
    assert_eq!(pricing.offers.len(), 1, "the inline price stays an exact offer");
    let channel = &pricing.channel_offers[0];
    assert_eq!(channel.receiver_authorizer.to_checksum(None), CHANNEL_KEY_ADDRESS);
    assert_eq!((channel.withdraw_delay_seconds, channel.min_deposit), (3600, U256::from(2_000_000u64)));
    let accepts: serde_json::Value = serde_json::from_str(pricing.accepts_raw.get()).unwrap();
    assert_eq!(accepts[0]["scheme"], "exact", "offers keep the file's order");
    assert_eq!(accepts[1]["scheme"], "batch-settlement");
    assert_eq!(accepts[1]["amount"], "1000");
    assert_eq!(accepts[1]["extra"]["receiverAuthorizer"], CHANNEL_KEY_ADDRESS);
    assert_eq!(accepts[1]["extra"]["withdrawDelay"], 3600, "the official client reads it only as a number");
    assert_eq!(accepts[1]["extra"]["minDeposit"], "2000000");
    assert_eq!((accepts[1]["extra"]["name"].as_str(), accepts[1]["extra"]["version"].as_str()), (Some("USDC"), Some("2")));
}

#[test]
fn channel_terms_default_to_a_day_and_a_thousand_requests() {
    let config = parse(&channel_yaml("    scheme: batch-settlement\n")).unwrap();
    let pricing = config.routes[0].pricing.as_ref().unwrap();
    assert!(pricing.offers.is_empty());
    assert_eq!((pricing.channel_offers[0].withdraw_delay_seconds, pricing.channel_offers[0].min_deposit), (86_400, U256::from(1_000_000u64)));
}

#[test]
fn bad_channel_terms_are_refused_with_the_field() {
    for (extra, expected) in [
        ("    scheme: batch-settlement\n    channel: { withdraw_delay_seconds: 60 }\n", "withdraw_delay_seconds: 60 is outside"),
        ("    scheme: batch-settlement\n    channel: { min_deposit: \"$0.0001\" }\n", "below one request's price"),
        ("    channel: { withdraw_delay_seconds: 3600 }\n", "this route has none"),
        ("    scheme: batch-settlement\n    settle: before\n", "drop `settle: before`"),
        ("    scheme: batch-settlment\n", "unknown variant"),
    ] {
        let error = parse(&channel_yaml(extra)).unwrap_err();
        assert!(error.contains(expected), "{extra}: {error}");
    }
}

#[test]
fn a_batch_settlement_offer_needs_the_settlement_key() {
    let text = format!("settlement:\n  private_key_env: X402_CONFIG_TEST_UNSET_KEY\n{BASE}").replace("    price: \"$0.001\"\n", "    price: \"$0.001\"\n    scheme: batch-settlement\n");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("receiverAuthorizer") && error.contains("X402_CONFIG_TEST_UNSET_KEY"), "{error}");
}

#[test]
fn a_withdrawal_must_be_seen_well_within_the_shortest_withdraw_delay() {
    let route = "    scheme: batch-settlement\n    channel: { withdraw_delay_seconds: 900 }\n";
    let slow = channel_yaml(route).replace("settlement:\n", "settlement:\n  channels: { refresh_interval_seconds: 301 }\n");
    let error = parse(&slow).unwrap_err();
    assert!(error.contains("refresh_interval_seconds: 301") && error.contains("900"), "{error}");
    let enough = channel_yaml(route).replace("settlement:\n", "settlement:\n  channels: { refresh_interval_seconds: 300 }\n");
    assert!(parse(&enough).is_ok());
}

#[test]
fn the_store_is_in_process_unless_redis_is_named_and_redis_settings_are_checked() {
    assert_eq!(parse(BASE).unwrap().store, model::StoreSettings::Memory);
    let redis = |store: &str| parse(&format!("{BASE}store:\n{store}"));
    let config = redis("  kind: redis\n  url: redis://10.0.0.5:6379/0\n  advertise_url: http://10.0.0.7:8402/\n").unwrap();
    assert_eq!(
        config.store,
        model::StoreSettings::Redis(x402_store::RedisSettings {
            url: "redis://10.0.0.5:6379/0".into(),
            key_prefix: "x402-gateway".into(),
            timeout: Duration::from_millis(50),
            advertise_url: Some("http://10.0.0.7:8402".into()),
            wait_for_replicas: 0,
        })
    );
    let refused = [
        ("  kind: redis\n", "either url or url_env"),
        ("  kind: redis\n  url: http://10.0.0.5:6379\n", "must start with redis://"),
        ("  kind: redis\n  url: redis+sentinel://s1:26379\n", "service name"),
        ("  kind: redis\n  url: redis://r:6379\n  wait_for_replicas: 17\n", "at most 16"),
        ("  kind: redis\n  url: redis://r:6379\n  key_prefix: \"{x}\"\n", "without braces"),
        ("  kind: redis\n  url: redis://r:6379\n  timeout_ms: 0\n", "timeout_ms"),
        ("  kind: redis\n  url: redis://r:6379\n  advertise_url: http://10.0.0.7:8402/receipts\n", "with no path"),
        ("  kind: redis\n  url: redis://r:6379\n  url_env: X402_TEST_UNSET_REDIS_URL\n", "url or url_env, not both"),
        ("  kind: postgres\n", "kind"),
    ];
    for (store, expected) in refused {
        let error = redis(store).unwrap_err();
        assert!(error.contains(expected), "{store:?}: {error}");
    }
}

#[test]
fn a_redis_store_shares_batch_settlement_routes_only_with_a_receiver_authorizer_every_replica_holds() {
    let route = "    accepts:\n      - { price: \"$0.001\", scheme: batch-settlement }\n";
    let text = format!("{}store:\n  kind: redis\n  url: redis://r:6379\n", channel_yaml(route));
    let error = parse(&text).unwrap_err();
    assert!(error.contains("receiver_authorizer_key_env"), "{error}");
    // Dev account 1: every replica holds it, whatever its own settlement key.
    std::env::set_var("X402_TEST_SHARED_AUTHORIZER", "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");
    let shared = text.replacen("settlement:\n", "settlement:\n  channels: { receiver_authorizer_key_env: X402_TEST_SHARED_AUTHORIZER }\n", 1);
    let config = parse(&shared).unwrap();
    let offer = &config.routes[0].pricing.as_ref().unwrap().channel_offers[0];
    assert_eq!(offer.receiver_authorizer.to_checksum(None), "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
}
