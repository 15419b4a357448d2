//! The worker thread's connection: connecting within a deadline (over TLS when required),
//! statements prepared once per connection, the [`Dialect`] the shared SQL runs on, and
//! PostgreSQL's errors as store errors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration as StdDuration, Instant};

use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, NoTls, Statement};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{Dialect, Failure, Nodes, Row, Value, signed};
use super::{COMMIT_LOCK, PostgresStore, PostgresTlsMode};
use crate::merkle::Hash;
use crate::store::StoreError;

pub(super) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The worker thread's state: the connection settings and, while connected, the client.
pub(super) struct Worker {
    pub(super) config: Config,
    /// How connections are made: in the clear or over verified TLS (the config's `sslmode` says
    /// the same: `disable` or `require`).
    pub(super) transport: Transport,
    pub(super) connect_timeout: StdDuration,
    pub(super) schema: Option<String>,
    pub(super) client: Option<Client>,
    /// Statements prepared on the current connection, by SQL text: each is parsed once, so a
    /// later use is one round trip instead of two.
    pub(super) statements: HashMap<String, Statement>,
    /// When the connection was last handed out (`None`: not since it was made).
    pub(super) used: Option<Instant>,
}

/// How long a connection may sit unused before it is checked (one round trip) before its next
/// use. Under load a connection is never idle that long, so the check costs nothing there.
const IDLE_CHECK_AFTER: StdDuration = StdDuration::from_secs(1);

/// Sets `synchronous_commit` for the session: `on` if it is `off`, else as it is (`local`,
/// `remote_write`, `on` and `remote_apply` all flush the commit on this server first).
const PIN_SYNCHRONOUS_COMMIT: &str = "SELECT set_config('synchronous_commit', \
     CASE current_setting('synchronous_commit') WHEN 'off' THEN 'on' \
     ELSE current_setting('synchronous_commit') END, false)";

/// A client or transaction whose statements are prepared once and reused.
pub(super) struct Db<'a, C> {
    pub(super) client: &'a mut C,
    pub(super) statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    /// The prepared statement for `sql`, written with `?N` placeholders (the shared SQL's), which
    /// PostgreSQL spells `$N`. Prepared once per connection.
    pub(super) fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&sql.replace('?', "$"))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// The statement for `sql` and `params` converted to the types it declares.
    fn bound(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<(Statement, Vec<Bound>), Failure<postgres::Error>> {
        let statement = self.statement(sql).map_err(Failure::Engine)?;
        let bound = params
            .iter()
            .zip(statement.params())
            .map(|(value, declared)| bind(*value, declared))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((statement, bound))
    }
}

/// A parameter value, converted for its statement.
type Bound = Box<dyn ToSql + Sync + Send>;

/// A value as the parameter's declared type wants it: integers narrowed to `INTEGER` columns
/// (refused if they do not fit), text bound as bytes to `BYTEA` columns (the audit entries).
fn bind(value: Value<'_>, declared: &Type) -> Result<Bound, StoreError> {
    let narrow = |int: i64| {
        i32::try_from(int)
            .map_err(|_| StoreError::Unavailable(format!("{int} does not fit an INTEGER column")))
    };
    Ok(match value {
        Value::Int(int) if *declared == Type::INT4 => Box::new(narrow(int)?),
        Value::Int(int) => Box::new(int),
        Value::OptionalInt(int) if *declared == Type::INT4 => {
            Box::new(int.map(narrow).transpose()?)
        }
        Value::OptionalInt(int) => Box::new(int),
        Value::Text(text) if *declared == Type::BYTEA => Box::new(text.as_bytes().to_vec()),
        Value::Text(text) => Box::new(text.to_owned()),
        Value::Blob(bytes) => Box::new(bytes.to_vec()),
        Value::OptionalBlob(bytes) => Box::new(bytes.map(<[u8]>::to_vec)),
    })
}

