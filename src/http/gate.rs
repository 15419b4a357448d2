//! The bank's holder gate as a tower layer: put it in front of any handler of the bank's API.
//!
//! ```
//! # use std::sync::Arc;
//! # use consent_broker::http::{Admitted, GateLayer};
//! # fn routes<S, H>(bank: Arc<consent_broker::Bank<S>>, accounts: Arc<H>) -> axum::Router
//! # where
//! #     S: consent_broker::Store + consent_broker::LedgerRead + Send + Sync + 'static,
//! #     H: consent_broker::DataHolder + Send + Sync + 'static,
//! #     H::Error: Send + 'static,
//! # {
//! let gate = GateLayer::new(bank, accounts, "https://api.first-bank.example").unwrap();
//! axum::Router::new()
//!     .route("/v1/data", axum::routing::get(|Admitted(admission): Admitted| async move {
//!         // Only a request the gate admitted, and journalled, reaches this line.
//!         format!("{} of {}", admission.access().scope(), admission.journal_seq())
//!     }))
//!     .route_layer(gate)
//! # }
//! ```
//!
//! The layer reads `Authorization: DPoP <token>` and the `DPoP` proof header (RFC 9449), checks
//! the proof against the request's method and the URL the client used (the configured public
//! origin plus the path; query and fragment are not part of it), and runs [`Bank::check`] on a
//! blocking thread: every check of the holder gate, against the bank's own ledger, with the
//! decision journalled before anything is served. An admitted request reaches the handler with
//! its [`Admission`] in the request's extensions, taken by the [`Admitted`] extractor; a refused
//! one is answered by the layer:
//!
//! | refusal | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no `Authorization` | 401 | `DPoP algs="EdDSA"` (no error: RFC 6750 §3.1) |
//! | another scheme, unreadable or repeated headers | 401 / 400 | `DPoP error="invalid_request"` / `invalid_token` |
//! | the token, its binding, replay, the approval it names, expiry, revocations | 401 | `DPoP error="invalid_token"` |
//! | the proof (missing, malformed, for another request or key, replayed, stale) | 401 | `DPoP error="invalid_dpop_proof"` |
//! | scope, purpose, account, policy, owner, unattended not approved | 403 | `DPoP error="insufficient_scope"` |
//! | no registered device to seal to | 403 | none |
//! | today's limit or ceiling used | 429 + `Retry-After` (next UTC midnight) | none |
//! | revocation feed stale; ledger, account system or sealing failed; contention | 503 + `Retry-After` | none |
//!
//! Every refusal's body is an RFC 9457 problem document of type
//! `urn:consent-broker:problem:gate/<reason>` carrying the typed [`GateRefusal`] and the journal
//! entry that recorded it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::problem::{Problem, quoted};
use super::{Metrics, blocking, metrics::refusal_code};
use crate::bank::{Admission, Bank, GateError, GateRequest};
use crate::data::DataHolder;
use crate::dpop::{HttpRequest, MAX_PROOF_LEN};
use crate::refusal::GateRefusal;
use crate::store::{LedgerRead, Store};
use crate::token::MAX_TOKEN_LEN;

/// The challenge of a request without credentials: the scheme and the proof algorithms accepted.
const CHALLENGE: &str = "DPoP algs=\"EdDSA\"";

/// An access the gate admitted and journalled, for the handler behind a [`GateLayer`]. Without
/// the layer in front, the extractor refuses (500): a handler is never reached ungated.
#[derive(Debug, Clone)]
pub struct Admitted(pub Arc<Admission>);

impl<S: Send + Sync> FromRequestParts<S> for Admitted {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Admitted>()
            .cloned()
            .ok_or_else(|| Problem::internal("the gate is not in front of this handler"))
    }
}

struct Shared<S, H> {
    bank: Arc<Bank<S>>,
    accounts: Arc<H>,
    origin: String,
    metrics: Metrics,
}

/// The holder gate as a tower [`Layer`]: see the [module documentation](self).
pub struct GateLayer<S, H> {
    shared: Arc<Shared<S, H>>,
}

impl<S, H> Clone for GateLayer<S, H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, H> std::fmt::Debug for GateLayer<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateLayer")
            .field("origin", &self.shared.origin)
            .finish_non_exhaustive()
    }
}

/// Why a [`GateLayer`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the public origin must be an absolute http(s) URL without a path: {0}")]
pub struct OriginError(String);

