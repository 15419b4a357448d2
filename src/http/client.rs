//! The platform's clients: [`BankClient`] calls a bank's API with a sender-constrained token,
//! and [`BrokerClient`] reads a broker's public endpoints (a bank uses it for the JWKS and the
//! revocation feed, and to deliver its instructions).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::http::header;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::problem::{PROBLEM_JSON, ProblemDetails};
use crate::clock::{Clock, SystemClock};
use crate::dpop::{DpopError, DpopSigner, HttpRequest};
use crate::ids::HolderId;
use crate::keys::Jwks;
use crate::random::RandomSource;
use crate::refusal::GateRefusal;
use crate::sealing::Response;

/// How a client talks to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The longest one attempt may take, connection included (default 5 s).
    pub timeout: StdDuration,
    /// The longest a connection may take (default 2 s).
    pub connect_timeout: StdDuration,
    /// Attempts per call, at least 1 (default 3): a retry is made only when the request cannot
    /// have been acted on (the connection failed) or the server said nothing was done (503).
    pub attempts: u32,
    /// The wait before the second attempt, doubled before each next one (default 100 ms).
    pub backoff: StdDuration,
    /// PEM certificates of the certificate authorities to trust; `None` trusts the Web PKI's
    /// roots (Mozilla's, from `webpki-roots`). Verification is always on.
    pub root_certificates: Option<Vec<u8>>,
    /// The largest answer read (default 1 MiB, above the largest sealed response); `HttpTiles`
    /// reads each published file up to what the tile layout allows for it instead.
    pub max_response_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout: StdDuration::from_secs(5),
            connect_timeout: StdDuration::from_secs(2),
            attempts: 3,
            backoff: StdDuration::from_millis(100),
            root_certificates: None,
            max_response_bytes: 1 << 20,
        }
    }
}

/// Why a call across the network did not give its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The bank's gate refused, for this typed reason (recorded at `journal_seq` in the bank's
    /// journal when the token verified).
    #[error("the bank refused ({status}): {refusal}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The reason.
        refusal: GateRefusal,
        /// The bank's journal entry recording it.
        journal_seq: Option<u64>,
    },
    /// The server answered with a problem document that is not a gate refusal.
    #[error("the server answered {}: {}", .0.status, .0.title)]
    Problem(Box<ProblemDetails>),
    /// The server said it could do nothing now (503), still after every attempt.
    #[error("the server is unavailable (retry after {retry_after:?} s)")]
    Unavailable {
        /// Its `Retry-After`, when it gave one.
        retry_after: Option<u64>,
    },
    /// No connection could be made, after every attempt: the request was never acted on.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The request was sent but no answer came in time: the server may have acted on it (a
    /// single-use token may be spent). Not retried.
    #[error("no answer in time; the outcome is unknown")]
    Timeout,
    /// The answer was not what the protocol says (wrong content type, too large, unreadable).
    #[error("unexpected answer: {0}")]
    InvalidResponse(String),
    /// A DPoP proof could not be made (no randomness).
    #[error("no proof could be made: {0}")]
    Proof(DpopError),
    /// The client could not be built (TLS roots).
    #[error("client configuration: {0}")]
    Config(String),
}

