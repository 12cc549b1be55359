//! The `x402-gateway` command.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

// A proxy allocates and frees a few small buffers per request on every worker: measured
// with the load harness, mimalloc takes 10-15% less CPU per request than glibc's malloc, on
// free and paid routes alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "x402-gateway", version, about = "A reverse proxy that charges per request with x402 payments")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "X402_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing syntax, e.g. `info` or `info,x402_settle=debug`).
    #[arg(long, global = true, default_value = "info", env = "X402_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Take the listening sockets over from a running gateway, which hands them over
        /// when it gets SIGQUIT (zero-downtime binary upgrade; see README).
        #[arg(long)]
        upgrade: bool,
    },
    /// Check a configuration file; print each error with its line and field.
    Validate {
        /// The configuration file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Print the resolved route table, in match order, with prices in dollars and atomic units.
    Routes {
        /// The configuration file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Explain one request instead: its canonical target, the route it matches and why.
        /// METHOD then a path or URL, e.g. `--explain GET /w%65ather/`.
        #[arg(long, num_args = 2, value_names = ["METHOD", "URL"])]
        explain: Option<Vec<String>>,
    },
    /// Print the exact answer the gateway would give an unpaid request (the 402 it would send).
    Quote {
        /// The configuration file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// HTTP method, e.g. GET.
        method: String,
        /// The full URL as a client would ask for it, e.g. http://127.0.0.1:8402/weather.
        url: String,
    },
    /// Read the settlement journal (safe while the gateway runs).
    Payments {
        /// The configuration file; its `settlement.journal_path` names the journal.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// The journal file itself, instead of the one the config names.
        #[arg(long)]
        journal: Option<PathBuf>,
        #[command(subcommand)]
        query: PaymentsQuery,
    },
    /// List the batch-settlement channels in the journal, most unclaimed value first, one
    /// JSON object per line: payer, deposit, charged, claimed, unclaimed, withdraw deadline.
    Channels {
        /// The configuration file; its `settlement.journal_path` names the journal.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// The journal file itself, instead of the one the config names.
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Only this payer's channels.
        #[arg(long)]
        payer: Option<String>,
    },
}

