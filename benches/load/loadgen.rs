//! The load generator: keep-alive HTTP/1.1 connections against one URL, either as fast as
//! the server answers (saturation) or at a fixed rate (open loop), printing one JSON line:
//! throughput, latency percentiles, answers by status code, errors.
//!
//! Fixed-rate timing is coordinated-omission safe: each request has a scheduled send time,
//! and when the previous answer on its connection came back after that time, its latency
//! is measured from the scheduled time, so a stalled server is charged for the requests it
//! delayed, not just for the ones it answered (as wrk2 does).
//!
//! `--pay N` makes it a paying client: it reads the route's 402, signs N distinct EIP-3009
//! payments (from `--keys`, round robin) before the clock starts, and sends each once.
//! `--bad-signature` spoils them: a flood that costs the server a signature recovery each.
//!
//! `--channel-requests N` pays the route's `batch-settlement` offer instead: each connection
//! opens its own channel (its first request carries a deposit of N × price) and then pays
//! with vouchers for the cumulative 2 × price … N × price, all signed before the clock starts.

use alloy_primitives::{hex, Address, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x402_evm::eip712::TransferWithAuthorization;
use x402_evm::TokenDomain;

#[derive(Parser, Clone)]
struct Args {
    /// http://host:port/path
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of measurement (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Requests per second in total; absent: saturation.
    #[arg(long)]
    rate: Option<f64>,
    /// Sign this many distinct payments for the URL's route and send one per request.
    #[arg(long, default_value_t = 0)]
    pay: usize,
    /// Payer private keys (0x-hex, comma separated) for `--pay`.
    #[arg(long, default_value = "")]
    keys: String,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// With `--pay`: spoil every signature (its recovery gives another address), so each
    /// payment passes every cheap check and is refused only after signature recovery; the
    /// payments are then sent round and round, since a refused one is never used up.
    #[arg(long)]
    bad_signature: bool,
    /// `batch-settlement`: requests per connection's channel (its deposit covers them all).
    #[arg(long, default_value_t = 0)]
    channel_requests: usize,
}

struct Target {
    host: String,
    authority: String,
    path: String,
}

#[derive(Default)]
struct ConnectionStats {
    latency_us: Option<Histogram<u64>>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    /// Answers by status code: a soak tells served (200) from refused (402, 503) apart.
    statuses: BTreeMap<u16, u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    let report = runtime.block_on(run(args))?;
    println!("{report}");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let launched = Instant::now();
    let target = Arc::new(parse_url(&args.url)?);
    let payments = Arc::new(if args.pay > 0 { sign_payments(&args, &target).await? } else { Vec::new() });
    let channels = Arc::new(if args.channel_requests > 0 { open_channels(&target, sign_channels(&args, &target).await?).await? } else { Vec::new() });

    let next_payment = Arc::new(AtomicUsize::new(0));
    let warmup = Duration::from_secs_f64(args.warmup);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = (0..args.connections)
        .map(|index| {
            let (target, payments, next_payment, args, channels) = (target.clone(), payments.clone(), next_payment.clone(), args.clone(), channels.clone());
            tokio::spawn(async move {
                let channel = channels.get(index).map_or(&[][..], Vec::as_slice);
                drive_connection(index, &args, &target, Payments { shared: &payments, next: &next_payment, channel }, start, measure_from, end).await
            })
        })
        .collect();
    let mut total = ConnectionStats { latency_us: Some(new_histogram()?), ..ConnectionStats::default() };
    for task in tasks {
        let stats = task.await?;
        if let (Some(all), Some(one)) = (total.latency_us.as_mut(), stats.latency_us.as_ref()) {
            all.add(one)?;
        }
        total.ok += stats.ok;
        total.non_2xx += stats.non_2xx;
        total.errors += stats.errors;
        for (status, count) in stats.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
    }
    let measured = end.saturating_duration_since(measure_from).as_secs_f64();
    let histogram = total.latency_us.unwrap_or(new_histogram()?);
    let sent = payments.len().min(next_payment.load(Ordering::Relaxed)) + channels.len() * usize::from(args.channel_requests > 0);
    Ok(serde_json::json!({
        "requests": total.ok + total.non_2xx,
        "ok": total.ok,
        "non2xx": total.non_2xx,
        "statuses": total.statuses.iter().map(|(status, count)| (status.to_string(), serde_json::json!(count))).collect::<serde_json::Map<_, _>>(),
        "errors": total.errors,
        "seconds": measured,
        "rps": (total.ok + total.non_2xx) as f64 / measured,
        "rate": args.rate,
        "p50_us": histogram.value_at_quantile(0.50),
        "p90_us": histogram.value_at_quantile(0.90),
        "p99_us": histogram.value_at_quantile(0.99),
        "p999_us": histogram.value_at_quantile(0.999),
        "max_us": histogram.max(),
        "payments_used": sent,
        // From launch to the clock's start (reading the 402, signing): a caller sampling the
        // server knows from it when the load began.
        "signing_seconds": start.saturating_duration_since(launched).as_secs_f64(),
        "payments_ran_out": args.pay > 0 && !args.bad_signature && sent >= payments.len(),
    }))
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// What a connection pays with: the shared pre-signed `exact` payments, or its own channel's
/// payments in order.
struct Payments<'a> {
    shared: &'a [String],
    next: &'a AtomicUsize,
    channel: &'a [String],
}

impl Payments<'_> {
    /// The next payment to send (`Some(None)`: the route is free), or `None` when used up.
    fn next(&self, sent_on_connection: usize, cycle: bool) -> Option<Option<&str>> {
        if !self.channel.is_empty() {
            return self.channel.get(sent_on_connection).map(|payment| Some(payment.as_str()));
        }
        if self.shared.is_empty() {
            return Some(None);
        }
        let mut n = self.next.fetch_add(1, Ordering::Relaxed);
        if cycle {
            n %= self.shared.len();
        }
        self.shared.get(n).map(|payment| Some(payment.as_str()))
    }
}

async fn drive_connection(
    index: usize,
    args: &Args,
    target: &Target,
    payments: Payments<'_>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> ConnectionStats {
    let mut stats = ConnectionStats { latency_us: new_histogram().ok(), ..ConnectionStats::default() };
    let mut sender = None;
    // Open loop: connection i sends at start + (i + k·C) / rate.
    let interval = args.rate.map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let offset = args.rate.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(index as f64 / rate));
    tokio::time::sleep_until((start + offset).into()).await;
    let mut scheduled = start + offset;
    let mut last_done = start;
    let mut sent_on_connection = 0;
    loop {
        let sent_at = match interval {
            // The previous answer came back after this request was due: the server delayed
            // it, so its latency counts from when it was due.
            Some(_) if last_done > scheduled => scheduled,
            // Idle until due: measure from the actual send, leaving the timer's own
            // millisecond granularity out of the server's figures.
            Some(_) => {
                tokio::time::sleep_until(scheduled.into()).await;
                Instant::now()
            }
            None => Instant::now(),
        };
        if sent_at >= end || scheduled >= end {
            break;
        }
        let Some(payment) = payments.next(sent_on_connection, args.bad_signature) else { break };
        sent_on_connection += 1;
        let outcome = send_one(&mut sender, target, payment).await;
        let done = Instant::now();
        last_done = done;
        if sent_at >= measure_from {
            match outcome {
                Ok(status) => {
                    if (200..300).contains(&status) {
                        stats.ok += 1;
                    } else {
                        stats.non_2xx += 1;
                    }
                    *stats.statuses.entry(status).or_default() += 1;
                }
                Err(_) => stats.errors += 1,
            }
            if let Some(histogram) = stats.latency_us.as_mut() {
                let micros = u64::try_from(done.duration_since(sent_at).as_micros()).unwrap_or(u64::MAX);
                let _ = histogram.record(micros.max(1));
            }
        }
        if let Some(interval) = interval {
            scheduled += interval;
        }
    }
    stats
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn send_one(sender: &mut Option<Sender>, target: &Target, payment: Option<&str>) -> anyhow::Result<u16> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(target).await?);
    }
    let Some(connection) = sender.as_mut() else { bail!("no connection") };
    let mut request = hyper::Request::get(target.path.as_str()).header(hyper::header::HOST, target.host.as_str());
    if let Some(payment) = payment {
        request = request.header("PAYMENT-SIGNATURE", payment);
    }
    let response = match connection.send_request(request.body(Empty::new())?).await {
        Ok(response) => response,
        Err(error) => {
            *sender = None;
            return Err(error.into());
        }
    };
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(target.authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    let authority = uri.authority().context("the URL needs host:port")?.to_string();
    let path = uri.path_and_query().map_or("/".to_owned(), |p| p.to_string());
    Ok(Target { host: authority.clone(), authority, path })
}

