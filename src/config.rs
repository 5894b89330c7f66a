//! The one configuration file every command reads. Defaults live here and are documented once,
//! in config.example.toml; an unknown key is an error that names it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file every command reads unless `--config` names another.
pub const DEFAULT_CONFIG: &str = "/etc/jumio-batchd/config.toml";

/// The ready marker a dropper writes last; never shipped.
pub const DEFAULT_MARKER: &str = "DONE";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where batches go. Required only by commands that connect.
    pub sftp: Option<SftpConfig>,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// The drop folders. Required only by `run` and `check`.
    pub paths: Option<PathsConfig>,
    #[serde(default)]
    pub watch: WatchConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Named routes, each a tenant with its own inbox and SFTP settings. None: `[sftp]` and
    /// `[paths] inbox` are the one route.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
}

/// What jumio-batchd does with a batch beyond Jumio's rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch of more than 10,000 rows is shipped as parts of at most 10,000 rows (false: rejected).
    pub split_over_limit: bool,
}

/// `[routes.NAME]`: one tenant. Its SFTP keys override `[sftp]`'s (which the routes share, with
/// the connection tuning); `inbox` relative to `[paths] inbox`, or absolute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub inbox: PathBuf,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub private_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub remote_dir: Option<String>,
}

/// Where a batch goes: a route's name (`None`: the `[sftp]` of a config without routes), the
/// inbox it comes from, and the server.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Option<String>,
    pub inbox: Option<PathBuf>,
    pub sftp: SftpConfig,
    /// The Jumio account behind the route, `user@host:port` (`lifecycle::tenancy` may respell
    /// it as the store already knows the same account).
    pub tenant: String,
}

impl Route {
    /// How logs and `status` name the route.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_ROUTE)
    }

    /// The route of `sftp`, its tenant as configured.
    pub fn new(name: Option<String>, inbox: Option<PathBuf>, sftp: SftpConfig) -> Route {
        Route { name, inbox, tenant: tenant_of(&sftp), sftp }
    }

    /// The Jumio account behind the route: the duplicate guard is per tenant.
    pub fn tenant(&self) -> String {
        self.tenant.clone()
    }
}

/// The name shown for the route of a config without `[routes]`.
pub const DEFAULT_ROUTE: &str = "default";

/// `user@host:port`: the duplicate guard's notion of a tenant.
pub fn tenant_of(sftp: &SftpConfig) -> String {
    format!("{}@{}:{}", sftp.user, sftp.host.to_ascii_lowercase(), sftp.port)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    pub inbox: PathBuf,
    pub work: PathBuf,
    pub done: PathBuf,
    pub rejected: PathBuf,
    pub failed: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Ready when the batch folder holds the marker file.
    Marker,
    /// Ready when nothing in the folder changed for `settle_secs`.
    Settle,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    pub ready: Readiness,
    pub marker: String,
    pub settle_secs: u64,
    pub poll_secs: u64,
    pub max_parallel_batches: usize,
    /// Scan early on filesystem events; false relies on the rescan alone.
    pub events: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            ready: Readiness::Marker,
            marker: DEFAULT_MARKER.to_owned(),
            settle_secs: 30,
            poll_secs: 10,
            max_parallel_batches: 2,
            events: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Prometheus metrics, served by `run` only when `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port for `/metrics`, such as "127.0.0.1:9464".
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `debug`, `jumio_batchd=debug`); RUST_LOG wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".to_owned() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// SQLite database on local disk (never on the drop share), or a `postgres://` URL: the
    /// database a fleet of ingest hosts shares (fleet mode).
    pub database: PathBuf,
    /// PostgreSQL: a file holding the password (else `JUMIO_BATCHD_DATABASE_PASSWORD`, else the
    /// URL's, else none). Never logged.
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: this host's own folder for its lock files and the batches `send` and
    /// `resubmit` build (SQLite keeps them beside the database).
    pub local_dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            database: PathBuf::from("/var/lib/jumio-batchd/state.db"),
            password_file: None,
            local_dir: PathBuf::from("/var/lib/jumio-batchd"),
        }
    }
}

