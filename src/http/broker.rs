//! The broker's public endpoints, served by the platform, and the client that asks witnesses to
//! cosign.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /.well-known/jwks.json` | the token keys banks verify against (RFC 7517) |
//! | `GET /checkpoint` | the latest published checkpoint, with its cosignatures (C2SP `tlog-checkpoint`, `signed-note`) |
//! | `GET /tile/{...}` | tiles and entry bundles (C2SP `tlog-tiles`), within the published checkpoint |
//! | `GET /revocations/{holder}?after=N` | the signed feed of platform-side revocations for a bank, from its cursor |
//! | `POST /instructions` | a bank delivers a signed instruction (a revocation at the bank, a policy change) |
//! | `POST /consents/{id}/approval` | the bank's attestation of what the person approved (a compact JWS, as the bank's approval endpoint returned it), carried back by the person's browser or sent by the bank; 204 once the consent is live |
//! | `GET /metrics` | Prometheus text |
//!
//! Plus the subject's dashboard and chat view under `/dashboard` and `/chat` when configured
//! (see [`super::dashboard`]).

use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::client::{ClientSettings, blocking_client};
use super::problem::Problem;
use super::{Metrics, blocking, metrics};
use crate::broker::Broker;
use crate::error::Error;
use crate::ids::HolderId;
use crate::store::{LogRead, StateRead, Store};
use crate::tiles::{Tile, TileError, TileSource, tile_bytes};
use crate::witness::{Cosigned, Cosigning, WitnessClient, WitnessError};

/// The broker's public endpoints: build with [`BrokerEndpoints::new`], serve
/// [`BrokerEndpoints::router`], and publish checkpoints with [`BrokerEndpoints::publish`] on a
/// timer.
pub struct BrokerEndpoints<S> {
    broker: Arc<Broker<S>>,
    published: Arc<RwLock<Option<Published>>>,
    feeds: Arc<FeedCache>,
    metrics: Metrics,
}

/// How long a signed feed is served again to the same question (holder and cursor) before it is
/// made anew: a feed is a scan of the log and a signature, and anyone may ask.
const FEED_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The feeds made lately, and the lock that lets one be made at a time.
#[derive(Debug, Default)]
struct FeedCache {
    made: tokio::sync::Mutex<
        std::collections::HashMap<(HolderId, u64), (std::time::Instant, String)>,
    >,
}

#[derive(Debug, Clone)]
struct Published {
    size: u64,
    note: String,
}

impl<S> Clone for BrokerEndpoints<S> {
    fn clone(&self) -> Self {
        Self {
            broker: Arc::clone(&self.broker),
            published: Arc::clone(&self.published),
            feeds: Arc::clone(&self.feeds),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S> std::fmt::Debug for BrokerEndpoints<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerEndpoints").finish_non_exhaustive()
    }
}

/// The problem of a broker call that failed.
pub(crate) fn broker_problem(error: &Error) -> Problem {
    if error.is_retryable() {
        return Problem::unavailable("the broker's store is unavailable; nothing was changed");
    }
    let (status, code) = match error {
        Error::UnknownConsent(_) => (StatusCode::NOT_FOUND, "broker/unknown-consent"),
        Error::Consent(_) => (StatusCode::CONFLICT, "broker/consent-state"),
        Error::Instruction(_) => (StatusCode::UNPROCESSABLE_ENTITY, "broker/instruction"),
        Error::Attestation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "broker/attestation"),
        Error::Id(_) => (StatusCode::BAD_REQUEST, "bad-request"),
        Error::FeedBeyondLog { .. } => (StatusCode::CONFLICT, "broker/feed-beyond-log"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let problem = Problem::new(status, code, "Refused by the broker");
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %error, "broker call failed");
        problem
    } else {
        problem.detail(crate::privacy::unquoted(&error.to_string()))
    }
}

