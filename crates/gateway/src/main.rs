//! The `x402-gateway` command.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

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
    },
    /// Check a configuration file; print each error with its line and field.
    Validate {
        /// The configuration file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let result = match cli.command {
        Command::Run { config } => x402_gateway::server::run(&config),
        Command::Validate { config } => validate(&config),
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
    let config = x402_gateway::config::load_config(path).context("invalid configuration")?;
    let priced = config.routes.iter().filter(|r| r.pricing.is_some()).count();
    println!(
        "{}: ok ({} routes, {priced} priced; {} upstreams; {} networks)",
        path.display(),
        config.routes.len(),
        config.upstreams.len(),
        config.networks.len()
    );
    Ok(())
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(error) = installed {
        eprintln!("logging disabled: {error}");
    }
}