/// The environment variable a PostgreSQL password may come from.
pub const DATABASE_PASSWORD_ENV: &str = "JUMIO_BATCHD_DATABASE_PASSWORD";

impl StateConfig {
    /// The PostgreSQL URL, when the database is one (fleet mode).
    pub fn postgres_url(&self) -> Option<&str> {
        self.database.to_str().filter(|d| d.starts_with("postgres://") || d.starts_with("postgresql://"))
    }

    /// The database as it may be shown: a URL without its password.
    pub fn shown(&self) -> String {
        match self.postgres_url() {
            Some(url) => redact_url(url),
            None => self.database.display().to_string(),
        }
    }

    /// Where this host keeps what belongs to it alone, as if it were a database file: lock files
    /// go to `<base>.locks`, built batches to `<base>.resubmits` and `<base>.parts`.
    pub fn local_base(&self) -> PathBuf {
        match self.postgres_url() {
            Some(_) => self.local_dir.join("fleet"),
            None => self.database.clone(),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`, whatever characters the
/// password holds (`/`, `@`, `?` typed as they are): everything up to the last `@` is the user
/// part, and all of it after the user's name is hidden.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let rest = match rest.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{name}:***@{host}")
        }
        _ => rest.to_owned(),
    };
    // A password may ride in the query too (`?password=`, `sslpassword=`).
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let shown: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("pass") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", shown.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

/// Every `scheme://...` in `text` (an error that quotes a line of the config, say) with its
/// password hidden as `redact_url` hides it.
pub fn scrub_urls(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')).map_or(0, |i| i + 1);
        let end = rest[at..].find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`')).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The connection parameters a `postgres://` URL may carry (libpq's names that sqlx reads); any
/// other is refused by name, its value never shown.
const DATABASE_URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "statement-cache-capacity",
];

/// `text` with every secret in it replaced by `***`: for messages that may quote a connection
/// string (or a part of one) however a parser cut it.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

impl StateConfig {
    /// The passwords this config may make us use (the URL's as typed, the password file's, the
    /// environment's), for `redact`: never in a message.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Some((_, rest)) = self.postgres_url().and_then(|url| url.split_once("://")) {
            if let Some((user, _)) = rest.rsplit_once('@') {
                if let Some((_, password)) = user.split_once(':') {
                    secrets.push(password.to_owned());
                    // As a URL parser may have cut it: at its first '/', '?' or '#'.
                    secrets.extend(password.split(['/', '?', '#']).filter(|p| p.len() >= 3).map(str::to_owned));
                }
            }
            for (key, value) in rest.split_once('?').map(|(_, q)| q).unwrap_or_default().split('&').filter_map(|p| p.split_once('=')) {
                if key.to_ascii_lowercase().contains("pass") {
                    secrets.push(value.to_owned());
                    secrets.extend(decoded(value));
                }
            }
        }
        if let Some(text) = self.password_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            secrets.push(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        secrets.extend(std::env::var(DATABASE_PASSWORD_ENV).ok());
        secrets.extend(std::env::var("PGPASSWORD").ok());
        secrets.retain(|s| !s.is_empty());
        // The longest first, so a part never leaves the rest of a secret behind.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }
}

/// `value` with its `%XX` escapes decoded, when it has any.
fn decoded(value: &str) -> Option<String> {
    if !value.contains('%') {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Fleet mode: several hosts on one drop share and one PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// This daemon's name in the fleet (default: the machine's hostname); unique per daemon.
    pub host_id: String,
    /// How long a host's hold on a batch lasts without renewal; renewed every third of it.
    pub lease_secs: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
        FleetConfig { host_id: host, lease_secs: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial_delay_secs: u64,
    pub max_delay_secs: u64,
    /// Upload attempts before a batch is failed (transient errors only; permanent ones fail at once).
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { initial_delay_secs: 10, max_delay_secs: 900, max_attempts: 8 }
    }
}

impl RetryConfig {
    /// Exponential backoff with full jitter: uniform in [0, min(max, initial * 2^(attempt-1))].
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.initial_delay_secs.saturating_mul(1u64 << attempt.saturating_sub(1).min(30)).min(self.max_delay_secs);
        Duration::from_millis(rng.gen_range(0..=ceiling.saturating_mul(1000)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    #[serde(default = "default_private_key")]
    pub private_key: PathBuf,
    #[serde(default = "default_known_hosts")]
    pub known_hosts: PathBuf,
    #[serde(default = "default_remote_dir")]
    pub remote_dir: String,
    #[serde(default = "default_connections")]
    pub connections: usize,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// How long a connection is kept open after a batch for the next one (0: closed at once).
    #[serde(default = "default_pool_idle_secs")]
    pub pool_idle_secs: u64,
}

fn default_port() -> u16 {
    22
}
fn default_private_key() -> PathBuf {
    PathBuf::from("/etc/jumio-batchd/id_ed25519")
}
fn default_known_hosts() -> PathBuf {
    PathBuf::from("/etc/jumio-batchd/known_hosts")
}
fn default_remote_dir() -> String {
    ".".to_owned()
}
fn default_connections() -> usize {
    8
}
fn default_timeout_secs() -> u64 {
    60
}
fn default_pool_idle_secs() -> u64 {
    30
}

impl SftpConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("config file {} has no [sftp] section; this command connects to Jumio and needs at least sftp.host and sftp.user (see config.example.toml)", path.display())]
    NoSftp { path: PathBuf },
    #[error("config file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("config file {} has no [paths] section; this command needs inbox, work, done, rejected and failed (see config.example.toml)", path.display())]
    NoPaths { path: PathBuf },
    #[error("config file {} has no route named {name:?}; its routes: {known}", path.display())]
    NoRoute { path: PathBuf, name: String, known: String },
}

/// A loaded config and the file it came from (for error messages).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
}

impl Config {
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // The error quotes the line it is about: a database URL there is shown without its password.
            message: scrub_urls(e.to_string().trim_end()).replace('\n', " "),
        })?;
        config.check(path)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Ok(Loaded { path: path.to_path_buf(), config: Config::parse(path, &text)? })
    }