/// The route's 402, decoded.
async fn payment_required(target: &Target) -> anyhow::Result<serde_json::Value> {
    let mut sender = Some(connect(target).await?);
    let Some(connection) = sender.as_mut() else { bail!("no connection") };
    let request = hyper::Request::get(target.path.as_str()).header(hyper::header::HOST, target.host.as_str()).body(Empty::new())?;
    let response = connection.send_request(request).await?;
    let header = response.headers().get("payment-required").context("the URL did not answer a 402 with PAYMENT-REQUIRED")?.clone();
    x402::decode_header(header.as_bytes(), 64 * 1024).context("PAYMENT-REQUIRED")
}

fn payer_keys(args: &Args) -> anyhow::Result<Vec<PrivateKeySigner>> {
    let keys: Vec<PrivateKeySigner> = args.keys.split(',').filter(|k| !k.is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    if keys.is_empty() {
        bail!("--pay and --channel-requests need --keys");
    }
    Ok(keys)
}

/// Reads the route's 402 and signs `args.pay` payments for its first offer.
async fn sign_payments(args: &Args, target: &Target) -> anyhow::Result<Vec<String>> {
    let required = payment_required(target).await?;
    let offer = required["accepts"][0].clone();
    let resource = required["resource"].clone();
    let keys = payer_keys(args)?;
    let offer = Arc::new(Offer::from_json(&offer, resource)?);
    let keys = Arc::new(keys);
    let bad_signature = args.bad_signature;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = args.pay.div_ceil(workers);
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let (offer, keys) = (offer.clone(), keys.clone());
            std::thread::spawn(move || {
                let range = worker * chunk..((worker + 1) * chunk);
                range.map(|n| offer.sign(&keys[n % keys.len()], n as u64, bad_signature)).collect::<anyhow::Result<Vec<String>>>()
            })
        })
        .collect();
    let mut payments = Vec::with_capacity(args.pay);
    for handle in handles {
        payments.extend(handle.join().map_err(|_| anyhow::anyhow!("a signing thread panicked"))??);
    }
    payments.truncate(args.pay);
    Ok(payments)
}

