//! Where the shared store's primary is, and the connection to it.
//!
//! `store.url` names either one server (`redis://`, `rediss://`, `redis+unix://`) or the
//! Sentinels that watch a primary (`redis+sentinel://host:port[,host:port…]/service[/db]`).
//! After a failover the old primary refuses writes (`READONLY`) or stops answering; either
//! sends the ledger back here for a fresh connection: the Sentinels are asked again which
//! server is the primary now, and a plain URL is opened again (its name may point elsewhere
//! by then, as a Kubernetes Service's does).

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisResult, ServerErrorKind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `store.url`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server; the URL is the `redis` crate's.
    Server(String),
    /// The Sentinels watching `service`; the credentials and database are the primary's.
    Sentinel { sentinels: Vec<(String, u16)>, service: String, username: Option<String>, password: Option<String>, db: i64 },
}

const SENTINEL_SCHEME: &str = "redis+sentinel://";

impl RedisEndpoint {
    /// Reads a store URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            return parse_sentinel(rest);
        }
        if ["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|scheme| url.starts_with(scheme)) {
            return Ok(Self::Server(url.to_owned()));
        }
        Err("must start with redis://, rediss://, redis+unix:// or redis+sentinel://".into())
    }

    /// For messages: never the password.
    pub fn describe(&self) -> String {
        match self {
            Self::Server(url) => redacted(url),
            Self::Sentinel { sentinels, service, .. } => {
                let nodes: Vec<String> = sentinels.iter().map(|(host, port)| format!("{host}:{port}")).collect();
                format!("primary {service:?} of the Sentinels {}", nodes.join(","))
            }
        }
    }

    fn sentinel_client(&self) -> RedisResult<Option<SentinelClient>> {
        let Self::Sentinel { sentinels, service, username, password, db } = self else { return Ok(None) };
        let nodes = sentinels.iter().map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder = SentinelClientBuilder::new(nodes, service, SentinelServerType::Master)?.set_client_to_redis_db(*db);
        if let Some(username) = username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_redis_password(password);
        }
        builder.build().map(Some)
    }

    /// A client for the primary, found now, from a process with no runtime (the CLI).
    pub fn client_now(&self) -> RedisResult<redis::Client> {
        match self.sentinel_client()? {
            Some(mut sentinel) => sentinel.get_client(),
            None => redis::Client::open(self.server_url()),
        }
    }

    fn server_url(&self) -> &str {
        match self {
            Self::Server(url) => url,
            Self::Sentinel { .. } => "",
        }
    }
}

fn parse_sentinel(rest: &str) -> Result<RedisEndpoint, String> {
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    // As in redis:// URLs: `user:password@`, `:password@` or `user@`, percent-encoded.
    let (username, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
        Some((user, password)) => (decoded(user)?, decoded(password)?),
        None => (None, None),
    };
    let mut parts = rest.split('/');
    let nodes = parts.next().unwrap_or_default();
    let service = parts.next().filter(|service| !service.is_empty()).ok_or("redis+sentinel:// needs the primary's service name: redis+sentinel://host:port[,host:port]/service[/db]")?;
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db.parse().ok().filter(|db: &i64| *db >= 0).ok_or_else(|| format!("redis+sentinel://: {db:?} is not a database number"))?,
    };
    if parts.next().is_some() {
        return Err("redis+sentinel://: too many path segments (host:port[,host:port]/service[/db])".into());
    }
    let sentinels = nodes.split(',').map(parse_node).collect::<Result<Vec<_>, _>>()?;
    Ok(RedisEndpoint::Sentinel { sentinels, service: service.to_owned(), username, password, db })
}

/// A percent-encoded URL part; `None` when empty.
fn decoded(part: &str) -> Result<Option<String>, String> {
    let text = percent_encoding::percent_decode_str(part).decode_utf8().map_err(|_| "redis+sentinel://: the credentials are not UTF-8 once decoded".to_owned())?;
    Ok((!text.is_empty()).then(|| text.into_owned()))
}