impl<S, H> GateLayer<S, H> {
    /// The gate of `bank`, asking `accounts` (the bank's account system) who owns an account.
    /// `origin` is the scheme, host and port clients use to reach this API
    /// (`https://api.bank.example`): the proofs are checked against it, not against what a
    /// proxy in front forwards.
    ///
    /// # Errors
    /// [`OriginError`] when `origin` is not `http(s)://host[:port]`.
    pub fn new(bank: Arc<Bank<S>>, accounts: Arc<H>, origin: &str) -> Result<Self, OriginError> {
        let origin = origin.trim_end_matches('/');
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match rest {
            Some(authority)
                if !authority.is_empty()
                    && !authority.contains(['/', '?', '#', '@'])
                    && crate::dpop::normalise_htu(&format!("{origin}/")).is_some() => {}
            _ => return Err(OriginError(origin.to_owned())),
        }
        Ok(Self {
            shared: Arc::new(Shared {
                bank,
                accounts,
                origin: origin.to_owned(),
                metrics: Metrics::new(),
            }),
        })
    }

    /// Counts the gate's outcomes in `metrics` (shared with the server's `/metrics`).
    #[must_use]
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        let shared = match Arc::try_unwrap(self.shared) {
            Ok(mut shared) => {
                shared.metrics = metrics;
                shared
            }
            Err(shared) => Shared {
                bank: Arc::clone(&shared.bank),
                accounts: Arc::clone(&shared.accounts),
                origin: shared.origin.clone(),
                metrics,
            },
        };
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl<Inner, S, H> Layer<Inner> for GateLayer<S, H> {
    type Service = Gated<Inner, S, H>;

    fn layer(&self, inner: Inner) -> Self::Service {
        Gated {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A service behind the gate (made by [`GateLayer`]).
pub struct Gated<Inner, S, H> {
    inner: Inner,
    shared: Arc<Shared<S, H>>,
}

impl<Inner: Clone, S, H> Clone for Gated<Inner, S, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Inner, S, H> std::fmt::Debug for Gated<Inner, S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated").finish_non_exhaustive()
    }
}

impl<Inner, S, H> Service<Request> for Gated<Inner, S, H>
where
    Inner: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    Inner::Future: Send + 'static,
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was driven to readiness serves this call; a fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let method = request.method().as_str().to_owned();
            // The path the client used: inside `Router::nest` axum strips the prefix from the
            // URI, and keeps the original.
            let path = request
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .map_or_else(
                    || request.uri().path().to_owned(),
                    |o| o.0.path().to_owned(),
                );
            let url = format!("{}{path}", shared.origin);
            match admit(&shared, request.headers(), method, url).await {
                Ok(admission) => {
                    request
                        .extensions_mut()
                        .insert(Admitted(Arc::new(admission)));
                    inner.call(request).await
                }
                Err(problem) => Ok(problem.into_response()),
            }
        })
    }
}

/// The credentials of a request, read from its headers.
struct Credentials {
    token: String,
    proof: String,
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, Problem> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = authorization.next() else {
        return Err(unauthenticated());
    };
    if authorization.next().is_some() {
        return Err(invalid_request("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid_request("the Authorization header is not visible ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("DPoP") {
        // A bearer presentation of a DPoP-bound token, or another scheme (RFC 9449 §7.2).
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "gate/wrong_scheme",
            "Use the DPoP authorization scheme",
        )
        .challenge(format!(
            "{CHALLENGE}, error=\"invalid_token\", error_description={}",
            quoted("the access token is sender-constrained: present it with the DPoP scheme")
        )));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "gate/token",
            "The access token was refused",
        )
        .challenge(format!("{CHALLENGE}, error=\"invalid_token\"")));
    }
    let mut proofs = headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => String::new(),
        (Some(proof), None) => proof
            .to_str()
            .map_err(|_| invalid_proof("the DPoP header is not visible ASCII"))?
            .to_owned(),
        (Some(_), Some(_)) => return Err(invalid_proof("more than one DPoP header")),
    };
    if proof.len() > MAX_PROOF_LEN {
        return Err(invalid_proof("the DPoP proof is too long"));
    }
    Ok(Credentials {
        token: token.to_owned(),
        proof,
    })
}

fn unauthenticated() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "gate/unauthenticated",
        "An access token is required",
    )
    .challenge(CHALLENGE.to_owned())
}