impl<S: Store + Send + Sync + 'static> BrokerEndpoints<S> {
    /// The endpoints of `broker`.
    pub fn new(broker: Arc<Broker<S>>) -> Self {
        Self {
            broker,
            published: Arc::new(RwLock::new(None)),
            feeds: Arc::new(FeedCache::default()),
            metrics: Metrics::new(),
        }
    }

    /// Count into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<Broker<S>> {
        &self.broker
    }

    /// Signs a checkpoint, has the witnesses of `cosigning` cosign it, and serves the note with
    /// its cosignatures at `GET /checkpoint` from now on. Blocking (the broker and the witnesses'
    /// clients are synchronous): call it from a blocking thread, on a timer.
    ///
    /// # Errors
    /// As [`Broker::witnessed_checkpoint`].
    pub fn publish(&self, cosigning: &mut Cosigning<'_>) -> Result<Cosigned, Error> {
        let (checkpoint, cosigned) = self.broker.witnessed_checkpoint(cosigning)?;
        tracing::info!(
            size = checkpoint.size,
            cosignatures = cosigned.cosigned_by.len(),
            alarms = cosigned.alarms.len(),
            "broker.publish_checkpoint"
        );
        let mut published = self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Never serve a smaller tree than one already served.
        if published.as_ref().is_none_or(|p| p.size <= checkpoint.size) {
            *published = Some(Published {
                size: checkpoint.size,
                note: cosigned.note.clone(),
            });
        }
        Ok(cosigned)
    }

    fn published(&self) -> Result<Option<Published>, Problem> {
        if let Some(published) = self
            .published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(Some(published));
        }
        let latest = self
            .broker
            .store()
            .latest_checkpoint()
            .map_err(|e| broker_problem(&Error::Store(e)))?;
        Ok(latest.map(|c| Published {
            size: c.size,
            note: c.note,
        }))
    }

    /// The router of the module's table, bodies bounded, every request traced and counted.
    pub fn router(self) -> Router {
        let router = Router::new()
            .route("/.well-known/jwks.json", get(jwks::<S>))
            .route("/checkpoint", get(checkpoint::<S>))
            .route("/tile/{*path}", get(tile::<S>))
            .route("/revocations/{holder}", get(feed::<S>))
            .route("/instructions", post(instruction::<S>))
            .route("/consents/{consent}/approval", post(approval::<S>))
            .with_state(self.clone())
            .route(
                "/metrics",
                get(metrics::expose).with_state(self.metrics.clone()),
            );
        super::bounded(router, self.metrics.clone())
    }
}

fn typed(
    body: impl Into<axum::body::Body>,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn jwks<S: Store + Send + Sync + 'static>(
    State(endpoints): State<BrokerEndpoints<S>>,
) -> Result<Response, Problem> {
    let broker = Arc::clone(&endpoints.broker);
    let jwks = blocking(move || broker.jwks())
        .await?
        .map_err(|e| broker_problem(&e))?;
    let body = serde_json::to_vec(&jwks).map_err(|_| Problem::internal("unencodable JWKS"))?;
    Ok(typed(
        body,
        "application/jwk-set+json",
        "public, max-age=300",
    ))
}

async fn checkpoint<S: Store + Send + Sync + 'static>(
    State(endpoints): State<BrokerEndpoints<S>>,
) -> Result<Response, Problem> {
    let published = blocking(move || endpoints.published()).await??;
    let published = published.ok_or_else(Problem::not_found)?;
    Ok(typed(
        published.note,
        "text/plain; charset=utf-8",
        "no-cache",
    ))
}

async fn tile<S: Store + Send + Sync + 'static>(
    State(endpoints): State<BrokerEndpoints<S>>,
    Path(path): Path<String>,
) -> Result<Response, Problem> {
    let tile = Tile::parse(&format!("tile/{path}")).map_err(|_| Problem::not_found())?;
    let bytes = blocking(move || {
        // Only what the published checkpoint covers: a reader checks tiles against it.
        let size = endpoints.published()?.map_or(0, |p| p.size);
        let (level, range) = tile.nodes();
        let covered = u128::from(range.end) << level.min(64);
        if covered > u128::from(size) {
            return Err(Problem::not_found());
        }
        tile_bytes(&endpoints.broker.store(), &tile).map_err(|error| {
            tracing::error!(error = %error, "a published tile cannot be read");
            Problem::unavailable("the tile cannot be read now")
        })
    })
    .await??;
    // A full tile never changes; a partial one is replaced by a wider one.
    let cache = if tile.is_full() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(typed(bytes, "application/octet-stream", cache))
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn feed<S: Store + Send + Sync + 'static>(
    State(endpoints): State<BrokerEndpoints<S>>,
    Path(holder): Path<String>,
    Query(after): Query<After>,
) -> Result<Response, Problem> {
    let holder = HolderId::new(holder).map_err(|_| Problem::not_found())?;
    // One feed made at a time, and the same question within a second answered with the same
    // feed: the scan is bounded by the callers' patience, not by their number.
    let mut made = endpoints.feeds.made.lock().await;
    let key = (holder.clone(), after.after);
    if let Some((at, feed)) = made.get(&key)
        && at.elapsed() < FEED_REUSE
    {
        return Ok(typed(feed.clone(), "application/jose", "no-store"));
    }
    let broker = Arc::clone(&endpoints.broker);
    let asked = holder.clone();
    let feed = blocking(move || {
        // An unknown holder gets nothing, before any scan.
        match broker.store().holder(&asked) {
            Ok(Some(_)) => broker.revocation_feed(&asked, after.after).map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(Error::Store(error)),
        }
    })
    .await?
    .map_err(|e| broker_problem(&e))?
    .ok_or_else(Problem::not_found)?;
    made.retain(|_, (at, _)| at.elapsed() < FEED_REUSE);
    made.insert(key, (std::time::Instant::now(), feed.clone()));
    drop(made);
    tracing::info!(after = after.after, "broker.revocation_feed");
    Ok(typed(feed, "application/jose", "no-store"))
}