struct Offer {
    wire: serde_json::Value,
    resource: serde_json::Value,
    domain: TokenDomain,
    pay_to: Address,
    amount: U256,
    now: u64,
    max_timeout: u64,
    run_salt: u64,
}

impl Offer {
    fn from_json(offer: &serde_json::Value, resource: serde_json::Value) -> anyhow::Result<Self> {
        let field = |name: &str| offer[name].as_str().with_context(|| format!("offer has no {name}"));
        let chain_id: u64 = field("network")?.trim_start_matches("eip155:").parse()?;
        let asset: Address = field("asset")?.parse()?;
        let domain = TokenDomain::new(
            offer["extra"]["name"].as_str().unwrap_or("USDC"),
            offer["extra"]["version"].as_str().unwrap_or("2"),
            chain_id,
            asset,
        );
        let now = x402_store::unix_now();
        Ok(Self {
            wire: offer.clone(),
            resource,
            domain,
            pay_to: field("payTo")?.parse()?,
            amount: field("amount")?.parse()?,
            now,
            max_timeout: offer["maxTimeoutSeconds"].as_u64().unwrap_or(300),
            // Distinct nonces across runs against the same gateway.
            run_salt: u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() & u128::from(u64::MAX))?,
        })
    }

    /// A `PAYMENT-SIGNATURE` header value with nonce (run salt, n).
    fn sign(&self, signer: &PrivateKeySigner, n: u64, spoil: bool) -> anyhow::Result<String> {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&self.run_salt.to_be_bytes());
        nonce[24..].copy_from_slice(&n.to_be_bytes());
        let nonce = B256::from(nonce);
        let (valid_after, valid_before) = (self.now - 600, self.now + self.max_timeout);
        let message = TransferWithAuthorization {
            from: signer.address(),
            to: self.pay_to,
            value: self.amount,
            validAfter: U256::from(valid_after),
            validBefore: U256::from(valid_before),
            nonce,
        };
        let mut signature = signer.sign_hash_sync(&self.domain.signing_hash(&message))?;
        if spoil {
            // Still well formed and low-s; the other parity recovers another key.
            signature = signature.with_parity(!signature.v());
        }
        let payload = serde_json::json!({
            "x402Version": 2,
            "resource": self.resource,
            "accepted": self.wire,
            "payload": {
                "signature": format!("0x{}", hex::encode(signature.as_bytes())),
                "authorization": {
                    "from": signer.address().to_checksum(None),
                    "to": self.pay_to.to_checksum(None),
                    "value": self.amount.to_string(),
                    "validAfter": valid_after.to_string(),
                    "validBefore": valid_before.to_string(),
                    "nonce": nonce.to_string(),
                }
            }
        });
        Ok(x402::encode_header(&payload))
    }
}