fn params_ref(bound: &[Bound]) -> Vec<&(dyn ToSql + Sync)> {
    bound
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl Row for postgres::Row {
    fn int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        let corrupt = |e: postgres::Error| StoreError::Corrupt(format!("column {column}: {e}"));
        let declared = self
            .columns()
            .get(column)
            .map(|c| c.type_().clone())
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column}")))?;
        if declared == Type::INT4 {
            Ok(self
                .try_get::<_, Option<i32>>(column)
                .map_err(corrupt)?
                .map(i64::from))
        } else {
            self.try_get::<_, Option<i64>>(column).map_err(corrupt)
        }
    }

    fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError> {
        self.optional_bytes(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {column} is NULL")))
    }

    fn optional_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let corrupt = |e: postgres::Error| StoreError::Corrupt(format!("column {column}: {e}"));
        let declared = self
            .columns()
            .get(column)
            .map(|c| c.type_().clone())
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column}")))?;
        if declared == Type::BYTEA {
            self.try_get::<_, Option<Vec<u8>>>(column).map_err(corrupt)
        } else {
            Ok(self
                .try_get::<_, Option<String>>(column)
                .map_err(corrupt)?
                .map(String::into_bytes))
        }
    }
}

impl<C: GenericClient> Dialect for Db<'_, C> {
    type Error = postgres::Error;

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<u64, Failure<Self::Error>> {
        let (statement, bound) = self.bound(sql, params)?;
        self.client
            .execute(&statement, &params_ref(&bound))
            .map_err(Failure::Engine)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), Failure<Self::Error>> {
        let (statement, bound) = self.bound(sql, params)?;
        let rows = self
            .client
            .query(&statement, &params_ref(&bound))
            .map_err(Failure::Engine)?;
        for row in &rows {
            each(row)?;
        }
        Ok(())
    }

    fn lock_for_commit(&mut self) -> Result<(), Failure<Self::Error>> {
        // The schema's version read under the lock, as a migration runs under it: a newer build
        // may have migrated the database since this one opened it.
        let statement = self
            .statement(
                "SELECT (SELECT value FROM consent_broker_meta WHERE key = 'schema_version') \
                 FROM pg_advisory_xact_lock(?1)",
            )
            .map_err(Failure::Engine)?;
        let row = self
            .client
            .query_one(&statement, &[&COMMIT_LOCK])
            .map_err(Failure::Engine)?;
        let found: Option<i64> = row.try_get(0).map_err(Failure::Engine)?;
        match found {
            Some(PostgresStore::SCHEMA_VERSION) => Ok(()),
            found => Err(Failure::Refused(schema_moved(found))),
        }
    }

    fn append_siblings(&mut self, size: u64) -> Result<Nodes, Failure<Self::Error>> {
        // One round trip for every level's left sibling.
        let wanted: Vec<(i32, i64)> = (0..64u32)
            .filter(|level| (size >> level) & 1 == 1)
            .map(|level| (level as i32, signed((size >> level) - 1)))
            .collect();
        let levels: Vec<i32> = wanted.iter().map(|w| w.0).collect();
        let indices: Vec<i64> = wanted.iter().map(|w| w.1).collect();
        let statement = self
            .statement(
                "SELECT n.level, n.idx, n.hash FROM merkle_nodes n \
                 JOIN UNNEST(?1::INTEGER[], ?2::BIGINT[]) AS w (level, idx) \
                 ON n.level = w.level AND n.idx = w.idx",
            )
            .map_err(Failure::Engine)?;
        let rows = self
            .client
            .query(&statement, &[&levels, &indices])
            .map_err(Failure::Engine)?;
        let mut found = HashMap::new();
        for row in &rows {
            let level = u32::try_from(row.int(0)?.unwrap_or(-1))
                .map_err(|_| StoreError::Corrupt("Merkle node level".into()))?;
            let index = u64::try_from(row.int(1)?.unwrap_or(-1))
                .map_err(|_| StoreError::Corrupt("Merkle node index".into()))?;
            let hash = Hash::try_from(row.bytes(2)?.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("Merkle node ({level}, {index})")))?;
            found.insert((level, index), hash);
        }
        Ok(found)
    }
}