async fn instruction<S: Store + Send + Sync + 'static>(
    State(endpoints): State<BrokerEndpoints<S>>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let signed = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("the instruction is not UTF-8"))?
        .trim()
        .to_owned();
    let broker = Arc::clone(&endpoints.broker);
    blocking(move || broker.apply_holder_instruction(&signed))
        .await?
        .map_err(|e| broker_problem(&e))?;
    tracing::info!("broker.apply_holder_instruction");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn approval<S: Store + Send + Sync + 'static>(
    State(endpoints): State<BrokerEndpoints<S>>,
    Path(consent): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let consent = crate::ids::ConsentId::new(consent).map_err(|_| Problem::not_found())?;
    let signed = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("the attestation is not UTF-8"))?
        .trim()
        .to_owned();
    let broker = Arc::clone(&endpoints.broker);
    blocking(move || broker.approve(&consent, &signed))
        .await?
        .map_err(|e| broker_problem(&e))?;
    tracing::info!("broker.approve");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A witness across the network (C2SP `tlog-witness`: `POST <url>/add-checkpoint`), for a
/// [`Cosigning`]. Synchronous, as [`WitnessClient`] is: make, use and drop it on a blocking
/// thread, never on an async executor's.
#[derive(Debug, Clone)]
pub struct HttpWitness {
    url: String,
    http: reqwest::blocking::Client,
}

impl HttpWitness {
    /// The witness at `base` (`https://witness.example`), with the timeouts and trusted roots of
    /// `settings`.
    ///
    /// # Errors
    /// [`super::ClientError::Config`] when the TLS configuration cannot be built.
    pub fn new(base: &str, settings: &ClientSettings) -> Result<Self, super::ClientError> {
        let http = blocking_client(settings)?;
        Ok(Self {
            url: format!("{}/add-checkpoint", base.trim_end_matches('/')),
            http,
        })
    }
}

/// The longest answer read from a witness.
const MAX_WITNESS_ANSWER: u64 = 16 * 1024;

impl WitnessClient for HttpWitness {
    fn add_checkpoint(&self, body: &str) -> Result<String, WitnessError> {
        let unreachable = |e: &dyn std::fmt::Display| WitnessError::Unreachable(e.to_string());
        let response = self
            .http
            .post(&self.url)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body.to_owned())
            .send()
            .map_err(|e| unreachable(&e))?;
        let status = response.status().as_u16();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_WITNESS_ANSWER)
        {
            return Err(WitnessError::Unreachable("the answer is too long".into()));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(response, MAX_WITNESS_ANSWER),
            &mut text,
        )
        .map_err(|e| unreachable(&e))?;
        match status {
            200 => Ok(text),
            409 => text
                .trim()
                .parse()
                .map(|size| WitnessError::Conflict { size })
                .map_err(|_| WitnessError::Unreachable("a 409 without a size".into()))
                .and_then(Err),
            404 => Err(WitnessError::UnknownOrigin),
            403 => Err(WitnessError::Forbidden),
            400 => Err(WitnessError::BadRequest(text.trim().to_owned())),
            422 => Err(WitnessError::Inconsistent(text.trim().to_owned())),
            500 => Err(WitnessError::State(text.trim().to_owned())),
            other => Err(WitnessError::Unreachable(format!("status {other}"))),
        }
    }
}

/// A published log read over HTTP (a [`TileSource`] for [`crate::tiles::verify_tiles`] and
/// [`crate::tiles::TiledLog`]): `GET <base>/checkpoint` and `GET <base>/tile/...`, as served
/// by [`BrokerEndpoints`] or any static file server. Synchronous: use it on a blocking thread.
#[derive(Debug, Clone)]
pub struct HttpTiles {
    base: String,
    http: reqwest::blocking::Client,
}

impl HttpTiles {
    /// The log published under `base`.
    ///
    /// # Errors
    /// [`super::ClientError::Config`].
    pub fn new(base: &str, settings: &ClientSettings) -> Result<Self, super::ClientError> {
        let http = blocking_client(settings)?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }
}

impl TileSource for HttpTiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError> {
        let io = |e: &dyn std::fmt::Display| TileError::Io(format!("{path}: {e}"));
        // What the layout allows for this file, whatever the settings' answer limit: a log of
        // large entries stays readable, and nothing larger than such a log holds is read.
        let limit = u64::try_from(crate::tiles::largest_file(path)?).unwrap_or(u64::MAX);
        let response = self
            .http
            .get(format!("{}/{path}", self.base))
            .send()
            .map_err(|e| io(&e))?;
        match response.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            other => return Err(io(&format!("status {other}"))),
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response, limit.saturating_add(1)),
            &mut bytes,
        )
        .map_err(|e| io(&e))?;
        if bytes.len() as u64 > limit {
            return Err(io(&"too large"));
        }
        Ok(Some(bytes))
    }
}