/// Sends each channel's deposit (its first payment), all at once and before the clock starts,
/// so a deposit's wait for the chain is not charged to the requests behind it; returns the
/// vouchers left to send.
async fn open_channels(target: &Arc<Target>, channels: Vec<Vec<String>>) -> anyhow::Result<Vec<Vec<String>>> {
    let opening: Vec<_> = channels
        .into_iter()
        .map(|mut payments| {
            let target = target.clone();
            tokio::spawn(async move {
                if !payments.is_empty() {
                    let deposit = payments.remove(0);
                    let status = send_one(&mut None, &target, Some(deposit.as_str())).await?;
                    if status != 200 {
                        bail!("a channel's deposit was answered {status}");
                    }
                }
                Ok(payments)
            })
        })
        .collect();
    let mut opened = Vec::with_capacity(opening.len());
    for task in opening {
        opened.push(task.await??);
    }
    Ok(opened)
}

/// Reads the route's `batch-settlement` offer and signs, per connection, its channel's deposit
/// and vouchers (`args.channel_requests` payments), on all cores.
async fn sign_channels(args: &Args, target: &Target) -> anyhow::Result<Vec<Vec<String>>> {
    let required = payment_required(target).await?;
    let accepts = required["accepts"].as_array().context("402 without accepts")?;
    let wire = accepts.iter().find(|offer| offer["scheme"] == "batch-settlement").context("the route offers no batch-settlement")?;
    let offer = Arc::new(ChannelOffer::from_json(wire, required["resource"].clone())?);
    let keys = Arc::new(payer_keys(args)?);
    let requests = args.channel_requests;
    let handles: Vec<_> = (0..args.connections)
        .map(|connection| {
            let (offer, keys) = (offer.clone(), keys.clone());
            std::thread::spawn(move || offer.sign_channel(&keys[connection % keys.len()], connection as u64, requests))
        })
        .collect();
    handles.into_iter().map(|handle| handle.join().map_err(|_| anyhow::anyhow!("a signing thread panicked"))?).collect()
}

struct ChannelOffer {
    wire: serde_json::Value,
    resource: serde_json::Value,
    batch: x402_evm::batch_settlement::BatchOffer,
    now: u64,
    run_salt: u64,
}

