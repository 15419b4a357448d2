//! The bank's endpoints: its data behind the holder gate, approvals and revocations by the
//! customer the bank authenticated, and the witness that cosigns a broker's checkpoints.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/data` | the data of the token's scope and account, behind [`GateLayer`]; JSON of [`crate::Response`] (sealed unless the approval and policy allow plaintext) |
//! | `POST /v1/approvals` | the authenticated customer approves a consent request: JSON [`ApprovalForm`] in, `{"attestation": "<JWS>"}` out (201) |
//! | `POST /v1/revocations` | the authenticated customer withdraws an approval: `{"consent": "..."}` in, `{"instruction": "<JWS>", "delivered": bool}` out |
//! | `POST /add-checkpoint` | C2SP `tlog-witness`: cosignature lines, or 409 with the size last cosigned (`text/x.tlog.size`) |
//! | `GET /metrics` | Prometheus text |
//!
//! Plus the bank's side of the dashboard, under `/dashboard` (see [`super::dashboard`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::problem::Problem;
use super::{Admitted, BrokerClient, GateLayer, Metrics, blocking, metrics};
use crate::attestation::ApprovalStatement;
use crate::bank::{Bank, BankError};
use crate::consent::{RevocationReason, Revoker};
use crate::data::{DataError, DataHolder, serve};
use crate::ids::{ConsentId, PlatformId, SubjectId};
use crate::sets::{AccountSet, PlaintextUses, PurposeSet, ScopeSet};
use crate::store::{LedgerRead, Store};
use crate::witness::{Witness, WitnessError};

/// Who the person making a request is, as the party's own login established (a session cookie,
/// an OAuth token of the bank's own identity provider): the approval and revocation endpoints
/// and the dashboards act only for the subject this returns. Implement it on the login you
/// already have; [`super::dashboard::SessionCookies`] is one.
pub trait SubjectAuthenticator: Send + Sync + 'static {
    /// The authenticated subject, or `None` (the request is then refused with 401).
    fn authenticate(&self, headers: &HeaderMap) -> Option<SubjectId>;
}

/// What the customer approves at the bank (the request's terms, or fewer): an
/// [`ApprovalStatement`] without the subject, which is the customer the bank authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalForm {
    /// The consent request approved.
    pub consent: ConsentId,
    /// The platform that asked.
    pub platform: PlatformId,
    /// Approved scopes.
    pub scopes: ScopeSet,
    /// Approved purposes.
    pub purposes: PurposeSet,
    /// Approved accounts.
    pub accounts: AccountSet,
    /// Until when.
    #[serde(with = "time::serde::rfc3339")]
    pub consent_expires_at: OffsetDateTime,
    /// Unattended accesses a day (0: none).
    pub unattended_daily_limit: u32,
    /// Thumbprints of the customer's registered device keys to seal responses to.
    pub devices: Vec<String>,
    /// Uses agreed to receive unsealed.
    #[serde(default)]
    pub plaintext: PlaintextUses,
}

/// The bank's endpoints, ready to serve: build with [`BankEndpoints::new`], then
/// [`BankEndpoints::router`].
pub struct BankEndpoints<S, H> {
    bank: Arc<Bank<S>>,
    accounts: Arc<H>,
    origin: String,
    authenticator: Arc<dyn SubjectAuthenticator>,
    witness: Option<Arc<Witness>>,
    broker: Option<BrokerClient>,
    metrics: Metrics,
    /// The key of the dashboard's form tokens (`None`: no randomness to make one; forms refuse).
    csrf: Option<[u8; 32]>,
}

impl<S, H> std::fmt::Debug for BankEndpoints<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankEndpoints")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl<S, H> Clone for BankEndpoints<S, H> {
    fn clone(&self) -> Self {
        Self {
            bank: Arc::clone(&self.bank),
            accounts: Arc::clone(&self.accounts),
            origin: self.origin.clone(),
            authenticator: Arc::clone(&self.authenticator),
            witness: self.witness.clone(),
            broker: self.broker.clone(),
            metrics: self.metrics.clone(),
            csrf: self.csrf,
        }
    }
}

