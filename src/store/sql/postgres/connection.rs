//! The worker thread's connection: connecting within a deadline, statements prepared once per
//! connection, the [`Dialect`] the shared SQL runs on, and PostgreSQL's errors as store errors.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration as StdDuration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, NoTls, Statement};

use super::super::{Dialect, Failure, Nodes, Row, Value, signed};
use super::COMMIT_LOCK;
use crate::merkle::Hash;
use crate::store::StoreError;

pub(super) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The worker thread's state: the connection settings and, while connected, the client.
pub(super) struct Worker {
    pub(super) config: Config,
    pub(super) connect_timeout: StdDuration,
    pub(super) schema: Option<String>,
    pub(super) client: Option<Client>,
    /// Statements prepared on the current connection, by SQL text: each is parsed once, so a
    /// later use is one round trip instead of two.
    pub(super) statements: HashMap<String, Statement>,
}

/// A client or transaction whose statements are prepared once and reused.
pub(super) struct Db<'a, C> {
    pub(super) client: &'a mut C,
    pub(super) statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    /// The prepared statement for `sql`, written with `?N` placeholders (the shared SQL's), which
    /// PostgreSQL spells `$N`. Prepared once per connection.
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
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

    fn lock_for_commit(&mut self) -> Result<(), Self::Error> {
        let statement = self.statement("SELECT pg_advisory_xact_lock(?1)")?;
        self.client.execute(&statement, &[&COMMIT_LOCK]).map(|_| ())
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
    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = connect_within(&self.config, self.connect_timeout)?;
            if let Some(schema) = &self.schema {
                let quoted = quote_identifier(schema);
                // Under the commit lock: two brokers creating the same schema at once would
                // otherwise collide in the catalog.
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({COMMIT_LOCK}); \
                         CREATE SCHEMA IF NOT EXISTS {quoted}; COMMIT; SET search_path TO {quoted}"
                    ))
                    .map_err(|e| pg_error(&e))?;
            }
            self.client = Some(client);
            self.statements.clear();
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("not connected".into()))
    }

    /// Runs `f` on the connection; drops the connection after an error that may have broken it,
    /// so the next call reconnects.
    pub(super) fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Db<'_, Client>) -> Result<T, Failure<postgres::Error>>,
    ) -> Result<T, StoreError> {
        self.client()?;
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Unavailable("not connected".into()));
        };
        match f(&mut Db {
            client,
            statements: &mut self.statements,
        }) {
            Ok(value) => Ok(value),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Engine(error)) => {
                if error.is_closed() || error.code().is_none() {
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
pub(super) fn connect_within(config: &Config, timeout: StdDuration) -> Result<Client, StoreError> {
    let (sender, receiver) = mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("consent-broker-postgres-connect".into())
        .spawn(move || {
            let _ = sender.send(config.connect(NoTls));
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

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a client error to a store error a caller can act on.
pub(super) fn pg_error(error: &postgres::Error) -> StoreError {
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

pub(super) fn retryable(error: &postgres::Error) -> bool {
    error.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}