fn invalid_request(detail: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "gate/invalid_request",
        "The request's credentials cannot be read",
    )
    .detail(detail)
    .challenge(format!("{CHALLENGE}, error=\"invalid_request\""))
}

fn invalid_proof(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "gate/proof",
        "The proof of possession was refused",
    )
    .detail(detail)
    .challenge(format!(
        "{CHALLENGE}, error=\"invalid_dpop_proof\", error_description={}",
        quoted(detail)
    ))
}

async fn admit<S, H>(
    shared: &Arc<Shared<S, H>>,
    headers: &HeaderMap,
    method: String,
    url: String,
) -> Result<Admission, Problem>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let Credentials { token, proof } = match credentials(headers) {
        Ok(credentials) => credentials,
        Err(problem) => {
            tracing::info!(
                outcome = "refused",
                reason = problem.details().code(),
                "gate"
            );
            shared.metrics.record_gate("refused", None);
            return Err(problem);
        }
    };
    let task = Arc::clone(shared);
    let decided = blocking(move || {
        let request = GateRequest {
            token: &token,
            proof: &proof,
            http: HttpRequest {
                method: &method,
                url: &url,
            },
        };
        let decided = task.bank.check(&request, task.accounts.as_ref());
        (decided, task.bank.now())
    })
    .await?;
    match decided {
        (Ok(admission), _) => {
            tracing::info!(
                outcome = "served",
                journal_seq = admission.journal_seq(),
                "gate"
            );
            shared.metrics.record_gate("served", None);
            Ok(admission)
        }
        (
            Err(GateError::Refused {
                refusal,
                journal_seq,
            }),
            now,
        ) => {
            tracing::info!(
                outcome = "refused",
                reason = refusal_code(&refusal),
                journal_seq,
                "gate"
            );
            shared.metrics.record_gate("refused", Some(&refusal));
            Err(refusal_problem(refusal, journal_seq, now))
        }
        (Err(error), _) => {
            let what = match &error {
                GateError::Store(_) => "the bank's ledger failed",
                GateError::AccountSystem(_) => "the bank's account system failed",
                GateError::Contention(_) => "too many concurrent accesses to one approval",
                GateError::Seal(_) => "the response could not be sealed",
                _ => "the gate failed",
            };
            tracing::warn!(outcome = "failed", what, "gate");
            shared.metrics.record_gate("failed", None);
            Err(Problem::unavailable(format!("{what}; nothing was served")))
        }
    }
}