impl<S, H> BankEndpoints<S, H>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    /// The endpoints of `bank`, with `accounts` its account system, `origin` the URL clients use
    /// to reach it (`https://api.bank.example`), and `authenticator` the bank's login.
    pub fn new(
        bank: Arc<Bank<S>>,
        accounts: Arc<H>,
        origin: &str,
        authenticator: Arc<dyn SubjectAuthenticator>,
    ) -> Self {
        Self {
            bank,
            accounts,
            origin: origin.trim_end_matches('/').to_owned(),
            authenticator,
            witness: None,
            broker: None,
            metrics: Metrics::new(),
            csrf: {
                let mut secret = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                    .ok()
                    .map(|()| secret)
            },
        }
    }

    /// Keys the dashboard's form tokens with `secret` (32 random bytes the bank keeps), so that
    /// several processes behind one name accept each other's forms. By default each process
    /// draws its own.
    #[must_use]
    pub fn csrf_secret(mut self, secret: &[u8; 32]) -> Self {
        self.csrf = Some(*secret);
        self
    }

    /// Also serve `POST /add-checkpoint` as this witness.
    #[must_use]
    pub fn witness(mut self, witness: Arc<Witness>) -> Self {
        self.witness = Some(witness);
        self
    }

    /// Deliver each revocation's signed instruction to the broker at once (it is returned to
    /// the caller either way).
    #[must_use]
    pub fn deliver_to(mut self, broker: BrokerClient) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Count into `metrics` (to share one `/metrics` between several routers).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The bank this serves.
    pub fn bank(&self) -> &Arc<Bank<S>> {
        &self.bank
    }

    /// The customer the bank's login says made the request, and its JSON body.
    fn customer_and<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(SubjectId, T), Problem> {
        let customer = self
            .authenticator
            .authenticate(headers)
            .ok_or_else(unauthorised)?;
        Ok((customer, json_body(headers, body)?))
    }

    /// The form tokens' key.
    pub(crate) fn csrf_key(&self) -> Option<[u8; 32]> {
        self.csrf
    }

    /// The authenticator.
    pub(crate) fn authenticator(&self) -> &Arc<dyn SubjectAuthenticator> {
        &self.authenticator
    }

    /// The router: every endpoint of the module's table, the bank's dashboard under
    /// `/dashboard`, bodies bounded to [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES), every request traced and counted.
    ///
    /// # Errors
    /// [`super::gate::OriginError`] when the origin is not an absolute http(s) URL.
    pub fn router(self) -> Result<Router, super::gate::OriginError> {
        let gate = GateLayer::new(
            Arc::clone(&self.bank),
            Arc::clone(&self.accounts),
            &self.origin,
        )?
        .with_metrics(self.metrics.clone());
        let data = Router::new()
            .route("/v1/data", get(data::<S, H>).route_layer(gate))
            .with_state(self.clone());
        let mut router = Router::new()
            .route("/v1/approvals", post(approve::<S, H>))
            .route("/v1/revocations", post(revoke::<S, H>));
        if self.witness.is_some() {
            router = router.route("/add-checkpoint", post(add_checkpoint::<S, H>));
        }
        let router = router
            .with_state(self.clone())
            .merge(data)
            .merge(super::dashboard::bank_routes(self.clone()))
            .route(
                "/metrics",
                get(metrics::expose).with_state(self.metrics.clone()),
            );
        Ok(super::bounded(router, self.metrics.clone()))
    }
}

/// The problem of a bank call that failed.
pub(crate) fn bank_problem(error: &BankError) -> Problem {
    if error.is_retryable() {
        return Problem::unavailable("the bank's ledger is unavailable; nothing was changed");
    }
    if matches!(
        error,
        BankError::Store(_) | BankError::Provider(_) | BankError::Key(_)
    ) {
        tracing::error!(error = %error, "bank call failed");
        return Problem::internal("the bank's ledger or keys failed; nothing was changed");
    }
    let code = match error {
        BankError::NotLinked => "bank/not-linked",
        BankError::NothingToRevoke(_) => "bank/nothing-to-revoke",
        BankError::ConsentOfAnother(_) => "bank/consent-of-another",
        BankError::Attestation(_) | BankError::OutsidePolicy(_) | BankError::NoPolicy => {
            "bank/outside-policy"
        }
        _ => "bank/refused",
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        "Refused by the bank",
    )
    .detail(error.to_string())
}

fn unauthorised() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Sign in at the bank first",
    )
}