impl ChannelOffer {
    fn from_json(offer: &serde_json::Value, resource: serde_json::Value) -> anyhow::Result<Self> {
        let exact = Offer::from_json(offer, resource.clone())?;
        let field = |name: &str| offer["extra"][name].as_str().with_context(|| format!("offer has no extra.{name}"));
        let batch = x402_evm::batch_settlement::BatchOffer {
            channel_domain: x402_evm::batch_settlement::ChannelDomain::new(exact.domain.chain_id),
            pay_to: exact.pay_to,
            receiver_authorizer: field("receiverAuthorizer")?.parse()?,
            withdraw_delay: offer["extra"]["withdrawDelay"].as_u64().context("offer has no extra.withdrawDelay")?,
            price: u128::try_from(exact.amount)?,
            enforced_min_deposit: None,
            token: exact.domain,
        };
        Ok(Self { wire: offer.clone(), resource, batch, now: exact.now, run_salt: exact.run_salt })
    }

    /// One channel's payments in order: the deposit (with the first voucher), then vouchers.
    fn sign_channel(&self, signer: &PrivateKeySigner, connection: u64, requests: usize) -> anyhow::Result<Vec<String>> {
        use x402_evm::batch_settlement::{signing_hash, verify::deposit_nonce, ChannelConfig, ReceiveWithAuthorization, DEPOSIT_COLLECTOR};
        let mut salt = [0u8; 32];
        salt[..8].copy_from_slice(&self.run_salt.to_be_bytes());
        salt[24..].copy_from_slice(&connection.to_be_bytes());
        let config = ChannelConfig {
            payer: signer.address(),
            payerAuthorizer: signer.address(),
            receiver: self.batch.pay_to,
            receiverAuthorizer: self.batch.receiver_authorizer,
            token: self.batch.token.verifying_contract,
            withdrawDelay: self.batch.withdraw_delay,
            salt: B256::from(salt),
        };
        let id = self.batch.channel_domain.channel_id(&config);
        let config_json = serde_json::json!({
            "payer": config.payer.to_checksum(None), "payerAuthorizer": config.payerAuthorizer.to_checksum(None),
            "receiver": config.receiver.to_checksum(None), "receiverAuthorizer": config.receiverAuthorizer.to_checksum(None),
            "token": config.token.to_checksum(None), "withdrawDelay": config.withdrawDelay, "salt": config.salt.to_string(),
        });
        let price = self.batch.price;
        let deposit = price * requests as u128;
        let valid_before = self.now + 3600;
        let deposit_message = ReceiveWithAuthorization {
            from: config.payer,
            to: DEPOSIT_COLLECTOR,
            value: U256::from(deposit),
            validAfter: U256::ZERO,
            validBefore: U256::from(valid_before),
            nonce: deposit_nonce(id, config.salt),
        };
        let deposit_signature = signer.sign_hash_sync(&signing_hash(self.batch.token.separator(), &deposit_message))?;
        let mut payments = Vec::with_capacity(requests);
        for k in 1..=requests as u128 {
            let max = k * price;
            let signature = signer.sign_hash_sync(&self.batch.channel_domain.voucher_hash(id, max))?;
            let voucher = serde_json::json!({"channelId": id.to_string(), "maxClaimableAmount": max.to_string(), "signature": hex::encode_prefixed(signature.as_bytes())});
            let payload = if k == 1 {
                serde_json::json!({"type": "deposit", "channelConfig": config_json, "voucher": voucher, "deposit": {"amount": deposit.to_string(), "authorization": {"erc3009Authorization": {
                    "validAfter": "0", "validBefore": valid_before.to_string(), "salt": config.salt.to_string(), "signature": hex::encode_prefixed(deposit_signature.as_bytes())
                }}}})
            } else {
                serde_json::json!({"type": "voucher", "channelConfig": config_json, "voucher": voucher})
            };
            payments.push(x402::encode_header(&serde_json::json!({"x402Version": 2, "resource": self.resource, "accepted": self.wire, "payload": payload})));
        }
        Ok(payments)
    }
}