/// The rustls configuration of every client of this module: the `ring` provider (this crate's
/// cryptographic backend), safe protocol versions, certificate verification on, against
/// the roots of `settings` or the Web PKI's. For a `reqwest` client of your own:
/// `reqwest::Client::builder().tls_backend_preconfigured(tls_config(&settings)?)`.
///
/// # Errors
/// [`ClientError::Config`] for unreadable or empty PEM roots.
pub fn tls_config(settings: &ClientSettings) -> Result<rustls::ClientConfig, ClientError> {
    let config = |e: &dyn std::fmt::Display| ClientError::Config(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    match &settings.root_certificates {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| config(&e))?)
                    .map_err(|e| config(&e))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Config(
                    "no certificate in the PEM roots".into(),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| config(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A synchronous client on the same settings (for the synchronous `WitnessClient` and
/// `TileSource`): make, use and drop it on a blocking thread.
pub(crate) fn blocking_client(
    settings: &ClientSettings,
) -> Result<reqwest::blocking::Client, ClientError> {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls_config(settings)?)
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError::Config(e.to_string()))
}

fn async_client(settings: &ClientSettings) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(settings)?)
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// Sends what `request` makes (anew for each attempt: a fresh proof) up to `settings.attempts`
/// times and returns the first success (2xx). Another attempt is made only when the request
/// cannot have been acted on: no connection could be made, the server answered 503
/// `unavailable` (waiting at least its `Retry-After`, at most 5 s), or, for a request that
/// changes nothing (`idempotent`), no answer came in time. Never after a refusal, a 500, or a
/// timeout of a request that may have changed something.
async fn with_retries(
    settings: &ClientSettings,
    idempotent: bool,
    mut request: impl FnMut(u32) -> Result<reqwest::RequestBuilder, ClientError>,
) -> Result<reqwest::Response, ClientError> {
    let mut wait = settings.backoff;
    let mut last = ClientError::Connect("no attempt".into());
    for attempt in 1..=settings.attempts.max(1) {
        if attempt > 1 {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        let response = match request(attempt)?.send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                last = ClientError::Connect(error.to_string());
                continue;
            }
            Err(error) if error.is_timeout() && idempotent => {
                last = ClientError::Timeout;
                continue;
            }
            Err(error) if error.is_timeout() => return Err(ClientError::Timeout),
            Err(error) => return Err(ClientError::InvalidResponse(error.to_string())),
        };
        if response.status().is_success() {
            return Ok(response);
        }
        match failure(response, settings.max_response_bytes).await {
            ClientError::Unavailable { retry_after } => {
                wait = wait.max(retry_wait(retry_after));
                last = ClientError::Unavailable { retry_after };
            }
            // A refusal (even a 503 for a stale feed) is journalled at the bank: another
            // attempt would only journal another.
            error => return Err(error),
        }
    }
    Err(last)
}

/// The largest revocation feed read (64 MiB: some 500,000 revocations).
pub const MAX_FEED_BYTES: usize = 64 << 20;

/// How long to wait before retrying after a `Retry-After` of `seconds`: as asked, at most 5 s
/// (a caller that wants to wait longer calls again later).
fn retry_wait(seconds: Option<u64>) -> StdDuration {
    StdDuration::from_secs(seconds.unwrap_or(0).min(5))
}

/// The body of a response, at most `limit` bytes.
async fn body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ClientError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ClientError::InvalidResponse(
            "the answer is too large".into(),
        ));
    }
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(ClientError::InvalidResponse(
                        "the answer is too large".into(),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(error) if error.is_timeout() => return Err(ClientError::Timeout),
            Err(error) => return Err(ClientError::InvalidResponse(error.to_string())),
        }
    }
}

/// What a non-success answer means, typed.
async fn failure(response: reqwest::Response, limit: usize) -> ClientError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    let bytes = match body(response, limit).await {
        Ok(bytes) => bytes,
        Err(error) => return error,
    };
    let problem = is_problem
        .then(|| serde_json::from_slice::<ProblemDetails>(&bytes).ok())
        .flatten();
    match problem {
        Some(ProblemDetails {
            refusal: Some(refusal),
            journal_seq,
            ..
        }) => ClientError::Refused {
            status,
            refusal,
            journal_seq,
        },
        _ if status == 503 => ClientError::Unavailable { retry_after },
        Some(problem) => ClientError::Problem(Box::new(problem)),
        None => ClientError::InvalidResponse(format!("status {status} without a problem document")),
    }
}

