//! The witness itself, with its state in a SQLite file (feature `sqlite`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{AddCheckpoint, WitnessClient, WitnessError, bad};
use crate::checkpoint::{Checkpoint, NoteError, NoteVerifier, open_note, split_note};
use crate::clock::Clock;
use crate::cosignature::{CosignatureSigner, CosignatureVerifier};
use crate::merkle::{self, EMPTY_ROOT, Hash};

/// A witness: its key, the logs it follows, and its state in a SQLite file.
pub struct Witness {
    connection: Mutex<Connection>,
    signer: CosignatureSigner,
    logs: HashMap<String, NoteVerifier>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("signer", &self.signer)
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Witness {
    /// Opens (creating if needed) the witness's state at `path`, cosigning with `signer`, dating
    /// cosignatures with `clock`.
    ///
    /// # Errors
    /// [`WitnessError::State`].
    pub fn open(
        path: impl AsRef<Path>,
        signer: CosignatureSigner,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WitnessError> {
        let state = |e: rusqlite::Error| WitnessError::State(e.to_string());
        let connection = Connection::open(path).map_err(state)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS witnessed (
                     origin TEXT PRIMARY KEY,
                     size INTEGER NOT NULL,
                     root BLOB NOT NULL,
                     checkpoint TEXT NOT NULL
                 ) STRICT;",
            )
            .map_err(state)?;
        Ok(Self {
            connection: Mutex::new(connection),
            signer,
            logs: HashMap::new(),
            clock,
        })
    }

    /// Follows the log of `origin`, whose checkpoints `verifier` checks.
    #[must_use]
    pub fn follow(mut self, origin: &str, verifier: NoteVerifier) -> Self {
        self.logs.insert(origin.to_owned(), verifier);
        self
    }

    /// The witness's public key.
    pub fn verifier(&self) -> &CosignatureVerifier {
        self.signer.verifier()
    }

    /// The last checkpoint cosigned for `origin`: its size, root and note.
    ///
    /// # Errors
    /// [`WitnessError::State`].
    pub fn latest(&self, origin: &str) -> Result<Option<(u64, Hash, String)>, WitnessError> {
        let connection = self.lock()?;
        read_state(&connection, origin)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, WitnessError> {
        self.connection
            .lock()
            .map_err(|_| WitnessError::State("a writer panicked".to_owned()))
    }

    /// Handles an `add-checkpoint` request: the cosignature line(s) to append to the checkpoint,
    /// after the new state is durable.
    ///
    /// # Errors
    /// [`WitnessError`], each with its status.
    pub fn add_checkpoint(&self, body: &str) -> Result<String, WitnessError> {
        let request = AddCheckpoint::parse(body)?;
        let (text, _) = split_note(&request.note).map_err(|_| bad("not a signed note"))?;
        let checkpoint = Checkpoint::parse_body(text).map_err(|_| bad("not a checkpoint"))?;
        let verifier = self
            .logs
            .get(&checkpoint.origin)
            .ok_or(WitnessError::UnknownOrigin)?;
        match open_note(&request.note, std::slice::from_ref(verifier)) {
            Ok(_) => {}
            Err(NoteError::NoVerifiedSignature | NoteError::InvalidSignature { .. }) => {
                return Err(WitnessError::Forbidden);
            }
            Err(_) => return Err(bad("not a signed note")),
        }
        if request.old_size > checkpoint.size {
            return Err(bad("the old size is above the checkpoint's"));
        }
        let mut connection = self.lock()?;
        let state = |e: rusqlite::Error| WitnessError::State(e.to_string());
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(state)?;
        let (size, root) = read_state(&transaction, &checkpoint.origin)?
            .map(|(size, root, _)| (size, root))
            .unwrap_or((0, EMPTY_ROOT));
        if request.old_size != size {
            return Err(WitnessError::Conflict { size });
        }
        if checkpoint.size == 0 && checkpoint.root != EMPTY_ROOT {
            return Err(WitnessError::Inconsistent(
                "an empty tree with another root".into(),
            ));
        }
        if size == 0 {
            if !request.proof.is_empty() {
                return Err(WitnessError::Inconsistent(
                    "a proof from the empty tree".into(),
                ));
            }
        } else {
            merkle::verify_consistency(
                size,
                checkpoint.size,
                &root,
                &checkpoint.root,
                &request.proof,
            )
            .map_err(|e| WitnessError::Inconsistent(e.to_string()))?;
        }
        transaction
            .execute(
                "INSERT INTO witnessed (origin, size, root, checkpoint) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (origin) DO UPDATE SET size = ?2, root = ?3, checkpoint = ?4",
                params![
                    checkpoint.origin,
                    i64::try_from(checkpoint.size).map_err(|_| bad("size out of range"))?,
                    checkpoint.root.as_slice(),
                    request.note,
                ],
            )
            .map_err(state)?;
        transaction.commit().map_err(state)?;
        let timestamp = u64::try_from(self.clock.now().unix_timestamp())
            .unwrap_or(1)
            .max(1);
        Ok(self.signer.cosign(text, timestamp))
    }
}

fn read_state(
    connection: &Connection,
    origin: &str,
) -> Result<Option<(u64, Hash, String)>, WitnessError> {
    let state = |e: rusqlite::Error| WitnessError::State(e.to_string());
    let row: Option<(i64, Vec<u8>, String)> = connection
        .query_row(
            "SELECT size, root, checkpoint FROM witnessed WHERE origin = ?1",
            params![origin],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(state)?;
    row.map(|(size, root, note)| {
        let size = u64::try_from(size).map_err(|_| WitnessError::State("negative size".into()))?;
        let root = Hash::try_from(root)
            .map_err(|_| WitnessError::State("a root is not 32 bytes".into()))?;
        Ok((size, root, note))
    })
    .transpose()
}

impl WitnessClient for Witness {
    fn add_checkpoint(&self, body: &str) -> Result<String, WitnessError> {
        Witness::add_checkpoint(self, body)
    }
}