    /// The named file, else the default path if it exists, else every default.
    pub fn load_or_default(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG)),
            None => Ok(Loaded { path: PathBuf::from(DEFAULT_CONFIG), config: Config::default() }),
        }
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid { path: path.to_path_buf(), message: message.to_owned() });
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts must be at least 1");
        }
        if self.retry.initial_delay_secs > self.retry.max_delay_secs {
            return invalid("retry.initial_delay_secs must not exceed retry.max_delay_secs");
        }
        if self.watch.marker.is_empty() || self.watch.marker.contains('/') {
            return invalid("watch.marker must be a plain file name such as DONE");
        }
        if self.watch.poll_secs == 0 || self.watch.max_parallel_batches == 0 {
            return invalid("watch.poll_secs and watch.max_parallel_batches must be at least 1");
        }
        for (name, route) in &self.routes {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return invalid(&format!("routes.{name}: a route's name may hold only letters, digits, - and _"));
            }
            if route.inbox.is_relative() && self.paths.is_none() {
                return invalid(&format!("routes.{name}.inbox is relative, to [paths] inbox, but there is no [paths] section"));
            }
            let sftp = self.route_sftp(route);
            if sftp.host.trim().is_empty() || sftp.user.trim().is_empty() {
                return invalid(&format!("routes.{name} needs host and user (its own, or from [sftp])"));
            }
        }
        let inboxes: Vec<PathBuf> = self.routes.values().map(|r| self.route_inbox(r)).collect();
        if inboxes.iter().enumerate().any(|(i, a)| inboxes[i + 1..].contains(a)) {
            return invalid("two routes share one inbox; give each route its own inbox folder");
        }
        let url = self.state.database.to_str().unwrap_or_default();
        if url.contains("://") && self.state.postgres_url().is_none() {
            return invalid("state.database is a URL but not postgres://; give a SQLite file path or a postgres:// URL");
        }
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        for key in query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').map_or(p, |(k, _)| k)) {
            if !DATABASE_URL_PARAMETERS.contains(&key) && !key.starts_with("options[") {
                return invalid(&format!(
                    "state.database has a connection parameter `{key}` that is not known (its value is not shown); known: {}",
                    DATABASE_URL_PARAMETERS.join(", ")
                ));
            }
        }
        if self.fleet.host_id.trim().is_empty() || self.fleet.host_id.len() > 200 {
            return invalid("fleet.host_id must be a non-empty name (at most 200 characters)");
        }
        if self.fleet.lease_secs < 3 {
            return invalid("fleet.lease_secs must be at least 3 (it is renewed every third of it)");
        }
        if let Some(sftp) = &self.sftp {
            if sftp.connections == 0 || sftp.connections > 64 {
                return invalid("sftp.connections must be between 1 and 64");
            }
            if sftp.host.trim().is_empty() {
                return invalid("sftp.host is empty");
            }
            if sftp.timeout_secs == 0 {
                return invalid("sftp.timeout_secs must be at least 1 (seconds a network step may take before it counts as failed)");
            }
        }
        Ok(())
    }
}