fn parse_node(node: &str) -> Result<(String, u16), String> {
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match node.rsplit_once(':') {
        Some((host, port)) if !node.ends_with(']') && (!node.starts_with('[') || host.ends_with(']')) => {
            (host, port.parse().map_err(|_| format!("redis+sentinel://: {node:?} has no valid port"))?)
        }
        _ => (node, 26379),
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!("redis+sentinel://: write an IPv6 Sentinel address in brackets ({node:?})"));
    }
    if host.is_empty() {
        return Err(format!("redis+sentinel://: a Sentinel address is empty in {node:?}"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

/// The URL without its password (nor a query, where `redis+unix://` carries it), for messages.
pub(super) fn redacted(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(path, _)| path);
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A failover shows as `READONLY` (the node was demoted to a replica), from a command or
/// from inside a script.
pub(super) fn is_demoted(error: &redis::RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) || error.to_string().contains("READONLY")
}

/// Reconnections are this far apart at least: a dead primary is asked for once a second.
const RECONNECT_SPACING: Duration = Duration::from_millis(500);

/// The connection every store call uses, replaced when the primary moves.
pub(super) struct Primary {
    endpoint: RedisEndpoint,
    config: ConnectionManagerConfig,
    patience: Duration,
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    current: ArcSwap<Connections>,
    /// Holds that wait for replicas get their own socket: `WAIT` blocks the socket it is
    /// sent on, and every other call would queue behind it.
    waits: bool,
    last_reconnect: Mutex<Instant>,
}

struct Connections {
    shared: ConnectionManager,
    waiting: Option<ConnectionManager>,
    /// The server they reach, as the Sentinels named it.
    address: String,
}

/// What a reconnection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reconnected {
    /// The last one was too recent; try again later.
    TooSoon,
    /// The Sentinels name the same primary as before.
    SamePrimary,
    /// Another primary: another address, or a server that was demoted (a plain URL's name
    /// may point to the new primary now).
    NewPrimary,
}

impl Primary {
    /// `waits`: holds will wait for replicas (`WAIT`) and need a socket of their own.
    pub(super) async fn connect(endpoint: RedisEndpoint, timeout: Duration, waits: bool) -> Result<Self, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let sentinel = endpoint.sentinel_client().map_err(|error| error.to_string())?.map(tokio::sync::Mutex::new);
        let patience = timeout * 20 + Duration::from_secs(1);
        let connections = open(&endpoint, sentinel.as_ref(), &config, patience, waits).await.map_err(|error| format!("{}: {error}", endpoint.describe()))?;
        Ok(Self { endpoint, config, patience, sentinel, current: ArcSwap::from_pointee(connections), waits, last_reconnect: Mutex::new(never_reconnected()) })
    }

    pub(super) fn connection(&self) -> ConnectionManager {
        self.current.load().shared.clone()
    }

    /// The socket for holds that end with a `WAIT`.
    pub(super) fn waiting_connection(&self) -> ConnectionManager {
        let connections = self.current.load();
        connections.waiting.as_ref().unwrap_or(&connections.shared).clone()
    }

    pub(super) fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// Finds the primary again and connects to it, at most every [`RECONNECT_SPACING`].
    /// `demoted`: the server answered `READONLY`, so whatever answers now is another primary.
    pub(super) async fn reconnect(&self, demoted: bool) -> Result<Reconnected, String> {
        {
            let mut last = self.last_reconnect.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() < RECONNECT_SPACING {
                return Ok(Reconnected::TooSoon);
            }
            *last = Instant::now();
        }
        let connections = open(&self.endpoint, self.sentinel.as_ref(), &self.config, self.patience, self.waits)
            .await
            .map_err(|error| format!("{}: {error}", self.endpoint.describe()))?;
        let same = !demoted && connections.address == self.current.load().address;
        self.current.store(std::sync::Arc::new(connections));
        tracing::warn!(store = %self.endpoint.describe(), same, "reconnected to the shared store's primary");
        Ok(if same { Reconnected::SamePrimary } else { Reconnected::NewPrimary })
    }
}

/// A first reconnection may come at once.
fn never_reconnected() -> Instant {
    Instant::now().checked_sub(RECONNECT_SPACING).unwrap_or_else(Instant::now)
}

/// Asks the Sentinels for the primary (or takes the URL) and connects to it.
async fn open(endpoint: &RedisEndpoint, sentinel: Option<&tokio::sync::Mutex<SentinelClient>>, config: &ConnectionManagerConfig, patience: Duration, waits: bool) -> RedisResult<Connections> {
    let late = |what: &'static str| redis::RedisError::from((ErrorKind::Io, what));
    let client = match sentinel {
        Some(sentinel) => tokio::time::timeout(patience, async { sentinel.lock().await.async_get_client().await }).await.map_err(|_| late("no Sentinel answered in time"))??,
        None => redis::Client::open(endpoint.server_url())?,
    };
    let manager = || async { tokio::time::timeout(patience, ConnectionManager::new_with_config(client.clone(), config.clone())).await.map_err(|_| late("no answer in time"))? };
    let shared = manager().await?;
    let waiting = if waits { Some(manager().await?) } else { None };
    Ok(Connections { shared, waiting, address: client.get_connection_info().addr().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_read_and_sentinel_urls_name_their_nodes_service_and_database() {
        assert_eq!(RedisEndpoint::parse("redis://10.0.0.5:6379/0"), Ok(RedisEndpoint::Server("redis://10.0.0.5:6379/0".into())));
        assert_eq!(
            RedisEndpoint::parse("redis+sentinel://:s3cret@s1:26379,s2:26380,s3/payments/2"),
            Ok(RedisEndpoint::Sentinel {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380), ("s3".into(), 26379)],
                service: "payments".into(),
                username: None,
                password: Some("s3cret".into()),
                db: 2,
            })
        );
        let decoded = RedisEndpoint::parse("redis+sentinel://gw%40fleet:p%3Aw%2Fd@[::1],[::1]:26380/payments").unwrap();
        assert_eq!(
            decoded,
            RedisEndpoint::Sentinel {
                sentinels: vec![("::1".into(), 26379), ("::1".into(), 26380)],
                service: "payments".into(),
                username: Some("gw@fleet".into()),
                password: Some("p:w/d".into()),
                db: 0,
            }
        );
        let user_only = RedisEndpoint::parse("redis+sentinel://gateway@s1/payments").unwrap();
        assert!(matches!(user_only, RedisEndpoint::Sentinel { username: Some(ref u), password: None, .. } if u == "gateway"));
        for bad in ["http://r:6379", "redis+sentinel://s1:26379", "redis+sentinel://s1:x/payments", "redis+sentinel://,s2/p", "redis+sentinel://s1/p/zero", "redis+sentinel://::1/p", "redis+sentinel://s1/p/-1"] {
            assert!(RedisEndpoint::parse(bad).is_err(), "{bad}");
        }
        let described = RedisEndpoint::parse("redis+sentinel://u:pw@s1:26379/payments").unwrap().describe();
        assert!(!described.contains("pw") && described.contains("payments"), "{described}");
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(redacted("redis://:s3cret@10.0.0.5:6379/0"), "redis://…@10.0.0.5:6379/0");
        assert_eq!(redacted("redis://10.0.0.5:6379"), "redis://10.0.0.5:6379");
        assert_eq!(redacted("redis+unix:///run/redis.sock?pass=s3cret"), "redis+unix:///run/redis.sock");
    }
}