/// The problem document, status and challenge of a refusal (see the module's table).
pub(crate) fn refusal_problem(
    refusal: GateRefusal,
    journal_seq: Option<u64>,
    now: time::OffsetDateTime,
) -> Problem {
    use GateRefusal as R;
    let code = format!("gate/{}", refusal_code(&refusal));
    let description = quoted(&refusal.to_string());
    let detail = refusal.to_string();
    let refused = |status: StatusCode| {
        Problem::new(status, &code, "Refused by the bank's gate").detail(detail.clone())
    };
    let problem = match &refusal {
        R::Proof(_) => refused(StatusCode::UNAUTHORIZED).challenge(format!(
            "{CHALLENGE}, error=\"invalid_dpop_proof\", error_description={description}"
        )),
        R::Token(_)
        | R::NotSenderConstrained
        | R::TokenReplayed
        | R::UnknownAttestation
        | R::AttestationMismatch { .. }
        | R::Superseded
        | R::Expired { .. }
        | R::RevokedAtBank { .. }
        | R::RevokedAtPlatform => refused(StatusCode::UNAUTHORIZED).challenge(format!(
            "{CHALLENGE}, error=\"invalid_token\", error_description={description}"
        )),
        R::ScopeNotAttested(_)
        | R::PurposeNotAttested(_)
        | R::AccountNotAttested
        | R::PolicyForbidsScope(_)
        | R::AccountNotSubjects
        | R::UnattendedNotApproved => refused(StatusCode::FORBIDDEN).challenge(format!(
            "{CHALLENGE}, error=\"insufficient_scope\", error_description={description}"
        )),
        R::NoDeviceToSealTo => refused(StatusCode::FORBIDDEN),
        R::UnattendedLimitReached { .. } | R::PresentCeilingReached { .. } => {
            let midnight = now
                .date()
                .next_day()
                .map_or(now, |day| day.midnight().assume_utc());
            let wait = (midnight - now).whole_seconds().max(1);
            refused(StatusCode::TOO_MANY_REQUESTS).retry_after(wait.unsigned_abs())
        }
        R::RevocationFeedStale { .. } => refused(StatusCode::SERVICE_UNAVAILABLE).retry_after(5),
    };
    problem.refusal(refusal, journal_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::Revoker;
    use crate::dpop::DpopError;
    use crate::token::TokenError;
    use crate::vocab::{Purpose, Scope};
    use time::macros::datetime;

    /// Every refusal of the gate, with the status and `WWW-Authenticate` error the module's
    /// table gives it (`None`: no challenge).
    fn table() -> Vec<(GateRefusal, u16, Option<&'static str>)> {
        let at = datetime!(2026-11-21 09:00 UTC);
        vec![
            (
                GateRefusal::Token(TokenError::BadSignature),
                401,
                Some("invalid_token"),
            ),
            (
                GateRefusal::NotSenderConstrained,
                401,
                Some("invalid_token"),
            ),
            (
                GateRefusal::Proof(DpopError::Missing),
                401,
                Some("invalid_dpop_proof"),
            ),
            (GateRefusal::TokenReplayed, 401, Some("invalid_token")),
            (GateRefusal::UnknownAttestation, 401, Some("invalid_token")),
            (
                GateRefusal::AttestationMismatch {
                    claim: "sub".into(),
                },
                401,
                Some("invalid_token"),
            ),
            (GateRefusal::Superseded, 401, Some("invalid_token")),
            (
                GateRefusal::ScopeNotAttested(Scope::Balance),
                403,
                Some("insufficient_scope"),
            ),
            (
                GateRefusal::PurposeNotAttested(Purpose::CustomerService),
                403,
                Some("insufficient_scope"),
            ),
            (
                GateRefusal::AccountNotAttested,
                403,
                Some("insufficient_scope"),
            ),
            (GateRefusal::Expired { at }, 401, Some("invalid_token")),
            (
                GateRefusal::RevokedAtBank {
                    by: Revoker::Subject,
                },
                401,
                Some("invalid_token"),
            ),
            (GateRefusal::RevokedAtPlatform, 401, Some("invalid_token")),
            (
                GateRefusal::RevocationFeedStale { generated_at: None },
                503,
                None,
            ),
            (
                GateRefusal::PolicyForbidsScope(Scope::Balance),
                403,
                Some("insufficient_scope"),
            ),
            (
                GateRefusal::AccountNotSubjects,
                403,
                Some("insufficient_scope"),
            ),
            (
                GateRefusal::UnattendedNotApproved,
                403,
                Some("insufficient_scope"),
            ),
            (GateRefusal::UnattendedLimitReached { limit: 4 }, 429, None),
            (GateRefusal::NoDeviceToSealTo, 403, None),
            (
                GateRefusal::PresentCeilingReached { ceiling: 50 },
                429,
                None,
            ),
        ]
    }

    #[test]
    fn every_refusal_has_its_status_type_and_challenge() {
        let now = datetime!(2026-11-21 09:00 UTC);
        for (refusal, status, error) in table() {
            let code = refusal_code(&refusal);
            let problem = refusal_problem(refusal.clone(), Some(7), now);
            assert_eq!(problem.status().as_u16(), status, "{refusal:?}");
            let details = problem.details();
            assert_eq!(details.code(), Some(format!("gate/{code}").as_str()));
            assert_eq!(details.refusal.as_ref(), Some(&refusal));
            assert_eq!(details.journal_seq, Some(7));
            match error {
                Some(error) => {
                    let challenge = problem.www_authenticate().unwrap_or_default();
                    assert!(challenge.starts_with(CHALLENGE), "{challenge}");
                    assert!(
                        challenge.contains(&format!("error=\"{error}\"")),
                        "{challenge}"
                    );
                }
                None => assert_eq!(problem.www_authenticate(), None, "{refusal:?}"),
            }
            let response = problem.into_response();
            if status == 429 {
                // Until the next UTC midnight: 15 hours from 09:00.
                assert_eq!(response.headers()[header::RETRY_AFTER], "54000");
            }
            if status == 503 {
                assert!(response.headers().contains_key(header::RETRY_AFTER));
            }
        }
    }

    #[test]
    fn the_table_names_every_refusal_code_once() {
        let codes: std::collections::BTreeSet<_> =
            table().iter().map(|(r, ..)| refusal_code(r)).collect();
        assert_eq!(codes.len(), table().len());
        assert!(!codes.contains("other"));
    }
}