#[derive(Subcommand)]
enum PaymentsQuery {
    /// Payments, newest first, one JSON object per line.
    List {
        /// accepted, submitted, settled or failed.
        #[arg(long, value_parser = ["accepted", "submitted", "settled", "failed"])]
        state: Option<String>,
        /// The payer's address.
        #[arg(long)]
        payer: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One payment by its receipt id, as JSON.
    Show { receipt_id: String },
    /// How many payments are in each state.
    Summary,
    /// Payers refused after a failed settlement, one JSON object per line.
    Blocked,
    /// Settles every unsettled payment of the journal, then exits: for the journal of a
    /// replica lost for good, from another machine. Needs the lost replica's settlement key
    /// (the config's `settlement.private_key_env`) and, with `store: redis`, frees what its
    /// payments counted in the shared store. Never run it beside a gateway on the same journal.
    Settle {
        /// Give up (exit 1, what is left stays in the journal) after this long.
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// Lets a refused payer pay again (the running gateway picks it up within a second).
    Unblock {
        #[arg(long)]
        payer: String,
    },
    /// Payments oldest first, for the audit trail that the journal's retention prunes:
    /// JSON lines or CSV (a header row, then one row per payment). Streams, so any size of
    /// journal exports in constant memory; safe while the gateway runs.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Which payments: `all` is every state, unsettled ones included.
        #[arg(long, value_enum, default_value_t = ExportState::Settled)]
        state: ExportState,
        /// Only payments whose state last changed at or after this, so each export can take
        /// what changed since the one before: Unix seconds or RFC 3339 (2026-01-31T00:00:00Z).
        #[arg(long, value_parser = parse_since_ms, value_name = "TIME")]
        since: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportState {
    Settled,
    Failed,
    All,
}

impl ExportState {
    /// The journal's state name; `None`: every state.
    fn state_name(self) -> Option<&'static str> {
        match self {
            Self::Settled => Some("settled"),
            Self::Failed => Some("failed"),
            Self::All => None,
        }
    }
}

/// `--since` in Unix milliseconds, from Unix seconds or an RFC 3339 time.
fn parse_since_ms(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds.saturating_mul(1000));
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| format!("neither Unix seconds nor an RFC 3339 time: {e}"))?;
    u64::try_from(time.timestamp_millis()).map_err(|_| "before 1970".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let result = match cli.command {
        Command::Run { config, upgrade } => x402_gateway::server::run(&config, x402_gateway::server::RunOptions { upgrade }),
        Command::Validate { config } => validate(&config),
        Command::Payments { config, journal, query } => payments(&config, journal, query),
        Command::Channels { config, journal, payer } => channels(&config, journal, payer),
        Command::Routes { config, explain: None } => load(&config).map(|c| print!("{}", x402_gateway::inspect::route_table(&c))),
        Command::Routes { config, explain: Some(request) } => explain(&config, &request),
        Command::Quote { config, method, url } => quote(&config, &method, &url),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let priced = config.routes.iter().filter(|r| r.pricing.is_some()).count();
    for warning in x402_gateway::inspect::routing_warnings(&config) {
        println!("warning: {warning}");
    }
    println!(
        "{}: ok ({} routes, {priced} priced; {} upstreams; {} networks)",
        path.display(),
        config.routes.len(),
        config.upstreams.len(),
        config.networks.len()
    );
    Ok(())
}

/// The config for the inspecting commands, which run without the settlement key.
fn load(path: &std::path::Path) -> anyhow::Result<x402_gateway::config::Config> {
    let (config, warning) = x402_gateway::config::load_config_for_inspection(path).context("invalid configuration")?;
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    Ok(config)
}

fn quote(config: &std::path::Path, method: &str, url: &str) -> anyhow::Result<()> {
    let method: http::Method = method.to_ascii_uppercase().parse().with_context(|| format!("{method:?} is not an HTTP method"))?;
    let url: http::Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    anyhow::ensure!(url.scheme().is_some() && url.authority().is_some(), "give the full URL, e.g. http://127.0.0.1:8402/weather");
    print!("{}", x402_gateway::inspect::quote(&load(config)?, &method, &url));
    Ok(())
}

fn explain(config: &std::path::Path, request: &[String]) -> anyhow::Result<()> {
    let [method, url] = request else { anyhow::bail!("--explain takes METHOD and URL") };
    let method: http::Method = method.to_ascii_uppercase().parse().with_context(|| format!("{method:?} is not an HTTP method"))?;
    let url: http::Uri = url.parse().with_context(|| format!("{url:?} is not a path or URL"))?;
    let explanation = x402_gateway::inspect::explain(&load(config)?, &method, &url);
    print!("{}", x402_gateway::inspect::explain_text(&explanation));
    Ok(())
}

fn journal_path(config: &std::path::Path, journal: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match journal {
        Some(path) => Ok(path),
        None => Ok(load(config)?.settlement.journal_path),
    }
}

fn channels(config: &std::path::Path, journal: Option<PathBuf>, payer: Option<String>) -> anyhow::Result<()> {
    let path = journal_path(config, journal)?;
    let payer = match payer {
        Some(text) => Some(text.parse::<alloy_primitives::Address>().with_context(|| format!("--payer {text:?} is not an address"))?),
        None => None,
    };
    let reader = x402_store::Journal::open_read_only(&path).with_context(|| format!("cannot read the journal {}", path.display()))?;
    let records = reader.channels()?.into_iter().filter(|record| payer.is_none_or(|payer| record.terms.payer == payer.into_array())).collect();
    for record in x402_gateway::channel_payment::channels_by_unclaimed(records) {
        println!("{}", x402_gateway::channel_payment::channel_json(&record));
    }
    Ok(())
}

fn payments(config: &std::path::Path, journal: Option<PathBuf>, query: PaymentsQuery) -> anyhow::Result<()> {
    let path = journal_path(config, journal)?;
    if let PaymentsQuery::Settle { timeout_seconds } = query {
        let left = x402_gateway::server::settle_journal(config, &path, std::time::Duration::from_secs(timeout_seconds))?;
        anyhow::ensure!(left == 0, "{left} payments are still unsettled in {}; run it again", path.display());
        println!("{}: every payment is settled or failed", path.display());
        return Ok(());
    }
    if let PaymentsQuery::Unblock { payer } = &query {
        let cleared = x402_store::clear_payer_block(&path, payer)?;
        let shared = unblock_in_shared_store(config, payer)?;
        println!("{}", if cleared || shared { format!("{payer}: unblocked") } else { format!("{payer}: was not blocked") });
        return Ok(());
    }
    let reader = x402_store::Journal::open_read_only(&path).with_context(|| format!("cannot read the journal {}", path.display()))?;
    match query {
        PaymentsQuery::List { state, payer, limit } => {
            for record in reader.list(&x402_store::PaymentFilter { state, payer, limit })? {
                println!("{}", x402_gateway::receipts::receipt_json(&record));
            }
        }
        PaymentsQuery::Show { receipt_id } => {
            let record = reader.by_receipt(&receipt_id)?.with_context(|| format!("no payment has receipt id {receipt_id}"))?;
            println!("{:#}", x402_gateway::receipts::receipt_json(&record));
        }
        PaymentsQuery::Summary => println!("{}", serde_json::to_string(&reader.counts()?)?),
        PaymentsQuery::Blocked => {
            for block in reader.payer_blocks(x402_store::unix_now())? {
                println!("{}", serde_json::json!({"payer": block.payer, "until": block.until, "reason": block.reason}));
            }
        }
        PaymentsQuery::Export { format, state, since } => {
            let filter = x402_store::ExportFilter { state: state.state_name().map(str::to_owned), since_ms: since.unwrap_or(0) };
            export(&reader, &filter, format)?;
        }
        PaymentsQuery::Unblock { .. } | PaymentsQuery::Settle { .. } => {}
    }
    Ok(())
}

/// With `store: redis`, the block lives in the shared store too: every replica refuses the
/// payer until it is removed there. False when the config names no shared store.
fn unblock_in_shared_store(config: &std::path::Path, payer: &str) -> anyhow::Result<bool> {
    let Ok((config, _)) = x402_gateway::config::load_config_for_inspection(config) else { return Ok(false) };
    let x402_gateway::config::model::StoreSettings::Redis(settings) = config.store else { return Ok(false) };
    x402_store::unblock_in_store(&settings, payer).context("cannot remove the block from the shared store (store.url)")
}

/// Writes every payment `filter` selects to stdout as it is read.
fn export(reader: &x402_store::JournalReader, filter: &x402_store::ExportFilter, format: ExportFormat) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        ExportFormat::Jsonl => {
            reader.export(filter, |record| -> anyhow::Result<()> {
                serde_json::to_writer(&mut out, &x402_gateway::receipts::ExportRow::from(&record))?;
                Ok(out.write_all(b"\n")?)
            })?;
        }
        ExportFormat::Csv => {
            let mut csv = csv::WriterBuilder::new().has_headers(false).from_writer(&mut out);
            csv.write_record(x402_gateway::receipts::ExportRow::COLUMNS)?;
            reader.export(filter, |record| -> anyhow::Result<()> { Ok(csv.serialize(x402_gateway::receipts::ExportRow::from(&record))?) })?;
            csv.flush()?;
        }
    }
    out.flush().context("cannot write the export")
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for people at a terminal: escape codes in log files and collectors are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(error) = installed {
        eprintln!("logging disabled: {error}");
    }
}