/// The platform's client of a bank's API: each call presents the access token with a fresh
/// DPoP proof (RFC 9449) for that very request, signed with the platform's key the token is
/// bound to; times out; retries only what cannot have been acted on; and maps every refusal
/// to a typed [`ClientError`].
#[derive(Clone)]
pub struct BankClient {
    http: reqwest::Client,
    settings: ClientSettings,
    signer: Arc<DpopSigner>,
    random: Arc<dyn RandomSource + Send + Sync>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for BankClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl BankClient {
    /// A client proving possession with `signer` (the key the broker binds the platform's
    /// tokens to), its randomness from `random`.
    ///
    /// # Errors
    /// [`ClientError::Config`].
    pub fn new(
        signer: DpopSigner,
        random: Arc<dyn RandomSource + Send + Sync>,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            http: async_client(&settings)?,
            settings,
            signer: Arc::new(signer),
            random,
            clock: Arc::new(SystemClock),
        })
    }

    /// Dates the proofs by `clock` (the broker's, in tests with a manual clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// `GET url` with `token`: the bank's [`Response`] (sealed to the subject's devices, or
    /// plaintext where the approval allows it).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the gate's typed reason; the others of [`ClientError`].
    pub async fn fetch(&self, url: &str, token: &str) -> Result<Response, ClientError> {
        let span = tracing::info_span!("bank_client.fetch");
        let response = tracing::Instrument::instrument(
            with_retries(&self.settings, false, |_| {
                // A fresh proof per attempt: the gate takes each proof once.
                let proof = self
                    .signer
                    .proof(
                        &HttpRequest { method: "GET", url },
                        token,
                        self.clock.now(),
                        self.random.as_ref(),
                    )
                    .map_err(ClientError::Proof)?;
                Ok(self
                    .http
                    .get(url)
                    .header(header::AUTHORIZATION, format!("DPoP {token}"))
                    .header("DPoP", proof)
                    .header(header::ACCEPT, "application/json"))
            }),
            span,
        )
        .await?;
        let bytes = body(response, self.settings.max_response_bytes).await?;
        serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::InvalidResponse("not a bank response".into()))
    }
}

/// A client of a broker's public endpoints (see [`super::broker`]).
#[derive(Debug, Clone)]
pub struct BrokerClient {
    base: String,
    http: reqwest::Client,
    settings: ClientSettings,
}

impl BrokerClient {
    /// The broker at `base` (`https://broker.platform.example`).
    ///
    /// # Errors
    /// [`ClientError::Config`].
    pub fn new(base: &str, settings: ClientSettings) -> Result<Self, ClientError> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: async_client(&settings)?,
            settings,
        })
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.get_up_to(path, self.settings.max_response_bytes).await
    }

    async fn get_up_to(&self, path: &str, limit: usize) -> Result<Vec<u8>, ClientError> {
        // Reads change nothing: a timeout may be retried too.
        let url = format!("{}{path}", self.base);
        let response = with_retries(&self.settings, true, |_| Ok(self.http.get(&url))).await?;
        body(response, limit).await
    }

    /// The broker's token keys.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn jwks(&self) -> Result<Jwks, ClientError> {
        let bytes = self.get("/.well-known/jwks.json").await?;
        serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::InvalidResponse("not a JWKS".into()))
    }

    /// The signed revocation feed for `holder`, from `after` (the bank's cursor), to hand to
    /// [`crate::Bank::apply_revocation_feed`].
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn revocation_feed(
        &self,
        holder: &HolderId,
        after: u64,
    ) -> Result<String, ClientError> {
        // A feed holds every revocation since the cursor: a bank far behind gets a large one.
        let bytes = self
            .get_up_to(
                &format!("/revocations/{holder}?after={after}"),
                MAX_FEED_BYTES.max(self.settings.max_response_bytes),
            )
            .await?;
        String::from_utf8(bytes).map_err(|_| ClientError::InvalidResponse("not UTF-8".into()))
    }

    /// The published checkpoint note.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn checkpoint(&self) -> Result<String, ClientError> {
        let bytes = self.get("/checkpoint").await?;
        String::from_utf8(bytes).map_err(|_| ClientError::InvalidResponse("not UTF-8".into()))
    }

    /// The bytes of a tile, by its path (`tile/0/000`).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn tile(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.get(&format!("/{}", path.trim_start_matches('/')))
            .await
    }

    /// Delivers a bank's signed instruction. Retried only when it cannot have been applied (no
    /// connection, a 503); a timeout is not retried (the broker refuses an instruction applied
    /// before, so a duplicate would be harmless, but reported as a refusal).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn send_instruction(&self, instruction: &str) -> Result<(), ClientError> {
        let url = format!("{}/instructions", self.base);
        with_retries(&self.settings, false, |_| {
            Ok(self
                .http
                .post(&url)
                .header(header::CONTENT_TYPE, "application/jose")
                .body(instruction.to_owned()))
        })
        .await
        .map(drop)
    }
}