/// `GET /v1/data`: the admitted access's data, delivered as the journal recorded.
async fn data<S, H>(
    State(endpoints): State<BankEndpoints<S, H>>,
    Admitted(admission): Admitted,
) -> Result<HttpResponse, Problem>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let served = blocking(move || {
        let data = serve(endpoints.accounts.as_ref(), admission.access())?;
        Ok::<_, DataError<H::Error>>(endpoints.bank.deliver(&admission, data))
    })
    .await?;
    // The gate admitted and journalled the access (its token is spent): a failure from here is
    // a 500, never a 503, which would tell the client nothing was done and invite a retry.
    let undelivered = |why: &str| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bank/not-delivered",
            "The access was journalled but its data could not be delivered",
        )
        .detail(format!("{why}; ask again with a new token"))
    };
    let response = match served {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => return Err(undelivered("the response could not be sealed")),
        Err(DataError::Holder(_)) => return Err(undelivered("the bank's account system failed")),
        Err(error) => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "bank/no-data",
                "The bank does not serve this data",
            )
            .detail(error.to_string()));
        }
    };
    let body = serde_json::to_vec(&response)
        .map_err(|_| Problem::internal("the response could not be encoded"))?;
    let mut answer = (StatusCode::OK, body).into_response();
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}

/// The JSON body of a request, refused with a typed 4xx: wrong content type (415), unreadable
/// (400), too large (413).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Problem> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Send application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(crate::privacy::unquoted(&format!(
            "the body is not a valid request: {e}"
        )))
    })
}

#[derive(Serialize)]
struct Attested {
    attestation: String,
}