impl Config {
    /// A route's SFTP settings: `[sftp]` (or the defaults) with the route's keys on top.
    fn route_sftp(&self, route: &RouteConfig) -> SftpConfig {
        let mut sftp = self.sftp.clone().unwrap_or_else(|| SftpConfig {
            host: String::new(),
            port: default_port(),
            user: String::new(),
            private_key: default_private_key(),
            known_hosts: default_known_hosts(),
            remote_dir: default_remote_dir(),
            connections: default_connections(),
            timeout_secs: default_timeout_secs(),
            pool_idle_secs: default_pool_idle_secs(),
        });
        let RouteConfig { inbox: _, host, port, user, private_key, known_hosts, remote_dir } = route.clone();
        sftp.host = host.unwrap_or(sftp.host);
        sftp.port = port.unwrap_or(sftp.port);
        sftp.user = user.unwrap_or(sftp.user);
        sftp.private_key = private_key.unwrap_or(sftp.private_key);
        sftp.known_hosts = known_hosts.unwrap_or(sftp.known_hosts);
        sftp.remote_dir = remote_dir.unwrap_or(sftp.remote_dir);
        sftp
    }

    fn route_inbox(&self, route: &RouteConfig) -> PathBuf {
        match &self.paths {
            Some(paths) if route.inbox.is_relative() => paths.inbox.join(&route.inbox),
            _ => route.inbox.clone(),
        }
    }
}

impl Loaded {
    pub fn sftp(&self) -> Result<&SftpConfig, ConfigError> {
        self.config.sftp.as_ref().ok_or_else(|| ConfigError::NoSftp { path: self.path.clone() })
    }

    /// Every route: the named ones, or else the one of `[sftp]` and `[paths] inbox`.
    pub fn routes(&self) -> Result<Vec<Route>, ConfigError> {
        let config = &self.config;
        if config.routes.is_empty() {
            let inbox = config.paths.as_ref().map(|p| p.inbox.clone());
            return Ok(vec![Route::new(None, inbox, self.sftp()?.clone())]);
        }
        Ok(config
            .routes
            .iter()
            .map(|(name, r)| Route::new(Some(name.clone()), Some(config.route_inbox(r)), config.route_sftp(r)))
            .collect())
    }

    /// The route `send --route NAME` names, or the only one when none is named.
    pub fn route(&self, name: Option<&str>) -> Result<Route, ConfigError> {
        let routes = self.routes()?;
        let known = || routes.iter().map(|r| r.label().to_owned()).collect::<Vec<_>>().join(", ");
        match name {
            Some(name) => routes.iter().find(|r| r.label() == name).cloned(),
            None if routes.len() == 1 => routes.first().cloned(),
            None => {
                return Err(ConfigError::NoRoute {
                    path: self.path.clone(),
                    name: "(none given: name one with --route)".into(),
                    known: known(),
                })
            }
        }
        .ok_or_else(|| ConfigError::NoRoute { path: self.path.clone(), name: name.unwrap_or_default().to_owned(), known: known() })
    }

