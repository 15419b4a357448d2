//! `consent-broker`: the auditor's command-line tool.
//!
//! It reads a broker's SQLite store (for example the one `cargo run --example messenger_bank`
//! writes) and verifies its audit log, signs and prints checkpoints, proves entries, shows a
//! subject's history, prints the JWKS, and runs the bank's token verifier.
//!
//! Exit status: 0 when the answer is "valid"/"accepted", 1 when it is "invalid"/"refused",
//! 2 when the tool could not answer (bad arguments, unreadable files).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use consent_broker::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use consent_broker::cosignature::{CosignatureVerifier, WitnessPolicy, verify_witnessed};
use consent_broker::key_history::KeyHistory;
use consent_broker::merkle;
use consent_broker::tiles::{DirTiles, TiledLog, publish, verify_tiles};
use consent_broker::witness::AddCheckpoint;
use consent_broker::{
    BrokerId, Clock, ConsentId, HolderId, Jwks, LogError, LogRead, SigningKey, SqliteStore,
    StateRead, StoreNodes, StoreStatus, SubjectId, SystemClock, TokenVerifier, checkpoint_log,
    consent_history, encode_hashes, prove, published_jwks, subject_history, verify_log,
};

#[derive(Parser)]
#[command(
    name = "consent-broker",
    version,
    about = "Audit a consent-broker store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The audit log: verify, checkpoint, prove, history.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The broker's token keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Args)]
struct Db {
    /// The broker's SQLite database.
    #[arg(long)]
    db: PathBuf,
}

/// What signing a checkpoint needs: the store, the key, the origin.
#[derive(Args)]
struct Signing {
    #[command(flatten)]
    db: Db,
    /// The checkpoint signing key (Ed25519, PKCS#8 DER).
    #[arg(long)]
    key: PathBuf,
    /// The log's origin line (the broker's id).
    #[arg(long)]
    origin: String,
}