/// `POST /v1/approvals`.
async fn approve<S, H>(
    State(endpoints): State<BankEndpoints<S, H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<HttpResponse, Problem>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let (customer, form): (_, ApprovalForm) = endpoints.customer_and(&headers, &body)?;
    let statement = ApprovalStatement {
        consent: form.consent,
        subject: customer,
        platform: form.platform,
        scopes: form.scopes,
        purposes: form.purposes,
        accounts: form.accounts,
        consent_expires_at: form.consent_expires_at,
        unattended_daily_limit: form.unattended_daily_limit,
        devices: form.devices,
        plaintext: form.plaintext,
    };
    let attested = blocking(move || endpoints.bank.attest(&statement)).await?;
    match attested {
        Ok(attestation) => {
            tracing::info!("bank.attest");
            Ok((StatusCode::CREATED, Json(Attested { attestation })).into_response())
        }
        Err(error) => Err(bank_problem(&error)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeForm {
    consent: ConsentId,
}

#[derive(Serialize)]
struct Revoked {
    instruction: String,
    delivered: bool,
}

/// `POST /v1/revocations`.
async fn revoke<S, H>(
    State(endpoints): State<BankEndpoints<S, H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<HttpResponse, Problem>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let (customer, form): (_, RevokeForm) = endpoints.customer_and(&headers, &body)?;
    let (instruction, delivered) = revoke_and_deliver(&endpoints, customer, form.consent).await?;
    Ok(Json(Revoked {
        instruction,
        delivered,
    })
    .into_response())
}

/// Withdraws the customer's approval of `consent` at the bank (the gate refuses from this
/// moment) and delivers the signed instruction to the broker when one is configured.
pub(crate) async fn revoke_and_deliver<S, H>(
    endpoints: &BankEndpoints<S, H>,
    customer: SubjectId,
    consent: ConsentId,
) -> Result<(String, bool), Problem>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let bank = Arc::clone(&endpoints.bank);
    let instruction = blocking(move || {
        bank.revoke(
            &customer,
            &consent,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
    })
    .await?
    .map_err(|e| bank_problem(&e))?;
    tracing::info!("bank.revoke");
    let delivered = match &endpoints.broker {
        Some(broker) => match broker.send_instruction(&instruction).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(error = %error, "the instruction did not reach the broker");
                false
            }
        },
        None => false,
    };
    Ok((instruction, delivered))
}

/// `POST /add-checkpoint` (C2SP `tlog-witness`).
async fn add_checkpoint<S, H>(
    State(endpoints): State<BankEndpoints<S, H>>,
    body: axum::body::Bytes,
) -> HttpResponse {
    let Some(witness) = endpoints.witness.clone() else {
        return Problem::not_found().into_response();
    };
    witness_call(witness, body).await
}

/// A witness on its own (a party that is neither platform nor bank): `POST /add-checkpoint`
/// and `GET /metrics`, bodies bounded, every request traced and counted.
pub fn witness_router(witness: Arc<Witness>, metrics: Metrics) -> Router {
    let router = Router::new()
        .route(
            "/add-checkpoint",
            post(move |body: axum::body::Bytes| witness_call(Arc::clone(&witness), body)),
        )
        .route("/metrics", get(metrics::expose).with_state(metrics.clone()));
    super::bounded(router, metrics)
}

/// The most pages one [`sync_feed`] follows (each up to `MAX_FEED_REVOCATIONS` revocations).
pub const MAX_FEED_PAGES: usize = 64;

/// Whether a signed feed says it is complete (its payload's `complete`, absent: complete).
fn page_is_complete(feed: &str) -> bool {
    use base64::Engine as _;
    feed.split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .is_none_or(|claims| claims.get("complete") != Some(&serde_json::Value::Bool(false)))
}

/// Why the bank's view of the platform's revocations could not be brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedSyncError {
    /// The broker's feed could not be fetched.
    #[error("fetching the feed: {0}")]
    Fetch(#[from] super::ClientError),
    /// The bank refused the feed (a bad signature, another holder's, a gap) or its ledger failed.
    #[error("applying the feed: {0}")]
    Apply(#[from] BankError),
    /// The blocking call did not complete (the runtime is shutting down).
    #[error("the call did not complete")]
    Interrupted,
}

/// Brings the bank's view of the platform's revocations up to date: fetches the broker's signed
/// feed from where the bank's ledger left off and applies it (the bank checks the broker's
/// signature, the holder, the positions). Call it on a timer shorter than the gate's
/// `feed_staleness`: past that, the gate refuses every access (fail closed).
///
/// # Errors
/// [`FeedSyncError`].
pub async fn sync_feed<S>(
    bank: &Arc<Bank<S>>,
    broker: &BrokerClient,
) -> Result<crate::store::FeedState, FeedSyncError>
where
    S: Store + LedgerRead + Send + Sync + 'static,
{
    // Page after page (a bank far behind gets the feed in pages) until one is complete.
    let mut state = None;
    for _ in 0..MAX_FEED_PAGES {
        let reader = Arc::clone(bank);
        let after = blocking(move || reader.ledger().feed_state())
            .await
            .map_err(|_| FeedSyncError::Interrupted)?
            .map_err(BankError::Store)?
            .map_or(0, |state| state.position);
        let feed = broker.revocation_feed(bank.id(), after).await?;
        // Whether more pages are due, read before the bank checks the feed (it checks it all
        // when applying; a feed that lies about this only makes the bank ask again or stop).
        let more = !page_is_complete(&feed);
        let applier = Arc::clone(bank);
        let applied = blocking(move || applier.apply_revocation_feed(&feed))
            .await
            .map_err(|_| FeedSyncError::Interrupted)??;
        state = Some(applied);
        if !more {
            break;
        }
    }
    let state = state.ok_or(FeedSyncError::Interrupted)?;
    tracing::debug!(position = state.position, "bank.sync_feed");
    Ok(state)
}

async fn witness_call(witness: Arc<Witness>, body: axum::body::Bytes) -> HttpResponse {
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return witness_answer(Err(WitnessError::BadRequest("not UTF-8".into())));
    };
    match blocking(move || witness.add_checkpoint(&body)).await {
        Ok(answer) => witness_answer(answer),
        Err(problem) => problem.into_response(),
    }
}

/// The witness's answer as C2SP `tlog-witness` specifies it.
pub(crate) fn witness_answer(answer: Result<String, WitnessError>) -> HttpResponse {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        // C2SP fixes these bodies (a 409 carries the size last cosigned): never rewritten.
        response.extensions_mut().insert(super::metrics::Verbatim);
        response
    };
    match answer {
        Ok(lines) => {
            tracing::info!(outcome = "cosigned", "witness.add_checkpoint");
            text(StatusCode::OK, "text/plain; charset=utf-8", lines)
        }
        Err(WitnessError::Conflict { size }) => {
            tracing::info!(outcome = "conflict", size, "witness.add_checkpoint");
            text(
                StatusCode::CONFLICT,
                "text/x.tlog.size",
                format!("{size}\n"),
            )
        }
        Err(error) => {
            tracing::info!(
                outcome = "refused",
                status = error.status(),
                "witness.add_checkpoint"
            );
            let status =
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, "text/plain; charset=utf-8", format!("{error}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::page_is_complete;
    use base64::Engine as _;

    fn feed(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64("{}"), b64(claims))
    }

    #[test]
    fn only_a_page_that_says_so_is_incomplete() {
        assert!(!page_is_complete(&feed(r#"{"complete":false}"#)));
        assert!(page_is_complete(&feed(r#"{"complete":true}"#)));
        assert!(page_is_complete(&feed(r#"{"position":3}"#)));
        // Unreadable: treated as the last page (the bank then checks it and refuses it).
        assert!(page_is_complete("not a feed"));
    }
}
