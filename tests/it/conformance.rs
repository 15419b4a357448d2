//! The store conformance suite (`consent_broker::conformance`) on each of this crate's stores:
//! one harness and one macro line per store, as anyone writing a store for another database
//! would do.

#[cfg(feature = "postgres")]
use std::sync::atomic::{AtomicU64, Ordering};

use consent_broker::conformance::Harness;
use consent_broker::*;

pub struct MemoryHarness(MemoryStore);

impl Harness for MemoryHarness {
    type Store = MemoryStore;
    fn new() -> Self {
        Self(MemoryStore::new())
    }
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn reopen(self) -> Self {
        unreachable!("the memory store is not durable; its suite does not include reopening")
    }
}

pub struct SqliteHarness {
    store: SqliteStore,
    dir: tempfile::TempDir,
}

impl Harness for SqliteHarness {
    type Store = SqliteStore;
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("conformance.sqlite")).unwrap();
        Self { store, dir }
    }
    fn store(&self) -> &SqliteStore {
        &self.store
    }
    fn reopen(self) -> Self {
        let path = self.store.path().to_path_buf();
        drop(self.store);
        Self {
            store: SqliteStore::open(path).unwrap(),
            dir: self.dir,
        }
    }
}

/// A fresh schema on the server named by `DATABASE_URL` (`scripts/with-postgres` starts one).
#[cfg(feature = "postgres")]
pub struct PostgresHarness {
    store: PostgresStore,
    schema: String,
}

#[cfg(feature = "postgres")]
impl PostgresHarness {
    fn open(schema: &str) -> PostgresStore {
        let url = std::env::var("DATABASE_URL").expect(
            "the PostgreSQL conformance tests need DATABASE_URL: run them with \
             `scripts/with-postgres cargo test --features postgres -- --include-ignored`",
        );
        let options = PostgresOptions {
            schema: Some(schema.to_owned()),
            ..Default::default()
        };
        PostgresStore::open_with(&url, options).unwrap()
    }
}

#[cfg(feature = "postgres")]
impl Harness for PostgresHarness {
    type Store = PostgresStore;
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "conformance_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Self {
            store: Self::open(&schema),
            schema,
        }
    }
    fn store(&self) -> &PostgresStore {
        &self.store
    }
    fn reopen(self) -> Self {
        let schema = self.schema.clone();
        drop(self.store);
        Self {
            store: Self::open(&schema),
            schema,
        }
    }
}

consent_broker::store_conformance_tests!(memory, MemoryHarness, ledger);
consent_broker::store_conformance_tests!(sqlite, SqliteHarness, durable, ledger);
// Needs a server: `scripts/with-postgres cargo test --features postgres -- --include-ignored`
// (`.ci/run` does this). Without the feature, the placeholder below reports them as not run.
#[cfg(feature = "postgres")]
consent_broker::store_conformance_tests!(
    postgres,
    PostgresHarness,
    durable,
    ledger;
    ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"
);

#[cfg(not(feature = "postgres"))]
#[test]
#[ignore = "the PostgreSQL conformance suite did not run: it needs `--features postgres` and a \
            server (scripts/with-postgres); .ci/run runs it"]
fn postgres_conformance_did_not_run() {}