impl Signing {
    /// Signs (and records) a checkpoint of the whole log.
    fn sign(&self) -> Result<(SqliteStore, consent_broker::StoredCheckpoint), String> {
        let store = open_for_writing(&self.db)?;
        let signer = checkpoint_signer(&self.key, &self.origin)?;
        let signed = checkpoint_log(&store, &self.origin, &signer).map_err(|e| e.to_string())?;
        Ok((store, signed))
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the Merkle tree over the stored log (opened read-only: the tool never writes
    /// to evidence); with a verifier key, also check the store's own latest signed checkpoint,
    /// and with --checkpoint one the auditor kept, that each verifies and the log is consistent
    /// with it. With --tiles instead of --db, verify a published tile directory.
    Verify {
        /// The broker's SQLite database.
        #[arg(long, required_unless_present = "tiles", conflicts_with = "tiles")]
        db: Option<PathBuf>,
        /// A directory of published tiles (C2SP tlog-tiles) to verify instead of a database.
        #[arg(long)]
        tiles: Option<PathBuf>,
        /// The log's origin line a tile directory's checkpoint must carry.
        #[arg(long, requires = "tiles")]
        origin: Option<String>,
        /// A witness's cosignature verifier key (type 0x04); repeat for each trusted witness.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// How many of the --witness keys must have cosigned the tiles' checkpoint (choose more
        /// than half of them).
        #[arg(long)]
        quorum: Option<usize>,
        /// A signed checkpoint the auditor kept.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The broker's checkpoint verifier key (`name+id+key`).
        #[arg(long, conflicts_with = "vkey_file")]
        vkey: Option<String>,
        /// A file holding the verifier key.
        #[arg(long)]
        vkey_file: Option<PathBuf>,
    },
    /// Sign a checkpoint of the whole log with the broker's checkpoint key and print it.
    Checkpoint {
        #[command(flatten)]
        signing: Signing,
    },
    /// Print a consistency proof from a checkpoint the auditor kept to the store's latest
    /// signed checkpoint, as a C2SP tlog-witness add-checkpoint body: `old <size>`, the proof's
    /// hashes in base64 one per line, a blank line, the newer signed checkpoint.
    Consistency {
        #[command(flatten)]
        db: Db,
        /// The older signed checkpoint.
        #[arg(long)]
        from: PathBuf,
    },
    /// Publish the log with its tiles (C2SP tlog-tiles) under a directory: only the tiles new
    /// since the checkpoint already there. Without --key, the latest checkpoint the broker
    /// recorded in the store (no private key needed: a publisher or mirror runs this); with
    /// --key and --origin, a checkpoint of the whole log signed now.
    Publish {
        /// The broker's SQLite database.
        #[arg(long)]
        db: PathBuf,
        /// The checkpoint signing key (Ed25519, PKCS#8 DER), to sign a new checkpoint.
        #[arg(long, requires = "origin")]
        key: Option<PathBuf>,
        /// The log's origin line (the broker's id), with --key.
        #[arg(long, requires = "key")]
        origin: Option<String>,
        /// The directory to publish to.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print a receipt for entry N: the entry, its inclusion proof and the latest checkpoint.
    Prove {
        #[command(flatten)]
        db: Db,
        /// The entry's sequence number.
        #[arg(long)]
        index: u64,
    },
    /// Check a receipt (as `audit prove` or the subject's dashboard gives it) against the log's
    /// checkpoint verifier key, without the store: prints the proven entry. Compare the key with
    /// the one the log's witnesses and your bank publish; a key from the same place as the
    /// receipt proves nothing.
    Receipt {
        /// The receipt (JSON).
        file: PathBuf,
        /// The log's checkpoint verifier key (`name+id+key`).
        #[arg(long)]
        vkey: String,
    },
    /// Who asked for a subject's data (or about a consent), when, why, and what was decided.
    History {
        #[command(flatten)]
        db: Db,
        /// The subject.
        #[arg(long, required_unless_present = "consent")]
        subject: Option<String>,
        /// The consent.
        #[arg(long, conflicts_with = "subject")]
        consent: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print the JWKS of the token keys the store publishes now (the active key, and retired
    /// keys whose last tokens may still be presented).
    Jwks {
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Verify an access token as the bank would (the keys the store publishes now, consent
    /// status from the store).
    Verify {
        #[command(flatten)]
        db: Db,
        /// The bank's holder id (the token's `aud`).
        #[arg(long)]
        holder: String,
        /// The broker's id (the token's `iss`).
        #[arg(long)]
        issuer: String,
        /// The token.
        token: String,
    },
}

/// A failure to answer (exit 2), as opposed to a "no" (exit 1).
type Outcome = Result<bool, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// The store, read-only: every command but `checkpoint` and `publish` only reads evidence.
fn open(db: &Db) -> Result<SqliteStore, String> {
    open_path(&db.db)
}

fn open_path(path: &std::path::Path) -> Result<SqliteStore, String> {
    SqliteStore::open_read_only(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The store, to write the checkpoint it signs.
fn open_for_writing(db: &Db) -> Result<SqliteStore, String> {
    if !db.db.exists() {
        return Err(format!("{} does not exist", db.db.display()));
    }
    SqliteStore::open(&db.db).map_err(|e| format!("{}: {e}", db.db.display()))
}

fn checkpoint_signer(key: &PathBuf, origin: &str) -> Result<NoteSigner, String> {
    let der = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key = SigningKey::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
    NoteSigner::new(origin, key.to_pkcs8_der()).map_err(|e| e.to_string())
}

/// The token keys the store publishes now: the active key, and retired keys whose last tokens may
/// still be presented (never every key ever published).
fn current_jwks(store: &SqliteStore) -> Result<Jwks, String> {
    published_jwks(store, SystemClock.now()).map_err(|e| e.to_string())
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(command: Command) -> Outcome {
    match command {
        Command::Audit(AuditCommand::Verify {
            db,
            tiles,
            origin,
            witnesses,
            quorum,
            checkpoint,
            vkey,
            vkey_file,
        }) => {
            let vkey = match (vkey, vkey_file) {
                (Some(vkey), _) => Some(vkey),
                (None, Some(path)) => Some(read(&path)?),
                (None, None) => None,
            };
            if (!witnesses.is_empty() || quorum.is_some()) && tiles.is_none() {
                return Err("--witness and --quorum apply to --tiles".into());
            }
            if witnesses.is_empty() != quorum.is_none() {
                return Err(
                    "give --quorum with the --witness keys (more than half of them)".into(),
                );
            }
            match (db, tiles) {
                (_, Some(tiles)) => {
                    let policy = WitnessPolicy {
                        witnesses: witnesses
                            .iter()
                            .map(|w| CosignatureVerifier::from_vkey(w.trim()))
                            .collect::<Result<_, _>>()
                            .map_err(|e| format!("--witness: {e}"))?,
                        quorum: quorum.unwrap_or(0),
                    };
                    let vkey = vkey.ok_or("--tiles needs the log's verifier key (--vkey)")?;
                    let kept = checkpoint.as_ref().map(read).transpose()?;
                    verify_published(
                        &tiles,
                        vkey.trim(),
                        origin.as_deref(),
                        &policy,
                        kept.as_deref(),
                    )
                }
                (Some(db), None) => verify(&db, checkpoint, vkey),
                (None, None) => Err("give --db or --tiles".into()),
            }
        }
        Command::Audit(AuditCommand::Checkpoint { signing }) => {
            let (_, signed) = signing.sign()?;
            print!("{}", signed.note);
            Ok(true)
        }
        Command::Audit(AuditCommand::Publish {
            db,
            key,
            origin,
            dir,
        }) => {
            let (store, signed) = match (key, origin) {
                (Some(key), Some(origin)) => Signing {
                    db: Db { db },
                    key,
                    origin,
                }
                .sign()?,
                _ => {
                    let store = open_path(&db)?;
                    let recorded = store
                        .latest_checkpoint()
                        .map_err(|e| e.to_string())?
                        .ok_or(
                            "the store holds no signed checkpoint yet: give --key and --origin",
                        )?;
                    (store, recorded)
                }
            };
            let published = publish(&store, &dir, &signed).map_err(|e| e.to_string())?;
            println!(
                "published size {} (was {}): {} tiles and bundles, {} bytes, under {}",
                published.to,
                published.from,
                published.files,
                published.bytes,
                dir.display()
            );
            Ok(true)
        }
        Command::Audit(AuditCommand::Consistency { db, from }) => {
            let store = open(&db)?;
            let old = read(&from)?;
            let old = old
                .split("\n\n")
                .next()
                .map(|body| format!("{body}\n"))
                .unwrap_or_default();
            let old = Checkpoint::parse_body(&old).map_err(|e| format!("--from: {e}"))?;
            let new = store
                .latest_checkpoint()
                .map_err(|e| e.to_string())?
                .ok_or("the store holds no signed checkpoint; sign one with `audit checkpoint`")?;
            let proof = if old.size == 0 || old.size == new.size {
                Vec::new()
            } else {
                merkle::consistency_proof(old.size, new.size, &StoreNodes(&store))
                    .map_err(|e| e.to_string())?
            };
            if old.size == new.size && old.root != new.root {
                println!("INCONSISTENT: the same size with another root");
                return Ok(false);
            }
            // The proof must take the kept root to the new one: otherwise the log was rewritten.
            if old.size > 0
                && merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
                    .is_err()
            {
                println!(
                    "INCONSISTENT: the log is not an extension of the kept checkpoint of size {}",
                    old.size
                );
                return Ok(false);
            }
            let body = AddCheckpoint {
                old_size: old.size,
                proof,
                note: new.note,
            };
            print!("{}", body.to_body());
            Ok(true)
        }
        Command::Audit(AuditCommand::Prove { db, index }) => {
            let store = open(&db)?;
            let checkpoint = store
                .latest_checkpoint()
                .map_err(|e| e.to_string())?
                .filter(|c| c.size > index)
                .ok_or_else(|| {
                    format!("no checkpoint covers entry {index}; sign one with `audit checkpoint`")
                })?;
            let receipt = prove(&store, index, &checkpoint).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&receipt).map_err(|e| e.to_string())?
            );
            Ok(true)
        }
        Command::Audit(AuditCommand::Receipt { file, vkey }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let receipt: consent_broker::Receipt =
                serde_json::from_str(&text).map_err(|e| format!("not a receipt: {e}"))?;
            let key = consent_broker::checkpoint::NoteVerifier::from_vkey(&vkey)
                .map_err(|e| format!("not a verifier key: {e}"))?;
            match receipt.verify(&key) {
                Ok(entry) => {
                    println!(
                        "verified: entry {} is in the log of size {} whose checkpoint the key signed",
                        entry.seq, receipt.tree_size
                    );
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&entry).map_err(|e| e.to_string())?
                    );
                    Ok(true)
                }
                Err(error) => {
                    println!("does not verify: {error}");
                    Ok(false)
                }
            }
        }
        Command::Audit(AuditCommand::History {
            db,
            subject,
            consent,
        }) => {
            let store = open(&db)?;
            let entries = match (subject, consent) {
                (Some(subject), _) => {
                    // The log names the subject by its pseudonym under the subject's key, which
                    // the store keeps apart from the log (none: never recorded, or erased).
                    let subject: SubjectId = subject.parse().map_err(|e| format!("{e}"))?;
                    match store.subject_key(&subject).map_err(|e| e.to_string())? {
                        Some(key) => subject_history(&store, &key.subject(&subject)),
                        None => Ok(Vec::new()),
                    }
                }
                (None, Some(consent)) => {
                    let consent: ConsentId = consent.parse().map_err(|e| format!("{e}"))?;
                    consent_history(&store, &consent)
                }
                (None, None) => return Err("give --subject or --consent".into()),
            }
            .map_err(|e| e.to_string())?;
            for entry in entries {
                println!(
                    "{}",
                    serde_json::to_string(&entry).map_err(|e| e.to_string())?
                );
            }
            Ok(true)
        }
        Command::Keys(KeysCommand::Jwks { db }) => {
            let store = open(&db)?;
            let jwks = current_jwks(&store)?;
            println!("{}", jwks.to_json());
            Ok(true)
        }
        Command::Token(TokenCommand::Verify {
            db,
            holder,
            issuer,
            token,
        }) => {
            let store = Arc::new(open(&db)?);
            let holder: HolderId = holder.parse().map_err(|e| format!("{e}"))?;
            let issuer: BrokerId = issuer.parse().map_err(|e| format!("{e}"))?;
            let jwks = current_jwks(&store)?;
            let verifier = TokenVerifier::new(
                holder,
                issuer,
                &jwks,
                Arc::new(SystemClock),
                StoreStatus(store),
            )
            .map_err(|e| e.to_string())?;
            match verifier.verify(token.trim()) {
                Ok(access) => {
                    println!(
                        "accepted: consent {} subject {} platform {} scope {} purpose {} account {}",
                        access.consent(),
                        access.subject(),
                        access.platform(),
                        access.scope(),
                        access.purpose(),
                        access.account()
                    );
                    Ok(true)
                }
                Err(refusal) => {
                    println!("refused: {refusal}");
                    Ok(false)
                }
            }
        }
    }
}

fn verify(db: &std::path::Path, checkpoint: Option<PathBuf>, vkey: Option<String>) -> Outcome {
    let store = open_path(db)?;
    let note = checkpoint.as_ref().map(read).transpose()?;
    let verifier = match vkey {
        Some(vkey) => Some(NoteVerifier::from_vkey(vkey.trim()).map_err(|e| e.to_string())?),
        None if note.is_some() => {
            return Err(
                "--checkpoint needs the broker's verifier key (--vkey or --vkey-file)".into(),
            );
        }
        None => None,
    };
    // The key history the log records: the given key is the first one trusted; a checkpoint is
    // checked with the key in force at its size.
    let history = match &verifier {
        Some(first) => match KeyHistory::from_log(&store, first.name(), first.clone()) {
            Ok(history) => Some(history),
            Err(consent_broker::key_history::KeyHistoryError::Store(error)) => {
                return Err(error.to_string());
            }
            Err(error) => {
                println!("INVALID: key history: {error}");
                return Ok(false);
            }
        },
        None => None,
    };
    let key_for = |note: &str| -> Option<NoteVerifier> {
        let history = history.as_ref()?;
        let body = note.split("\n\n").next().map(|b| format!("{b}\n"))?;
        let size = Checkpoint::parse_body(&body).map(|c| c.size).unwrap_or(0);
        Some(history.key_for(size).clone())
    };
    let kept_key = note.as_deref().and_then(key_for);
    let against = note.as_deref().zip(kept_key.as_ref());
    match verify_log(&store, against) {
        Ok(report) => {
            let root = encode_hashes(&[report.root]).concat();
            match report.checkpoint {
                Some(checkpoint) => println!(
                    "valid: {} entries, root {root}; consistent with the signed checkpoint of size {}",
                    report.size, checkpoint.size
                ),
                None => println!("valid: {} entries, root {root}", report.size),
            }
        }
        Err(LogError::Store(error)) => return Err(error.to_string()),
        Err(error) => {
            invalid(&error, "");
            return Ok(false);
        }
    }
    // The store's own latest signed checkpoint is evidence too: a log rewritten consistently
    // (every hash recomputed) no longer matches what the broker signed before.
    let Some(own) = store.latest_checkpoint().map_err(|e| e.to_string())? else {
        return Ok(true);
    };
    let Some(own_key) = key_for(&own.note) else {
        return Ok(true);
    };
    match verify_log(&store, Some((own.note.as_str(), &own_key))) {
        Ok(_) => {
            println!(
                "the store's own signed checkpoint of size {} verifies; the log is consistent with it",
                own.size
            );
            Ok(true)
        }
        Err(LogError::Store(error)) => Err(error.to_string()),
        Err(error) => {
            invalid(&error, " (against the store's own signed checkpoint)");
            Ok(false)
        }
    }
}

fn invalid(error: &LogError, against: &str) {
    match error.first_bad_index() {
        Some(index) => println!("INVALID at entry {index}: {error}{against}"),
        None => println!("INVALID: {error}{against}"),
    }
}

/// Verifies a published tile directory: the key history from the entries, the checkpoint's
/// signature by the key in force at its size, the witnesses' quorum, every entry and tile, and
/// consistency with a checkpoint the auditor kept.
fn verify_published(
    dir: &std::path::Path,
    vkey: &str,
    origin: Option<&str>,
    policy: &WitnessPolicy,
    kept: Option<&str>,
) -> Outcome {
    let first = NoteVerifier::from_vkey(vkey).map_err(|e| e.to_string())?;
    let source = DirTiles::new(dir);
    let note = read(&dir.join("checkpoint"))?;
    // The entries first, under the checkpoint's unverified body: the root check binds them to
    // it, and the key history they record says which key must have signed it.
    let body = note
        .split("\n\n")
        .next()
        .map(|b| format!("{b}\n"))
        .unwrap_or_default();
    let claimed = match Checkpoint::parse_body(&body) {
        Ok(claimed) => claimed,
        Err(error) => {
            println!("INVALID checkpoint: {error}");
            return Ok(false);
        }
    };
    let mut log = TiledLog::new();
    let entries = match log.update_to(&source, claimed.clone()) {
        Ok(entries) => entries,
        Err(error) => {
            println!("INVALID: {error}");
            return Ok(false);
        }
    };
    let mut history = KeyHistory::new(&claimed.origin, first);
    for entry in &entries {
        let Ok(entry) = consent_broker::AuditEntry::from_bytes(&entry.bytes) else {
            continue;
        };
        if let Err(error) = history.observe(&entry) {
            println!("INVALID: key history: {error}");
            return Ok(false);
        }
    }
    let log_key = history.key_for(claimed.size).clone();
    let witnessed = match verify_witnessed(&note, &log_key, origin, policy) {
        Ok(witnessed) => witnessed,
        Err(error) => {
            println!("INVALID checkpoint: {error}");
            return Ok(false);
        }
    };
    if let Some(kept) = kept {
        let kept = match history.verify_checkpoint(kept) {
            Ok(kept) => kept,
            Err(error) => {
                println!("INVALID kept checkpoint: {error}");
                return Ok(false);
            }
        };
        let mut prefix = TiledLog::new();
        if let Err(error) = prefix
            .update_to(&source, kept.clone())
            .and_then(|_| prefix.update_to(&source, witnessed.checkpoint.clone()))
        {
            println!(
                "INVALID: not consistent with the kept checkpoint of size {}: {error}",
                kept.size
            );
            return Ok(false);
        }
    }
    match verify_tiles(&source, &log_key, origin) {
        Ok(report) if report.checkpoint == witnessed.checkpoint => {
            let root = encode_hashes(&[report.checkpoint.root]).concat();
            println!(
                "valid: {} entries, root {root}; {} hash tiles checked; cosigned by {} of the {} required witnesses",
                report.checkpoint.size,
                report.tiles,
                witnessed.cosigned_by.len(),
                policy.quorum
            );
            Ok(true)
        }
        Ok(_) => {
            println!("INVALID: the checkpoint changed while it was read");
            Ok(false)
        }
        Err(error) => {
            println!("INVALID: {error}");
            Ok(false)
        }
    }
}