impl Worker {
    /// The connection: made (and set up) if there is none or it was lost, checked first if it
    /// sat unused for more than [`IDLE_CHECK_AFTER`].
    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = connect_within(&self.config, &self.transport, self.connect_timeout)?;
            if let Some(schema) = &self.schema {
                let quoted = quote_identifier(schema);
                // Made only if missing: `CREATE SCHEMA IF NOT EXISTS` needs the right to create
                // in the database even when the schema exists, which a role that only uses it
                // lacks, and every connection of every broker would queue on the commit lock
                // for it (after a failover, all at once).
                let exists: bool = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                        &[schema],
                    )
                    .and_then(|row| row.try_get(0))
                    .map_err(|e| pg_error(&e))?;
                if !exists {
                    // Under the commit lock: two brokers creating the same schema at once would
                    // otherwise collide in the catalog.
                    client
                        .batch_execute(&format!(
                            "BEGIN; SELECT pg_advisory_xact_lock({COMMIT_LOCK}); \
                             CREATE SCHEMA IF NOT EXISTS {quoted}; COMMIT"
                        ))
                        .map_err(|e| pg_error(&e))?;
                }
            }
            // Every write runs in READ COMMITTED, so each statement after the commit lock sees
            // what the writer before it committed (a database whose default isolation is higher
            // would read a stale log length in the commit function); and a commit is acknowledged
            // only once durable, whatever the database's default. Both are set for the session
            // even when the default already says so: a setting of the session's own outranks the
            // server's configuration, so a reload that turns `synchronous_commit` off for the
            // server (`ALTER SYSTEM`, then `pg_reload_conf()`) leaves this session durable.
            let search_path = self.schema.as_deref().map_or(String::new(), |schema| {
                format!("SET search_path TO {}; ", quote_identifier(schema))
            });
            // And the schema version this build writes, which the commit function compares
            // with the database's (see `PostgresStore::MIGRATIONS`, version 10).
            let version = PostgresStore::SCHEMA_VERSION;
            client
                .batch_execute(&format!(
                    "{search_path}SET default_transaction_isolation = 'read committed'; \
                     {PIN_SYNCHRONOUS_COMMIT}; \
                     SELECT set_config('consent_broker.schema_version', '{version}', false)"
                ))
                .map_err(|e| pg_error(&e))?;
            self.client = Some(client);
            self.statements.clear();
        } else if let Some(client) = &mut self.client
            && self
                .used
                .is_some_and(|used| used.elapsed() > IDLE_CHECK_AFTER)
        {
            // A connection idle for a while may have been closed by the server (a restart, a
            // failover, `idle_session_timeout`) or a proxy without this side knowing. Found out
            // now, before a commit is sent on it, rather than after: a commit sent on a dead
            // connection has an unknown outcome, where one never sent has none.
            if client.is_valid(self.connect_timeout).is_err() {
                self.client = None;
                return self.client();
            }
        }
        self.used = Some(Instant::now());
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("not connected".into()))
    }

    /// The connection (made first if there is none, or it was lost) and the statements prepared
    /// on it.
    pub(super) fn connected(
        &mut self,
    ) -> Result<(&mut Client, &mut HashMap<String, Statement>), StoreError> {
        self.client()?;
        match self {
            Self {
                client: Some(client),
                statements,
                ..
            } => Ok((client, statements)),
            Self { client: None, .. } => Err(StoreError::Unavailable("not connected".into())),
        }
    }

    /// Runs `f` on the connection; drops the connection after an error that may have broken it,
    /// so the next call reconnects.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Db<'_, Client>) -> Result<T, Failure<postgres::Error>>,
    ) -> Result<T, StoreError> {
        let (client, statements) = self.connected()?;
        match f(&mut Db { client, statements }) {
            Ok(value) => Ok(value),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Engine(error)) => {
                if connection_lost(&error) {
                    self.client = None;
                }
                Err(pg_error(&error))
            }
        }
    }
}