    pub fn paths(&self) -> Result<&PathsConfig, ConfigError> {
        self.config.paths.as_ref().ok_or_else(|| ConfigError::NoPaths { path: self.path.clone() })
    }

    /// The ready-marker file name, never shipped nor reported as unreferenced.
    pub fn marker(&self) -> Option<&str> {
        Some(&self.config.watch.marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_with_the_real_loader() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let loaded = Config::load(&path).expect("config.example.toml must parse");
        let sftp = loaded.sftp().unwrap();
        assert_eq!(sftp.port, 22);
        assert_eq!(sftp.connections, 8);
        assert_eq!(loaded.paths().unwrap().inbox, PathBuf::from("/srv/jumio/inbox"));
        assert_eq!(loaded.config.watch.ready, Readiness::Marker);
        let defaults = Config::default();
        assert_eq!(loaded.config.watch.settle_secs, WatchConfig::default().settle_secs);
        assert_eq!(loaded.config.state.database, defaults.state.database);
    }

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_and_a_ceiling() {
        use rand::SeedableRng;
        let retry = RetryConfig { initial_delay_secs: 2, max_delay_secs: 60, max_attempts: 10 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (attempt, ceiling) in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)] {
            let delays: Vec<Duration> = (0..200).map(|_| retry.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= Duration::from_secs(ceiling)), "attempt {attempt}");
            assert!(delays.iter().any(|d| *d < Duration::from_secs(ceiling) / 4), "jitter reaches low values");
            assert!(delays.iter().any(|d| *d > Duration::from_secs(ceiling) * 3 / 4), "jitter reaches high values");
        }
    }

    #[test]
    fn a_database_password_is_never_shown_whatever_it_holds() {
        for (url, shown) in [
            ("postgres://jb:Wrong/Pw+9=@db:5432/x", "postgres://jb:***@db:5432/x"),
            ("postgres://jb:a@b@db/x?sslmode=require", "postgres://jb:***@db/x?sslmode=require"),
            ("postgresql://jb:p?q#r@db/x", "postgresql://jb:***@db/x"),
            ("postgres://jb@db/x", "postgres://jb@db/x"),
            ("postgres://db/x", "postgres://db/x"),
            ("postgres://jb@db/x?sslmode=require&password=S3cr%2Fet", "postgres://jb@db/x?sslmode=require&password=***"),
            ("postgres://jb@db/x?sslpassword=TopKey", "postgres://jb@db/x?sslpassword=***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let quoted = "expected `=`, found `\\` at line 3: database = \"postgres://jb:pa\\ss@db/x\" rest";
        assert!(!scrub_urls(quoted).contains("pa\\ss"), "{}", scrub_urls(quoted));
        let state = StateConfig { database: "postgres://jb@db/x?password=S3cr%2Fet".into(), ..StateConfig::default() };
        let said = redact("password authentication failed: S3cr/et", &state.secrets());
        assert!(!said.contains("S3cr"), "{said}");
        let err = Config::parse(Path::new("c.toml"), "[state]\ndatabase = \"postgres://jb@db/x?sslpassword=TopKey\"\n").unwrap_err();
        assert!(err.to_string().contains("`sslpassword`") && !err.to_string().contains("TopKey"), "{err}");
        let state = StateConfig { database: "postgres://jb:Wrong/Pw+9=@db:5432/x".into(), ..StateConfig::default() };
        let secrets = state.secrets();
        for said in ["invalid port number in postgres://jb:Wrong/Pw+9=@db:5432/x", "host Wrong: no such host", "Pw+9=@db"] {
            let redacted = redact(said, &secrets);
            assert!(!redacted.contains("Wrong") && !redacted.contains("Pw+9"), "{said} -> {redacted}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_that_names_it() {
        let err = Config::parse(Path::new("c.toml"), "[sftp]\nhost = \"h\"\nuser = \"u\"\nconection = 3\n").unwrap_err();
        assert!(err.to_string().contains("conection"), "{err}");
        let err = Config::parse(Path::new("c.toml"), "[sfpt]\nhost = \"h\"\n").unwrap_err();
        assert!(err.to_string().contains("sfpt"), "{err}");
    }

    #[test]
    fn sftp_defaults_apply_and_connection_is_required_only_when_used() {
        let loaded = Loaded { path: "c.toml".into(), config: Config::parse(Path::new("c.toml"), "").unwrap() };
        assert!(loaded.sftp().unwrap_err().to_string().contains("[sftp]"));
        let config = Config::parse(Path::new("c.toml"), "[sftp]\nhost = \"h\"\nuser = \"u\"\n").unwrap();
        let sftp = config.sftp.unwrap();
        assert_eq!((sftp.port, sftp.remote_dir.as_str(), sftp.timeout_secs), (22, ".", 60));
    }

    #[test]
    fn routes_take_their_own_server_and_inbox_and_share_the_rest_of_sftp() {
        let text = "[sftp]\nhost = \"shared\"\nuser = \"u\"\nport = 2222\nconnections = 8\n\
                    [paths]\ninbox = \"/in\"\nwork = \"/w\"\ndone = \"/d\"\nrejected = \"/r\"\nfailed = \"/f\"\n\
                    [routes.emea]\ninbox = \"emea\"\nhost = \"sftp.emea\"\nuser = \"acme-emea\"\n\
                    [routes.amer]\ninbox = \"/elsewhere/amer\"\n";
        let loaded = Loaded { path: "c.toml".into(), config: Config::parse(Path::new("c.toml"), text).unwrap() };
        let routes = loaded.routes().unwrap();
        let emea = routes.iter().find(|r| r.label() == "emea").unwrap();
        assert_eq!(
            (emea.sftp.host.as_str(), emea.sftp.user.as_str(), emea.sftp.port, emea.sftp.connections),
            ("sftp.emea", "acme-emea", 2222, 8)
        );
        assert_eq!(emea.inbox.as_deref(), Some(Path::new("/in/emea")));
        assert_eq!(emea.tenant(), "acme-emea@sftp.emea:2222");
        let amer = loaded.route(Some("amer")).unwrap();
        assert_eq!((amer.sftp.host.as_str(), amer.inbox.as_deref()), ("shared", Some(Path::new("/elsewhere/amer"))));
        assert!(loaded.route(None).unwrap_err().to_string().contains("--route"), "two routes: send must name one");
        assert!(loaded.route(Some("apac")).unwrap_err().to_string().contains("amer, emea"));

        let only =
            Loaded { path: "c.toml".into(), config: Config::parse(Path::new("c.toml"), "[sftp]\nhost = \"h\"\nuser = \"u\"\n").unwrap() };
        assert_eq!(only.route(None).unwrap().label(), DEFAULT_ROUTE, "a config with only [sftp] is one route");

        for (bad, says) in [
            ("[routes.x]\ninbox = \"/a\"\nhost = \"h\"\n", "needs host and user"),
            ("[routes.\"a b\"]\ninbox = \"/a\"\nhost = \"h\"\nuser = \"u\"\n", "letters, digits"),
            ("[routes.x]\ninbox = \"rel\"\nhost = \"h\"\nuser = \"u\"\n", "no [paths] section"),
            (
                "[routes.x]\ninbox = \"/a\"\nhost = \"h\"\nuser = \"u\"\n[routes.y]\ninbox = \"/a\"\nhost = \"h\"\nuser = \"u\"\n",
                "share one inbox",
            ),
            ("[routes.x]\ninbox = \"/a\"\nhost = \"h\"\nuser = \"u\"\nconnections = 3\n", "connections"),
        ] {
            let err = Config::parse(Path::new("c.toml"), bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
