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
use consent_broker::checkpoint::{NoteSigner, NoteVerifier};
use consent_broker::{
    BrokerId, Clock, ConsentId, HolderId, Jwks, LogError, LogRead, SigningKey, SqliteStore,
    StoreStatus, SubjectId, SystemClock, TokenVerifier, checkpoint_log, consent_history,
    encode_hashes, prove, published_jwks, subject_history, verify_log,
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the Merkle tree over the stored log; with --checkpoint, also check the
    /// checkpoint's signature and that the log is consistent with it.
    Verify {
        #[command(flatten)]
        db: Db,
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
        db: Db,
        /// The checkpoint signing key (Ed25519, PKCS#8 DER).
        #[arg(long)]
        key: PathBuf,
        /// The log's origin line (the broker's id).
        #[arg(long)]
        origin: String,
    },
    /// Print a receipt for entry N: the entry, its inclusion proof and the latest checkpoint.
    Prove {
        #[command(flatten)]
        db: Db,
        /// The entry's sequence number.
        #[arg(long)]
        index: u64,
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

fn open(db: &Db) -> Result<SqliteStore, String> {
    if !db.db.exists() {
        return Err(format!("{} does not exist", db.db.display()));
    }
    SqliteStore::open(&db.db).map_err(|e| format!("{}: {e}", db.db.display()))
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
            checkpoint,
            vkey,
            vkey_file,
        }) => verify(&db, checkpoint, vkey, vkey_file),
        Command::Audit(AuditCommand::Checkpoint { db, key, origin }) => {
            let store = open(&db)?;
            let der = std::fs::read(&key).map_err(|e| format!("{}: {e}", key.display()))?;
            let key = SigningKey::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
            let signer = NoteSigner::new(&origin, key.to_pkcs8_der()).map_err(|e| e.to_string())?;
            let signed = checkpoint_log(&store, &origin, &signer).map_err(|e| e.to_string())?;
            print!("{}", signed.note);
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
        Command::Audit(AuditCommand::History {
            db,
            subject,
            consent,
        }) => {
            let store = open(&db)?;
            let entries = match (subject, consent) {
                (Some(subject), _) => {
                    let subject: SubjectId = subject.parse().map_err(|e| format!("{e}"))?;
                    subject_history(&store, &subject)
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

fn verify(
    db: &Db,
    checkpoint: Option<PathBuf>,
    vkey: Option<String>,
    vkey_file: Option<PathBuf>,
) -> Outcome {
    let store = open(db)?;
    let vkey = match (vkey, vkey_file) {
        (Some(vkey), _) => Some(vkey),
        (None, Some(path)) => Some(read(&path)?),
        (None, None) => None,
    };
    let note = checkpoint.as_ref().map(read).transpose()?;
    let verifier = match (&note, vkey) {
        (Some(_), Some(vkey)) => {
            Some(NoteVerifier::from_vkey(vkey.trim()).map_err(|e| e.to_string())?)
        }
        (Some(_), None) => {
            return Err(
                "--checkpoint needs the broker's verifier key (--vkey or --vkey-file)".into(),
            );
        }
        (None, _) => None,
    };
    let against = note.as_deref().zip(verifier.as_ref());
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
            Ok(true)
        }
        Err(LogError::Store(error)) => Err(error.to_string()),
        Err(error) => {
            match error.first_bad_index() {
                Some(index) => println!("INVALID at entry {index}: {error}"),
                None => println!("INVALID: {error}"),
            }
            Ok(false)
        }
    }
}