/// Connects, giving up after `timeout` even if the server accepts the TCP connection and then
/// never answers (the client's own timeout covers only the TCP connect). The handshake runs on a
/// helper thread; if it hangs, that thread is left to end when the server closes the socket.
pub(super) fn connect_within(
    config: &Config,
    transport: &Transport,
    timeout: StdDuration,
) -> Result<Client, StoreError> {
    let (sender, receiver) = mpsc::channel();
    let config = config.clone();
    let transport = transport.clone();
    std::thread::Builder::new()
        .name("consent-broker-postgres-connect".into())
        .spawn(move || {
            let _ = sender.send(match transport {
                Transport::Plain => config.connect(NoTls),
                Transport::Tls(tls) => config.connect(tls),
            });
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start connecting: {e}")))?;
    match receiver.recv_timeout(timeout) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(pg_error(&error)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "the server did not complete the connection within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// How the worker connects.
#[derive(Clone)]
pub(super) enum Transport {
    /// In the clear (`sslmode=disable`).
    Plain,
    /// Over TLS, the server's certificate verified (`sslmode=require`).
    Tls(MakeRustlsConnect),
}

/// Settles `config`'s `sslmode` from `mode` and the URL's, and builds what connects that way.
pub(super) fn transport(
    config: &mut Config,
    mode: PostgresTlsMode,
    root_certificates: Option<&Path>,
) -> Result<Transport, StoreError> {
    let ssl_mode = ssl_mode(mode, config.get_ssl_mode(), is_local(config))?;
    config.ssl_mode(ssl_mode);
    if ssl_mode == SslMode::Disable {
        return Ok(Transport::Plain);
    }
    let roots = match root_certificates {
        Some(path) => roots_from_pem(path)?,
        None => platform_roots()?,
    };
    // The provider is given here, not taken from a process-wide default: ring, as everywhere
    // else in this crate.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // PostgreSQL's ALPN name: required by `sslnegotiation=direct` (PostgreSQL 17), accepted by
    // servers that know it after an SSLRequest, ignored by older ones.
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Transport::Tls(MakeRustlsConnect::new(tls)))
}

/// The `sslmode` to connect with, from the options' `mode`, the URL's `url` (`Prefer` when the
/// URL names none) and whether every host is on this machine: `Disable` or `Require`, never
/// `Prefer` (which would let a server that offers no TLS downgrade the connection).
pub(super) fn ssl_mode(
    mode: PostgresTlsMode,
    url: SslMode,
    local: bool,
) -> Result<SslMode, StoreError> {
    let conflict = |url: &str, mode: &str| {
        Err(StoreError::Unavailable(format!(
            "the URL's sslmode={url} contradicts PostgresOptions::tls = PostgresTlsMode::{mode}"
        )))
    };
    match (mode, url) {
        (PostgresTlsMode::Disable, SslMode::Disable | SslMode::Prefer) => Ok(SslMode::Disable),
        (PostgresTlsMode::Disable, _) => conflict("require", "Disable"),
        (PostgresTlsMode::Require, SslMode::Disable) => conflict("disable", "Require"),
        (PostgresTlsMode::Require, _) => Ok(SslMode::Require),
        (PostgresTlsMode::Auto, SslMode::Disable) if local => Ok(SslMode::Disable),
        (PostgresTlsMode::Auto, SslMode::Disable) => Err(StoreError::Unavailable(
            "the URL's sslmode=disable names a host that is not on this machine: set \
             PostgresOptions::tls to PostgresTlsMode::Disable to connect to it in the clear"
                .into(),
        )),
        (PostgresTlsMode::Auto, SslMode::Prefer) if local => Ok(SslMode::Disable),
        // `prefer` to a remote host, `require`, and any stronger mode a later client may parse.
        (PostgresTlsMode::Auto, _) => Ok(SslMode::Require),
    }
}

/// Whether every server `config` names is on this machine: hosts that are `localhost`, loopback
/// addresses or Unix socket directories, and `hostaddr`s that are loopback addresses. A config
/// naming no server at all is not local.
pub(super) fn is_local(config: &Config) -> bool {
    let (hosts, addresses) = (config.get_hosts(), config.get_hostaddrs());
    (!hosts.is_empty() || !addresses.is_empty())
        && hosts.iter().all(is_local_host)
        && addresses.iter().copied().all(is_loopback)
}

/// Whether `host` is on this machine: a Unix socket directory, `localhost` or a loopback address.
/// Any other name is not, even one that resolves to a loopback address (`localhost.` included):
/// what a name resolves to can change, and TLS costs little.
pub(super) fn is_local_host(host: &Host) -> bool {
    match host {
        Host::Tcp(name) => {
            let bare = name
                .strip_prefix('[')
                .and_then(|name| name.strip_suffix(']'))
                .unwrap_or(name);
            bare.eq_ignore_ascii_case("localhost") || bare.parse().is_ok_and(is_loopback)
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    }
}

/// 127.0.0.0/8, `::1`, and `::ffff:127.x.y.z`.
fn is_loopback(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Every certificate in the PEM file at `path`, as trusted roots.
fn roots_from_pem(path: &Path) -> Result<RootCertStore, StoreError> {
    let unusable = |why: String| {
        StoreError::Unavailable(format!(
            "cannot use the TLS root certificates in {}: {why}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|e| unusable(format!("not PEM: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| unusable(format!("a certificate is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(unusable("the file holds no certificate".into()));
    }
    Ok(roots)
}

/// The platform's trusted roots (the operating system's store, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`).
fn platform_roots() -> Result<RootCertStore, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(" ({e})"));
        return Err(StoreError::Unavailable(format!(
            "cannot set up TLS: no trusted root certificate in the platform's store{why}; name \
             the server's CA in PostgresOptions::root_certificates"
        )));
    }
    Ok(roots)
}

/// The rustls error under a client error, when the TLS handshake failed.
fn tls_failure(error: &postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // tokio-rustls reports rustls's error inside an `io::Error`, whose `source` skips it.
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        source = current.source();
    }
    None
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a client error to a store error a caller can act on.
pub(super) fn pg_error(error: &postgres::Error) -> StoreError {
    match tls_failure(error) {
        Some(tls @ rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            return StoreError::Unavailable(format!(
                "TLS verification failed: {tls} (the server's certificate is not signed by a \
                 trusted CA: name its CA in PostgresOptions::root_certificates)"
            ));
        }
        Some(
            tls @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => {
            return StoreError::Unavailable(format!("TLS verification failed: {tls}"));
        }
        Some(tls) => return StoreError::Unavailable(format!("TLS handshake failed: {tls}")),
        None => {}
    }
    // `Display` of a server error is just "db error": say what the server said, and why.
    let detail = match (error.as_db_error(), std::error::Error::source(error)) {
        (Some(db), _) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{error}: {source}"),
        (None, None) => error.to_string(),
    };
    match error.code() {
        Some(code) if *code == SqlState::QUERY_CANCELED => {
            StoreError::Busy(format!("statement timeout: {detail}"))
        }
        Some(code) if *code == SqlState::DISK_FULL => StoreError::Full(detail),
        Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::ReadOnly(detail),
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            StoreError::Unavailable(format!("authentication failed: {detail}"))
        }
        Some(code) if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED => {
            StoreError::Corrupt(detail)
        }
        _ if error.is_closed() => StoreError::Unavailable(format!("connection lost: {detail}")),
        _ => StoreError::Unavailable(detail),
    }
}

/// The database's schema is not at this build's version any more: refused as too new if a
/// newer build migrated it, else as damaged (a version edited down, or gone).
pub(super) fn schema_moved(found: Option<i64>) -> StoreError {
    match found {
        Some(found) if found > PostgresStore::SCHEMA_VERSION => StoreError::SchemaTooNew {
            found,
            supported: PostgresStore::SCHEMA_VERSION,
        },
        _ => StoreError::Corrupt(
            "consent_broker_meta's schema version is not the one this store opened".into(),
        ),
    }
}

/// The commit function's refusal of a caller of another schema version (raised with the
/// database's version in its message), as the store reports it.
pub(super) fn schema_refusal(error: &postgres::Error) -> Option<StoreError> {
    let db = error.as_db_error()?;
    let version = db
        .message()
        .strip_prefix("consent_broker schema version ")?;
    (db.code() == &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
        .then(|| schema_moved(version.trim().parse().ok()))
}

/// Whether `error` means the connection is gone (closed, broken, or ended by the server: a
/// connection exception, SQLSTATE class 08; the server shutting down, the session terminated,
/// the database dropped or the session idle too long, 57P01 to 57P05), so the next call must
/// reconnect.
pub(super) fn connection_lost(error: &postgres::Error) -> bool {
    error.is_closed()
        || error.code().is_none_or(|code| {
            let code = code.code();
            code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "57P04" | "57P05")
        })
}

pub(super) fn retryable(error: &postgres::Error) -> bool {
    error.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_name(name: &str) -> bool {
        is_local_host(&Host::Tcp(name.to_owned()))
    }

    /// `Some(local)` for a URL the client parses.
    fn local_url(url: &str) -> Option<bool> {
        url.parse::<Config>().ok().map(|config| is_local(&config))
    }

    #[test]
    fn local_hosts_are_localhost_loopback_addresses_and_unix_sockets() {
        for name in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.8.9.10",
            "127.255.255.255",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(local_name(name), "{name} is local");
        }
        #[cfg(unix)]
        assert!(is_local_host(&Host::Unix("/var/run/postgresql".into())));
        for name in [
            "localhost.",
            "localhost.example.com",
            "mylocalhost",
            "db.example.com",
            "128.0.0.1",
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
            "",
        ] {
            assert!(!local_name(name), "{name:?} is not local");
        }
    }

    #[test]
    fn a_config_is_local_only_if_every_host_and_address_is() {
        assert_eq!(local_url("postgres://u@localhost/db"), Some(true));
        assert_eq!(local_url("postgres://u@127.0.0.1:5433/db"), Some(true));
        assert_eq!(local_url("postgres://u@[::1]/db"), Some(true));
        assert_eq!(local_url("host=/var/run/postgresql user=u"), Some(true));
        assert_eq!(local_url("postgres://u@localhost,127.0.0.2/db"), Some(true));
        assert_eq!(local_url("hostaddr=127.0.0.1 user=u"), Some(true));
        assert_eq!(local_url("postgres://u@db.example.com/db"), Some(false));
        assert_eq!(
            local_url("postgres://u@localhost,db.example.com/db"),
            Some(false)
        );
        // The name is what the certificate is checked against: a remote name stays remote.
        assert_eq!(
            local_url("postgres://u@db.example.com/db?hostaddr=127.0.0.1"),
            Some(false)
        );
        // A local name reached at a remote address is remote.
        assert_eq!(
            local_url("postgres://u@localhost/db?hostaddr=10.0.0.1"),
            Some(false)
        );
        assert_eq!(local_url("user=u dbname=db"), Some(false));
    }

    #[test]
    fn the_ssl_mode_never_lets_a_remote_host_go_plain_unasked() {
        use PostgresTlsMode::{Auto, Disable, Require};
        let mode = |tls, url, local| ssl_mode(tls, url, local).ok();
        for local in [true, false] {
            assert_eq!(
                mode(Require, SslMode::Prefer, local),
                Some(SslMode::Require)
            );
            assert_eq!(
                mode(Require, SslMode::Require, local),
                Some(SslMode::Require)
            );
            assert_eq!(mode(Require, SslMode::Disable, local), None);
            assert_eq!(
                mode(Disable, SslMode::Prefer, local),
                Some(SslMode::Disable)
            );
            assert_eq!(
                mode(Disable, SslMode::Disable, local),
                Some(SslMode::Disable)
            );
            assert_eq!(mode(Disable, SslMode::Require, local), None);
            assert_eq!(mode(Auto, SslMode::Require, local), Some(SslMode::Require));
        }
        assert_eq!(mode(Auto, SslMode::Prefer, true), Some(SslMode::Disable));
        assert_eq!(mode(Auto, SslMode::Disable, true), Some(SslMode::Disable));
        // `prefer` (also what a URL without sslmode gives) must not mean "plain if refused".
        assert_eq!(mode(Auto, SslMode::Prefer, false), Some(SslMode::Require));
        assert_eq!(mode(Auto, SslMode::Disable, false), None);
        assert_eq!(PostgresTlsMode::default(), Auto);
    }

    #[test]
    fn a_remote_host_under_auto_gets_a_verifying_tls_connector() {
        let parsed = "postgres://u@db.example.com/db?sslmode=prefer".parse::<Config>();
        assert!(parsed.is_ok());
        let Ok(mut config) = parsed else { return };
        let remote = transport(&mut config, PostgresTlsMode::Auto, None);
        // Without platform roots on this machine the error is the only other outcome.
        if let Ok(remote) = remote {
            assert!(matches!(remote, Transport::Tls(_)));
            assert_eq!(config.get_ssl_mode(), SslMode::Require);
        }
        let parsed = "postgres://u@localhost/db".parse::<Config>();
        assert!(parsed.is_ok());
        let Ok(mut config) = parsed else { return };
        assert!(matches!(
            transport(&mut config, PostgresTlsMode::Auto, None),
            Ok(Transport::Plain)
        ));
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
    }
}
