//! The subject's dashboard, and the chat view that opens the bank's sealed responses in the page.
//!
//! Server-rendered HTML that works without JavaScript: a person signed in (by the party's own
//! login, a [`SubjectAuthenticator`]) sees each of their consents (who receives what, from which
//! accounts, why, until when, how often it was used and when last), its whole history with a
//! receipt per entry that anyone can verify against the log's key, and stops it with one
//! confirmed action (a form, protected against cross-site requests by a token bound to the
//! signed-in subject and by `SameSite=Strict` session cookies). Pages are labelled (one `h1`,
//! captioned tables with header cells, labelled controls, a skip link) and usable from the
//! keyboard (native links and buttons only, a visible focus ring).
//!
//! The platform serves [`Dashboard`]: `/dashboard` and, with [`Dashboard::chat`], `/chat`, where
//! the person asks for their balance; the platform's server fetches it from the bank with a
//! token and relays the sealed response, which the page opens with WebCrypto using the device
//! key only the person's browser holds (`js/open-sealed-response.mjs`): the platform's server
//! stores and relays ciphertext only. The bank serves the same view of its side under its own
//! `/dashboard` (see [`super::bank`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bank::{BankEndpoints, SubjectAuthenticator, revoke_and_deliver};
use super::broker::broker_problem;
use super::problem::Problem;
use super::{BankClient, ClientError, Metrics, blocking, metrics};
use crate::audit::{AuditEntry, AuditEvent};
use crate::broker::{Broker, ConsentView, TokenOutcome};
use crate::checkpoint::NoteVerifier;
use crate::clock::{Clock, SystemClock};
use crate::consent::{ConsentState, ConsentStatus, RevocationReason, Revoker};
use crate::data::DataHolder;
use crate::ids::{ConsentId, PlatformId, SubjectId};
use crate::policy::{AccessRequest, Presence};
use crate::sealing::Response as BankResponse;
use crate::store::{LedgerRead, LogRead, Store};
use crate::vocab::Scope;

/// The session cookie's name on plain-HTTP loopback (tests); over HTTPS it is
/// [`SECURE_SESSION_COOKIE`].
pub const SESSION_COOKIE: &str = "cb_session";

/// The session cookie's name over HTTPS: the `__Host-` prefix makes the browser accept it only
/// `Secure`, for this host alone and for the whole path, so a sibling domain cannot set one.
pub const SECURE_SESSION_COOKIE: &str = "__Host-cb_session";

/// How long a form's token stays valid: forms older than this must be reloaded.
pub const FORM_TOKEN_LIFETIME: time::Duration = time::Duration::hours(2);

/// Consents per page of the list.
pub const PAGE_SIZE: usize = 50;

/// Session cookies signed with HMAC-SHA-256: the party's login issues one
/// ([`SessionCookies::set_cookie`]) after it authenticated the person; the dashboard
/// authenticates with it. `HttpOnly`, `SameSite=Strict`, `Secure` (unless turned off for a
/// loopback test server), expiring.
pub struct SessionCookies {
    key: hmac::Key,
    secure: bool,
    lifetime: time::Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SessionCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookies")
            .field("secure", &self.secure)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl SessionCookies {
    /// Cookies signed with `secret` (32 random bytes kept by the party), lasting 30 minutes.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            secure: true,
            lifetime: time::Duration::minutes(30),
            clock: Arc::new(SystemClock),
        }
    }

    /// Without the `Secure` attribute: only for a test server on plain-HTTP loopback.
    #[must_use]
    pub fn insecure_for_loopback(mut self) -> Self {
        self.secure = false;
        self
    }

    /// Dates sessions by `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn mac(&self, payload: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, payload.as_bytes()))
    }

    /// The cookie's value for `subject`: `subject.expiry.mac` (the subject base64url-encoded).
    pub fn issue(&self, subject: &SubjectId) -> String {
        let expires = (self.clock.now() + self.lifetime).unix_timestamp();
        let payload = format!("{}.{expires}", URL_SAFE_NO_PAD.encode(subject.as_str()));
        let mac = self.mac(&payload);
        format!("{payload}.{mac}")
    }

    /// The cookie's name: [`SECURE_SESSION_COOKIE`], or [`SESSION_COOKIE`] on loopback.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// A `Set-Cookie` header value for `subject`.
    pub fn set_cookie(&self, subject: &SubjectId) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_name(),
            self.issue(subject),
            self.lifetime.whole_seconds(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The subject of a cookie value, if its MAC verifies and it has not expired.
    pub fn verify(&self, value: &str) -> Option<SubjectId> {
        let (payload, mac) = value.rsplit_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.key, payload.as_bytes(), &mac).ok()?;
        let (subject, expires) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        if self.clock.now().unix_timestamp() >= expires {
            return None;
        }
        let subject = String::from_utf8(URL_SAFE_NO_PAD.decode(subject).ok()?).ok()?;
        SubjectId::new(subject).ok()
    }
}

impl SubjectAuthenticator for SessionCookies {
    /// The subject of the request's one session cookie; none when there is none, more than one
    /// (a cookie planted beside the real one), or it does not verify.
    fn authenticate(&self, headers: &HeaderMap) -> Option<SubjectId> {
        let name = self.cookie_name();
        let mut sessions = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(cookie, _)| *cookie == name);
        match (sessions.next(), sessions.next()) {
            (Some((_, value)), None) => self.verify(value),
            _ => None,
        }
    }
}

/// Cross-site request tokens: `expiry.mac`, the MAC under the server's key over the signed-in
/// subject and the expiry ([`FORM_TOKEN_LIFETIME`] after the form was made).
#[derive(Clone)]
struct Csrf(Arc<hmac::Key>);

impl Csrf {
    fn new(secret: &[u8; 32]) -> Self {
        Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    fn token(&self, subject: &SubjectId, now: OffsetDateTime) -> String {
        let expires = (now + FORM_TOKEN_LIFETIME).unix_timestamp();
        let tag = hmac::sign(&self.0, format!("csrf\0{subject}\0{expires}").as_bytes());
        format!("{expires}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    fn check(&self, subject: &SubjectId, token: &str, now: OffsetDateTime) -> Result<(), Problem> {
        let (expires, tag) = token.split_once('.').ok_or_else(forbidden_form)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| forbidden_form())?;
        hmac::verify(
            &self.0,
            format!("csrf\0{subject}\0{expires}").as_bytes(),
            &tag,
        )
        .map_err(|_| forbidden_form())?;
        let expires: i64 = expires.parse().map_err(|_| forbidden_form())?;
        if now.unix_timestamp() >= expires {
            return Err(forbidden_form());
        }
        Ok(())
    }
}

fn forbidden_form() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "dashboard/form-token",
        "The form's token is missing or wrong; reload the page",
    )
}

/// The platform's dashboard (and chat view): see the [module documentation](self).
pub struct Dashboard<S> {
    broker: Arc<Broker<S>>,
    auth: Arc<dyn SubjectAuthenticator>,
    csrf: Csrf,
    chat: Option<Arc<Chat>>,
    metrics: Metrics,
}

impl<S> Clone for Dashboard<S> {
    fn clone(&self) -> Self {
        Self {
            broker: Arc::clone(&self.broker),
            auth: Arc::clone(&self.auth),
            csrf: self.csrf.clone(),
            chat: self.chat.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Dashboard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

/// What the chat view needs: who the platform is, the bank's data endpoint, and the client
/// that calls it.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// The platform (the tokens' `client_id`).
    pub platform: PlatformId,
    /// The bank's data endpoint (`https://api.bank.example/v1/data`).
    pub bank_data_url: String,
    /// The client, with the platform's DPoP key.
    pub client: BankClient,
    /// Where the relayed (sealed) responses are kept, one JSON line each; `None`: in memory.
    pub relay_file: Option<PathBuf>,
}

#[derive(Debug)]
struct Chat {
    settings: ChatSettings,
    /// The sealed responses relayed to each subject, as relayed.
    relayed: Mutex<HashMap<SubjectId, Vec<String>>>,
}

impl<S: Store + Send + Sync + 'static> Dashboard<S> {
    /// The dashboard of `broker`'s consents, for the subjects `auth` signs in; `csrf_secret`
    /// (32 random bytes) keys the forms' tokens.
    pub fn new(
        broker: Arc<Broker<S>>,
        auth: Arc<dyn SubjectAuthenticator>,
        csrf_secret: &[u8; 32],
    ) -> Self {
        Self {
            broker,
            auth,
            csrf: Csrf::new(csrf_secret),
            chat: None,
            metrics: Metrics::new(),
        }
    }

    /// Also serve the chat view at `/chat`.
    #[must_use]
    pub fn chat(mut self, settings: ChatSettings) -> Self {
        self.chat = Some(Arc::new(Chat {
            settings,
            relayed: Mutex::new(HashMap::new()),
        }));
        self
    }

    /// Count into `metrics` (decisions of the chat's requests, requests and latencies).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The routes, under `/dashboard` (and `/chat`).
    pub fn router(self) -> Router {
        let mut router = Router::new()
            .route("/dashboard", get(list::<S>))
            .route("/dashboard/consents/{id}", get(detail::<S>))
            .route(
                "/dashboard/consents/{id}/revoke",
                get(confirm::<S>).post(revoke::<S>),
            )
            .route("/dashboard/consents/{id}/receipts/{seq}", get(receipt::<S>))
            .route(
                "/dashboard/consents/{id}/receipts/{seq}/json",
                get(receipt_json::<S>),
            )
            .route("/dashboard/style.css", get(style));
        if self.chat.is_some() {
            router = router
                .route("/chat", get(chat_page::<S>))
                .route("/chat/ask", axum::routing::post(chat_ask::<S>))
                .route("/chat/messages", get(chat_messages::<S>))
                .route("/chat/chat.mjs", get(chat_script))
                .route("/chat/open-sealed-response.mjs", get(opener_script));
        }
        super::bounded(router.with_state(self.clone()), self.metrics.clone())
    }

    /// The consent, if it is this subject's (otherwise 404: nothing says it exists).
    async fn own_consent(&self, subject: &SubjectId, id: String) -> Result<ConsentView, Problem> {
        let id = ConsentId::new(id).map_err(|_| Problem::not_found())?;
        let broker = Arc::clone(&self.broker);
        let view = blocking(move || broker.consent(&id)).await?;
        match view {
            Ok(view) if view.consent.request().subject() == subject => Ok(view),
            Ok(_) | Err(crate::Error::UnknownConsent(_)) => Err(Problem::not_found()),
            Err(error) => Err(broker_problem(&error)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn date(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn list_of<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| esc(&i.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A whole page: the head (title, stylesheet), a skip link, a header, the main content.
fn page(title: &str, who: Option<&str>, main: &str) -> Response {
    let signed_in = who.map_or_else(String::new, |w| {
        format!(
            "<p class=\"who\">Signed in as <strong>{}</strong></p>",
            esc(w)
        )
    });
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · Your data sharing</title>\n\
         <link rel=\"stylesheet\" href=\"/dashboard/style.css\">\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\n\
         <header><p class=\"brand\"><a href=\"/dashboard\">Your data sharing</a></p>{signed_in}</header>\n\
         <main id=\"main\" tabindex=\"-1\">\n<h1>{title}</h1>\n{main}\n</main>\n</body>\n</html>\n",
        title = esc(title)
    );
    html_response(StatusCode::OK, html)
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn sign_in_page() -> Response {
    let mut response = page(
        "Sign in",
        None,
        "<p>Sign in with your account to see and stop what you share.</p>",
    );
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

fn problem_page(problem: &Problem) -> Response {
    let details = problem.details();
    let mut response = page(
        &details.title,
        None,
        &format!(
            "<p>{}</p><p><a href=\"/dashboard\">Back to your consents</a></p>",
            esc(details.detail.as_deref().unwrap_or(""))
        ),
    );
    *response.status_mut() = problem.status();
    response
}

const STYLE: &str = "\
:root{font-family:system-ui,sans-serif;line-height:1.5;color:#1a1a1a;background:#fff}\n\
body{margin:0 auto;max-width:72rem;padding:0 1rem}\n\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}\n\
header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid #ccc}\n\
.brand a{font-weight:700;text-decoration:none;color:#0b3d91}\n\
table{border-collapse:collapse;width:100%;margin:1rem 0}\n\
caption{text-align:left;font-weight:600;padding:.5rem 0}\n\
th,td{border:1px solid #bbb;padding:.4rem .6rem;text-align:left;vertical-align:top}\n\
th{background:#eef2f8}\n\
a{color:#0b3d91}\n\
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #e07000;outline-offset:2px}\n\
button{font:inherit;padding:.5rem 1rem;border-radius:4px;border:2px solid #0b3d91;background:#0b3d91;color:#fff;cursor:pointer}\n\
button.danger{background:#a40000;border-color:#a40000}\n\
.status-active{color:#0a6b2d;font-weight:600}.status-ended{color:#6b6b6b}\n\
.notice{border-left:4px solid #0b3d91;padding:.5rem 1rem;background:#eef2f8}\n\
.verified{color:#0a6b2d;font-weight:600}.unverified{color:#a40000;font-weight:600}\n\
pre{white-space:pre-wrap;word-break:break-all;background:#f5f5f5;padding:.5rem}\n\
ol.messages li{margin:.5rem 0}\n\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1.5rem}dt{font-weight:600}dd{margin:0}\n";

async fn style() -> Response {
    let mut response = STYLE.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}

fn status_text(status: &ConsentStatus) -> (&'static str, String) {
    match status {
        ConsentStatus::Authorised => ("status-active", "Active".to_owned()),
        ConsentStatus::Requested => ("status-ended", "Waiting for your approval".to_owned()),
        ConsentStatus::Rejected => ("status-ended", "Declined".to_owned()),
        ConsentStatus::Revoked { by, reason } => (
            "status-ended",
            format!(
                "Stopped by {} ({})",
                match by {
                    Revoker::Subject => "you",
                    Revoker::Holder => "the bank",
                    Revoker::Platform => "the platform",
                },
                reason_text(*reason)
            ),
        ),
        _ => ("status-ended", "Ended".to_owned()),
    }
}

fn reason_text(reason: RevocationReason) -> &'static str {
    match reason {
        RevocationReason::SubjectWithdrew => "withdrawn",
        RevocationReason::AccountClosed => "account closed",
        RevocationReason::SuspectedMisuse => "suspected misuse",
        RevocationReason::NoLongerNeeded => "no longer needed",
        RevocationReason::Erasure => "erasure",
    }
}

/// How often a consent was used, and when last (its `access_permitted` entries).
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    count: u64,
    last: Option<OffsetDateTime>,
}

fn usage_of(entries: &[AuditEntry]) -> HashMap<ConsentId, Usage> {
    let mut usage: HashMap<ConsentId, Usage> = HashMap::new();
    for entry in entries {
        if let AuditEvent::AccessPermitted { consent, .. } = &entry.event {
            let u = usage.entry(consent.clone()).or_default();
            u.count += 1;
            u.last = Some(entry.at);
        }
    }
    usage
}

fn used_text(usage: Usage) -> String {
    match usage.last {
        Some(last) if usage.count == 1 => format!("once, {}", esc(&date(last))),
        Some(last) => format!("{} times, last {}", usage.count, esc(&date(last))),
        None => "never".to_owned(),
    }
}

/// The terms of a consent: what was approved if it was, else what was asked.
fn terms(view: &ConsentView) -> (String, String, String, Option<OffsetDateTime>) {
    let request = view.consent.request();
    match view.consent.state() {
        ConsentState::Authorised { grant } => (
            list_of(grant.scopes()),
            list_of(grant.purposes()),
            list_of(grant.accounts()),
            Some(grant.expires_at()),
        ),
        _ => (
            list_of(request.scopes()),
            list_of(request.purposes()),
            match request.accounts() {
                crate::consent::AccountSelection::Listed(accounts) => list_of(accounts),
                _ => "any the bank offers".to_owned(),
            },
            view.consent.grant().map(|g| g.expires_at()),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The platform's pages

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: usize,
    #[serde(default)]
    notice: Option<String>,
}

async fn list<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(subject) = dashboard.auth.authenticate(&headers) else {
        return sign_in_page();
    };
    let broker = Arc::clone(&dashboard.broker);
    let who = subject.clone();
    let read = blocking(move || {
        let consents = broker.consents_of(&who)?;
        // Without the history, the counts are unknown (not "never").
        let usage = broker.subject_history(&who).ok().map(|h| usage_of(&h));
        Ok::<_, crate::Error>((consents, usage))
    })
    .await;
    let (consents, usage) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return problem_page(&broker_problem(&error)),
        Err(problem) => return problem_page(&problem),
    };
    tracing::info!(consents = consents.len(), "dashboard.list");
    let mut main = String::new();
    if query.notice.as_deref() == Some("revoked") {
        main.push_str(
            "<p class=\"notice\" role=\"status\">Stopped. The platform can no longer get a \
             token for it; your bank refuses it as soon as it reads the platform's revocation \
             feed (within minutes). To stop it at the bank at once, stop it in your bank's \
             dashboard too.</p>",
        );
    }
    let pages = consents.len().div_ceil(PAGE_SIZE).max(1);
    let index = query.page.min(pages - 1);
    let _ = write!(
        main,
        "<table>\n<caption>Your consents ({} in all; page {} of {pages})</caption>\n\
         <thead><tr><th scope=\"col\">Who receives</th><th scope=\"col\">From</th>\
         <th scope=\"col\">What</th><th scope=\"col\">Accounts</th><th scope=\"col\">Why</th>\
         <th scope=\"col\">Until</th><th scope=\"col\">Used</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Details</th></tr></thead>\n<tbody>\n",
        consents.len(),
        index + 1
    );
    // Newest first.
    for view in consents
        .iter()
        .rev()
        .skip(index * PAGE_SIZE)
        .take(PAGE_SIZE)
    {
        let request = view.consent.request();
        let (scopes, purposes, accounts, until) = terms(view);
        let (class, status) = status_text(&view.status);
        let id = esc(request.id().as_str());
        let _ = writeln!(
            main,
            "<tr><td>{}</td><td>{}</td><td>{scopes}</td><td>{accounts}</td><td>{purposes}</td>\
             <td>{}</td><td>{}</td><td class=\"{class}\">{}</td>\
             <td><a href=\"/dashboard/consents/{id}\" aria-label=\"Details of consent {id}\">Details</a></td></tr>",
            esc(request.platform().as_str()),
            esc(request.holder().as_str()),
            until.map_or_else(|| "—".to_owned(), |u| esc(&date(u))),
            usage.as_ref().map_or_else(
                || "unknown now".to_owned(),
                |u| used_text(u.get(request.id()).copied().unwrap_or_default())
            ),
            esc(&status),
        );
    }
    main.push_str("</tbody>\n</table>\n");
    if pages > 1 {
        main.push_str("<nav aria-label=\"Pages\"><ul>");
        if index > 0 {
            let _ = write!(
                main,
                "<li><a href=\"/dashboard?page={}\">Newer</a></li>",
                index - 1
            );
        }
        if index + 1 < pages {
            let _ = write!(
                main,
                "<li><a href=\"/dashboard?page={}\">Older</a></li>",
                index + 1
            );
        }
        main.push_str("</ul></nav>");
    }
    page("Your consents", Some(subject.as_str()), &main)
}

fn event_text(event: &AuditEvent) -> String {
    match event {
        AuditEvent::ConsentRequested { .. } => "The platform asked".to_owned(),
        AuditEvent::ConsentApproved { .. } => "You approved at your bank".to_owned(),
        AuditEvent::ConsentReauthorised { .. } => "You approved again at your bank".to_owned(),
        AuditEvent::ConsentRejected { .. } => "Declined".to_owned(),
        AuditEvent::AccessPermitted { scope, purpose, .. } => {
            format!("Access to your {scope} allowed, for {purpose}")
        }
        AuditEvent::AccessDenied { scope, purpose, .. } => {
            format!("Access to your {scope} refused, for {purpose}")
        }
        AuditEvent::TokenIssued { .. } => {
            "A short-lived token was issued to the platform".to_owned()
        }
        AuditEvent::ConsentRevoked { revocation, .. } => format!(
            "Stopped by {}",
            match revocation.by {
                Revoker::Subject => "you",
                Revoker::Holder => "the bank",
                Revoker::Platform => "the platform",
            }
        ),
        other => serde_json::to_value(other.kind())
            .ok()
            .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
            .unwrap_or_else(|| "recorded".to_owned()),
    }
}

async fn detail<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(subject) = dashboard.auth.authenticate(&headers) else {
        return sign_in_page();
    };
    let view = match dashboard.own_consent(&subject, id).await {
        Ok(view) => view,
        Err(problem) => return problem_page(&problem),
    };
    let broker = Arc::clone(&dashboard.broker);
    let consent = view.consent.id().clone();
    let history = match blocking(move || broker.consent_history(&consent)).await {
        Ok(Ok(history)) => history,
        Ok(Err(error)) => return problem_page(&broker_problem(&error)),
        Err(problem) => return problem_page(&problem),
    };
    tracing::info!(entries = history.len(), "dashboard.detail");
    let request = view.consent.request();
    let id = esc(request.id().as_str());
    let (scopes, purposes, accounts, until) = terms(&view);
    let (class, status) = status_text(&view.status);
    let usage = usage_of(&history)
        .get(request.id())
        .copied()
        .unwrap_or_default();
    let notice = if query.notice.as_deref() == Some("revoked") {
        "<p class=\"notice\" role=\"status\" id=\"notice\">Stopped. The platform can no longer get \
         a token for it; your bank refuses it as soon as it reads the platform's revocation feed \
         (within minutes).</p>\n"
    } else {
        ""
    };
    let mut main = format!(
        "{notice}<dl>\n<dt>Who receives</dt><dd>{}</dd>\n<dt>From</dt><dd>{}</dd>\n\
         <dt>What</dt><dd>{scopes}</dd>\n<dt>Accounts</dt><dd>{accounts}</dd>\n\
         <dt>Why</dt><dd>{purposes}</dd>\n<dt>Until</dt><dd>{}</dd>\n\
         <dt>Used</dt><dd>{}</dd>\n<dt>Status</dt><dd class=\"{class}\">{}</dd>\n</dl>\n",
        esc(request.platform().as_str()),
        esc(request.holder().as_str()),
        until.map_or_else(|| "—".to_owned(), |u| esc(&date(u))),
        used_text(usage),
        esc(&status)
    );
    if view.status == ConsentStatus::Authorised {
        let _ = write!(
            main,
            "<p><a href=\"/dashboard/consents/{id}/revoke\">Stop sharing…</a></p>"
        );
    }
    let _ = write!(
        main,
        "<table>\n<caption>History ({} entries in the public log)</caption>\n<thead><tr>\
         <th scope=\"col\">Entry</th><th scope=\"col\">When</th><th scope=\"col\">What</th>\
         <th scope=\"col\">Receipt</th></tr></thead>\n<tbody>\n",
        history.len()
    );
    for entry in &history {
        let _ = writeln!(
            main,
            "<tr><td>{seq}</td><td>{}</td><td>{}</td><td><a href=\"/dashboard/consents/{id}/receipts/{seq}\" \
             aria-label=\"Receipt of entry {seq}\">Receipt</a></td></tr>",
            esc(&date(entry.at)),
            esc(&event_text(&entry.event)),
            seq = entry.seq,
        );
    }
    main.push_str("</tbody>\n</table>\n");
    page(
        &format!("Consent {}", request.id()),
        Some(subject.as_str()),
        &main,
    )
}

async fn confirm<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(subject) = dashboard.auth.authenticate(&headers) else {
        return sign_in_page();
    };
    let view = match dashboard.own_consent(&subject, id).await {
        Ok(view) => view,
        Err(problem) => return problem_page(&problem),
    };
    let request = view.consent.request();
    let id = esc(request.id().as_str());
    let (scopes, _, accounts, _) = terms(&view);
    let main = format!(
        "<p>{} will no longer receive your {scopes} from {} (accounts {accounts}): the platform \
         can get no new token, and your bank refuses it as soon as it reads the platform's \
         revocation feed (within minutes). This cannot be undone: to share again, approve a new \
         request at your bank.</p>\n\
         <form method=\"post\" action=\"/dashboard/consents/{id}/revoke\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <button type=\"submit\" class=\"danger\">Yes, stop sharing</button>\n\
         <a href=\"/dashboard/consents/{id}\">No, go back</a>\n</form>\n",
        esc(request.platform().as_str()),
        esc(request.holder().as_str()),
        esc(&dashboard.csrf.token(&subject, dashboard.broker.now())),
    );
    page("Stop sharing?", Some(subject.as_str()), &main)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Who submitted a form: signed in, with the form's token for them, unexpired. Otherwise the
/// page to answer with (sign in, or the form refused; `csrf` `None`: every form is refused).
fn checked_form(
    auth: &dyn SubjectAuthenticator,
    csrf: Option<&Csrf>,
    now: OffsetDateTime,
    headers: &HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<SubjectId, Box<Response>> {
    let subject = auth
        .authenticate(headers)
        .ok_or_else(|| Box::new(sign_in_page()))?;
    let refused = |problem: &Problem| Box::new(problem_page(problem));
    let (Ok(Form(form)), Some(csrf)) = (form, csrf) else {
        return Err(refused(&forbidden_form()));
    };
    csrf.check(&subject, &form.csrf, now)
        .map_err(|p| refused(&p))?;
    Ok(subject)
}

async fn revoke<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let subject = match checked_form(
        dashboard.auth.as_ref(),
        Some(&dashboard.csrf),
        dashboard.broker.now(),
        &headers,
        form,
    ) {
        Ok(subject) => subject,
        Err(page) => return *page,
    };
    let view = match dashboard.own_consent(&subject, id).await {
        Ok(view) => view,
        Err(problem) => return problem_page(&problem),
    };
    let broker = Arc::clone(&dashboard.broker);
    let consent = view.consent.id().clone();
    let revoked = blocking(move || {
        broker.revoke(
            &consent,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
    })
    .await;
    match revoked {
        Ok(Ok(_)) => {
            tracing::info!("dashboard.revoke");
            Redirect::to(&format!(
                "/dashboard/consents/{}?notice=revoked",
                view.consent.id()
            ))
            .into_response()
        }
        Ok(Err(error)) => problem_page(&broker_problem(&error)),
        Err(problem) => problem_page(&problem),
    }
}

/// A receipt for one of this consent's entries, against the latest checkpoint that covers it
/// (a fresh one is signed only when none does).
async fn receipt_of<S: Store + Send + Sync + 'static>(
    dashboard: &Dashboard<S>,
    headers: &HeaderMap,
    id: String,
    seq: u64,
) -> Result<(SubjectId, crate::Receipt), Box<Response>> {
    let subject = dashboard
        .auth
        .authenticate(headers)
        .ok_or_else(|| Box::new(sign_in_page()))?;
    let view = dashboard
        .own_consent(&subject, id)
        .await
        .map_err(|p| Box::new(problem_page(&p)))?;
    let broker = Arc::clone(&dashboard.broker);
    let consent = view.consent.id().clone();
    let made = blocking(move || {
        let history = broker.consent_history(&consent)?;
        if !history.iter().any(|e| e.seq == seq) {
            return Ok(None);
        }
        let latest = broker.store().latest_checkpoint()?;
        match latest {
            Some(checkpoint) if checkpoint.size > seq => Ok(Some(crate::auditor::prove(
                &broker.store(),
                seq,
                &checkpoint,
            )?)),
            _ => broker.receipt(seq).map(Some),
        }
    })
    .await
    .map_err(|p| Box::new(problem_page(&p)))?;
    match made {
        Ok(Some(receipt)) => Ok((subject, receipt)),
        Ok(None) => Err(Box::new(problem_page(&Problem::not_found()))),
        Err(error) => Err(Box::new(problem_page(&broker_problem(&error)))),
    }
}

#[derive(Deserialize)]
struct ReceiptPath {
    id: String,
    seq: u64,
}

async fn receipt<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Path(path): Path<ReceiptPath>,
) -> Response {
    let (subject, receipt) = match receipt_of(&dashboard, &headers, path.id.clone(), path.seq).await
    {
        Ok(made) => made,
        Err(response) => return *response,
    };
    let vkey = dashboard.broker.checkpoint_verifier_key();
    let back = format!("/dashboard/consents/{}", esc(&path.id));
    let json = format!("{back}/receipts/{}/json", path.seq);
    receipt_page(
        &receipt,
        &vkey,
        "the platform's own, about its own log",
        &back,
        Some(&json),
        subject.as_str(),
    )
}

/// A receipt, its verdict against `vkey` (whose: `whose`), how to check it without this page,
/// and the receipt itself.
fn receipt_page(
    receipt: &crate::Receipt,
    vkey: &str,
    whose: &str,
    back: &str,
    json_link: Option<&str>,
    who: &str,
) -> Response {
    let verified = NoteVerifier::from_vkey(vkey)
        .map_err(|e| e.to_string())
        .and_then(|v| receipt.verify(&v).map_err(|e| e.to_string()));
    let json = serde_json::to_string_pretty(receipt).unwrap_or_default();
    let result = match &verified {
        Ok(_) => format!(
            "<p class=\"verified\" id=\"verdict\">Verified here: entry {} is in the log of size \
             {}, whose checkpoint is signed by the key below.</p>",
            receipt.index, receipt.tree_size
        ),
        Err(why) => format!(
            "<p class=\"unverified\" id=\"verdict\">Does not verify: {}</p>",
            esc(why)
        ),
    };
    let download = json_link.map_or_else(String::new, |link| {
        format!(
            "<p><a href=\"{link}\" download=\"receipt-{}.json\">Download the receipt (JSON)</a></p>\n",
            receipt.index
        )
    });
    let main = format!(
        "{result}\n<p>This verdict is {whose}. Check it yourself: save the receipt and run \
         <code>consent-broker audit receipt --vkey '{}' receipt.json</code> (or any RFC 6962 \
         verifier), after comparing that key with the one published elsewhere (by the log's \
         witnesses, by your bank): a key only this page gives you proves nothing.</p>\n\
         {download}<h2>The receipt</h2>\n<pre>{}</pre>\n<p><a href=\"{back}\">Back</a></p>",
        esc(vkey),
        esc(&json),
    );
    page(
        &format!("Receipt of entry {}", receipt.index),
        Some(who),
        &main,
    )
}

async fn receipt_json<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Path(path): Path<ReceiptPath>,
) -> Response {
    match receipt_of(&dashboard, &headers, path.id, path.seq).await {
        Ok((_, receipt)) => {
            let mut response = axum::Json(receipt).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(response) => *response,
    }
}

// ---------------------------------------------------------------------------------------------
// The chat view

const OPENER: &str = include_str!("../../js/open-sealed-response.mjs");
const CHAT_SCRIPT: &str = include_str!("chat.mjs");

fn script(source: &'static str) -> Response {
    let mut response = source.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    response
}

async fn opener_script() -> Response {
    script(OPENER)
}

async fn chat_script() -> Response {
    script(CHAT_SCRIPT)
}

impl Chat {
    fn messages(&self, subject: &SubjectId) -> Vec<String> {
        self.relayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }

    /// Keeps a relayed (sealed) response: in memory, and appended to the relay file.
    fn keep(&self, subject: &SubjectId, sealed: String) -> Result<(), Problem> {
        if let Some(path) = &self.settings.relay_file {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|_| Problem::unavailable("the relay cannot be written"))?;
            writeln!(file, "{sealed}")
                .map_err(|_| Problem::unavailable("the relay cannot be written"))?;
        }
        self.relayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subject.clone())
            .or_default()
            .push(sealed);
        Ok(())
    }
}

async fn chat_page<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(subject) = dashboard.auth.authenticate(&headers) else {
        return sign_in_page();
    };
    let Some(chat) = &dashboard.chat else {
        return problem_page(&Problem::not_found());
    };
    let messages = chat.messages(&subject);
    let mut main = String::new();
    if let Some(notice) = &query.notice {
        let _ = write!(
            main,
            "<p class=\"notice\" role=\"status\" id=\"notice\">{}</p>",
            esc(&notice_text(notice))
        );
    }
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/chat/ask\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <button type=\"submit\" id=\"ask-balance\">What is my balance?</button>\n</form>\n\
         <h2>Messages from your bank</h2>\n\
         <p>Your bank seals each answer to your device; this page opens it in your browser with \
         your device's key. The platform's servers relay and keep only the sealed answer, which \
         they cannot open. (This page's code comes from the platform: to be independent of it, \
         open answers in your bank's app.)</p>\n\
         <noscript><p class=\"notice\">Opening answers needs JavaScript (your browser's \
         WebCrypto): the platform's server cannot open them for you.</p></noscript>\n\
         <ol class=\"messages\" id=\"messages\" aria-live=\"polite\">\n",
        esc(&dashboard.csrf.token(&subject, dashboard.broker.now()))
    );
    for (index, sealed) in messages.iter().enumerate() {
        let _ = writeln!(
            main,
            "<li data-index=\"{index}\">Sealed answer, {} bytes: <output id=\"message-{index}\">not opened</output></li>",
            sealed.len()
        );
    }
    main.push_str("</ol>\n<script type=\"module\" src=\"/chat/chat.mjs\"></script>\n");
    page("Chat with your bank", Some(subject.as_str()), &main)
}

fn notice_text(code: &str) -> String {
    match code {
        "relayed" => "Your bank answered; the answer is opened on your device below.".to_owned(),
        "no-consent" => {
            "You have no active consent for your balance. Approve one at your bank.".to_owned()
        }
        "unavailable" => "Your bank could not be reached; try again shortly.".to_owned(),
        other if other.starts_with("denied-") || other.starts_with("refused-") => {
            format!("Not shared: {}", other.replace(['-', '_'], " "))
        }
        _ => "Done.".to_owned(),
    }
}

async fn chat_messages<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
) -> Response {
    let Some(subject) = dashboard.auth.authenticate(&headers) else {
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Sign in first")
            .into_response();
    };
    let Some(chat) = &dashboard.chat else {
        return Problem::not_found().into_response();
    };
    let body = format!("[{}]", chat.messages(&subject).join(","));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn chat_ask<S: Store + Send + Sync + 'static>(
    State(dashboard): State<Dashboard<S>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let subject = match checked_form(
        dashboard.auth.as_ref(),
        Some(&dashboard.csrf),
        dashboard.broker.now(),
        &headers,
        form,
    ) {
        Ok(subject) => subject,
        Err(page) => return *page,
    };
    let Some(chat) = dashboard.chat.clone() else {
        return problem_page(&Problem::not_found());
    };
    let notice = ask_balance(&dashboard, &chat, &subject).await;
    Redirect::to(&format!("/chat?notice={notice}")).into_response()
}

/// The platform's server asks the broker for a token for the subject's balance, presents it
/// to the bank, and relays the sealed answer. Returns the notice code to show.
async fn ask_balance<S: Store + Send + Sync + 'static>(
    dashboard: &Dashboard<S>,
    chat: &Arc<Chat>,
    subject: &SubjectId,
) -> String {
    let broker = Arc::clone(&dashboard.broker);
    let who = subject.clone();
    let platform = chat.settings.platform.clone();
    let decided = blocking(move || {
        let consents = broker.consents_of(&who)?;
        let live = consents
            .iter()
            .rev()
            .find_map(|view| match view.consent.state() {
                ConsentState::Authorised { grant }
                    if view.status == ConsentStatus::Authorised
                        && view.consent.request().platform() == &platform
                        && grant.scopes().contains(Scope::Balance) =>
                {
                    let account = grant.accounts().iter().next()?.clone();
                    let purpose = grant.purposes().iter().next()?;
                    Some(AccessRequest {
                        consent: view.consent.id().clone(),
                        platform: platform.clone(),
                        scope: Scope::Balance.into(),
                        purpose: purpose.into(),
                        account,
                        presence: Presence::SubjectPresent,
                    })
                }
                _ => None,
            });
        match live {
            Some(request) => broker.authorise_with_token(&request).map(Some),
            None => Ok(None),
        }
    })
    .await;
    let token = match decided {
        Ok(Ok(Some(TokenOutcome::Issued(token)))) => {
            dashboard.metrics.record_decision(&crate::Decision::Permit);
            token
        }
        Ok(Ok(Some(TokenOutcome::Denied(denial)))) => {
            let decision = crate::Decision::Deny {
                reasons: denial.reasons.clone(),
            };
            dashboard.metrics.record_decision(&decision);
            let code = denial.reasons.first().map_or("denied", metrics::deny_code);
            return format!("denied-{code}");
        }
        Ok(Ok(None)) => return "no-consent".to_owned(),
        Ok(Err(_)) | Err(_) => return "unavailable".to_owned(),
    };
    match chat
        .settings
        .client
        .fetch(&chat.settings.bank_data_url, &token.token)
        .await
    {
        Ok(BankResponse::Sealed(sealed)) => {
            let relayed = match serde_json::to_string(&sealed) {
                Ok(relayed) => relayed,
                Err(_) => return "unavailable".to_owned(),
            };
            let keeper = Arc::clone(chat);
            let who = subject.clone();
            match blocking(move || keeper.keep(&who, relayed)).await {
                Ok(Ok(())) => "relayed".to_owned(),
                _ => "unavailable".to_owned(),
            }
        }
        // The platform relays sealed answers only: a plaintext one is not kept or shown here.
        Ok(BankResponse::Plaintext(_)) => "refused-not_sealed".to_owned(),
        Err(ClientError::Refused { refusal, .. }) => {
            format!("refused-{}", metrics::refusal_code(&refusal))
        }
        Err(_) => "unavailable".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The bank's side

/// The bank's dashboard routes (merged by [`BankEndpoints::router`]).
pub(crate) fn bank_routes<S, H>(endpoints: BankEndpoints<S, H>) -> Router
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let csrf = endpoints.csrf_key().map(|secret| Csrf::new(&secret));
    Router::new()
        .route("/dashboard", get(bank_list::<S, H>))
        .route("/dashboard/approvals/{consent}", get(bank_detail::<S, H>))
        .route(
            "/dashboard/approvals/{consent}/receipts/{seq}",
            get(bank_receipt::<S, H>),
        )
        .route(
            "/dashboard/approvals/{consent}/revoke",
            get(bank_confirm::<S, H>).post(bank_revoke::<S, H>),
        )
        .route("/dashboard/style.css", get(style))
        .with_state((endpoints, csrf))
}

/// The bank's endpoints and its form tokens (`None`: no secret could be made, and every form
/// is refused: fail closed).
type BankState<S, H> = (BankEndpoints<S, H>, Option<Csrf>);

fn approval_status(
    record: &crate::AttestationRecord,
    platform_stop: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> (&'static str, String) {
    // Whichever stop came first: one made in chat, or the bank's own revocation (a stop the
    // feed brought after it is its echo).
    if let Some(at) = platform_stop.filter(|at| record.revoked.as_ref().is_none_or(|r| *at < r.at))
    {
        return (
            "status-ended",
            format!("Stopped in {} on {}", record.platform.as_str(), date(at)),
        );
    }
    if let Some(revoked) = &record.revoked {
        return (
            "status-ended",
            format!(
                "Stopped by {}",
                match revoked.by {
                    Revoker::Subject => "you",
                    Revoker::Holder => "the bank",
                    Revoker::Platform => "the platform",
                }
            ),
        );
    }
    if record.superseded_by.is_some() {
        return ("status-ended", "Replaced by a later approval".to_owned());
    }
    if now >= record.expires_at {
        return ("status-ended", "Expired".to_owned());
    }
    ("status-active", "Active".to_owned())
}

async fn bank_list<S, H>(
    State((endpoints, _)): State<BankState<S, H>>,
    headers: HeaderMap,
) -> Response
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let Some(customer) = endpoints.authenticator().authenticate(&headers) else {
        return sign_in_page();
    };
    let bank = Arc::clone(endpoints.bank());
    let who = customer.clone();
    let view = match blocking(move || bank.subject_view(&who).map(|v| (v, bank.now()))).await {
        Ok(Ok(view)) => view,
        Ok(Err(error)) => return problem_page(&super::bank::bank_problem(&error)),
        Err(problem) => return problem_page(&problem),
    };
    let (view, now) = view;
    let mut served: HashMap<&str, Usage> = HashMap::new();
    for entry in &view.journal {
        if let AuditEvent::AccessServed { attestation, .. } = &entry.event {
            let u = served.entry(attestation.as_str()).or_default();
            u.count += 1;
            u.last = Some(entry.at);
        }
    }
    let mut main = format!(
        "<table>\n<caption>What you approved at your bank ({} approvals)</caption>\n<thead><tr>\
         <th scope=\"col\">Who receives</th><th scope=\"col\">What</th><th scope=\"col\">Accounts</th>\
         <th scope=\"col\">Why</th><th scope=\"col\">Until</th><th scope=\"col\">Served</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Action</th></tr></thead>\n<tbody>\n",
        view.approvals.len()
    );
    for record in view.approvals.iter().rev() {
        let platform_stop = view
            .platform_stops
            .iter()
            .find(|stop| stop.consent == record.consent)
            .map(|stop| stop.at);
        let (class, status) = approval_status(record, platform_stop, now);
        let id = esc(record.consent.as_str());
        let action = if class == "status-active" {
            format!(
                "<a href=\"/dashboard/approvals/{id}\">History</a> · \
                 <a href=\"/dashboard/approvals/{id}/revoke\">Stop sharing…</a>"
            )
        } else {
            format!("<a href=\"/dashboard/approvals/{id}\">History</a>")
        };
        let _ = writeln!(
            main,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{class}\">{}</td><td>{action}</td></tr>",
            esc(record.platform.as_str()),
            list_of(record.scopes),
            list_of(&record.accounts),
            list_of(record.purposes),
            esc(&date(record.expires_at)),
            used_text(served.get(record.id.as_str()).copied().unwrap_or_default()),
            esc(&status)
        );
    }
    main.push_str("</tbody>\n</table>\n");
    let _ = write!(
        main,
        "<p>The bank's journal holds {} entries about you; each access it served or refused is one.</p>",
        view.journal.len()
    );
    page("Your approvals", Some(customer.as_str()), &main)
}

/// The journal's entries about one of the customer's approvals (by consent): those that name
/// the consent or one of its attestations. `None` when the consent is not the customer's.
async fn bank_history<S, H>(
    endpoints: &BankEndpoints<S, H>,
    customer: &SubjectId,
    consent: String,
) -> Result<Option<Vec<AuditEntry>>, Problem>
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let Ok(consent) = ConsentId::new(consent) else {
        return Ok(None);
    };
    let bank = Arc::clone(endpoints.bank());
    let who = customer.clone();
    let view = blocking(move || bank.subject_view(&who))
        .await?
        .map_err(|e| super::bank::bank_problem(&e))?;
    let ids: Vec<&str> = view
        .approvals
        .iter()
        .filter(|a| a.consent == consent)
        .map(|a| a.id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let about = |entry: &AuditEntry| {
        let Ok(value) = serde_json::to_value(&entry.event) else {
            return false;
        };
        let named = |member: &str| value.get(member).and_then(|v| v.as_str());
        named("consent") == Some(consent.as_str())
            || named("attestation").is_some_and(|a| ids.contains(&a))
    };
    Ok(Some(
        view.journal.iter().filter(|e| about(e)).cloned().collect(),
    ))
}

async fn bank_detail<S, H>(
    State((endpoints, _)): State<BankState<S, H>>,
    headers: HeaderMap,
    Path(consent): Path<String>,
) -> Response
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let Some(customer) = endpoints.authenticator().authenticate(&headers) else {
        return sign_in_page();
    };
    let history = match bank_history(&endpoints, &customer, consent.clone()).await {
        Ok(Some(history)) => history,
        Ok(None) => return problem_page(&Problem::not_found()),
        Err(problem) => return problem_page(&problem),
    };
    let id = esc(&consent);
    let mut main = format!(
        "<table>\n<caption>The bank's journal about this approval ({} entries)</caption>\n\
         <thead><tr><th scope=\"col\">Entry</th><th scope=\"col\">When</th>\
         <th scope=\"col\">What</th><th scope=\"col\">Receipt</th></tr></thead>\n<tbody>\n",
        history.len()
    );
    for entry in &history {
        let what = match &entry.event {
            AuditEvent::AccessServed { scope, purpose, .. } => {
                format!("Your {scope} was served, for {purpose}")
            }
            AuditEvent::AccessRefusedAtGate { refusal, .. } => {
                format!(
                    "Refused: {}",
                    metrics::refusal_code(refusal).replace('_', " ")
                )
            }
            other => event_text(other),
        };
        let _ = writeln!(
            main,
            "<tr><td>{seq}</td><td>{}</td><td>{}</td><td><a href=\"/dashboard/approvals/{id}/receipts/{seq}\" \
             aria-label=\"Receipt of entry {seq}\">Receipt</a></td></tr>",
            esc(&date(entry.at)),
            esc(&what),
            seq = entry.seq,
        );
    }
    main.push_str("</tbody>\n</table>\n<p><a href=\"/dashboard\">Back to your approvals</a></p>");
    page(
        &format!("Approval of consent {consent}"),
        Some(customer.as_str()),
        &main,
    )
}

#[derive(Deserialize)]
struct ApprovalReceiptPath {
    consent: String,
    seq: u64,
}

async fn bank_receipt<S, H>(
    State((endpoints, _)): State<BankState<S, H>>,
    headers: HeaderMap,
    Path(path): Path<ApprovalReceiptPath>,
) -> Response
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let Some(customer) = endpoints.authenticator().authenticate(&headers) else {
        return sign_in_page();
    };
    match bank_history(&endpoints, &customer, path.consent.clone()).await {
        Ok(Some(history)) if history.iter().any(|e| e.seq == path.seq) => {}
        Ok(_) => return problem_page(&Problem::not_found()),
        Err(problem) => return problem_page(&problem),
    }
    let bank = Arc::clone(endpoints.bank());
    let seq = path.seq;
    let made = blocking(move || {
        let latest = bank.journal().latest_checkpoint()?;
        let checkpoint = match latest {
            Some(checkpoint) if checkpoint.size > seq => checkpoint,
            _ => bank
                .checkpoint()
                .map_err(|_| crate::StoreError::Unavailable("the journal's checkpoint".into()))?,
        };
        crate::auditor::prove(bank.journal(), seq, &checkpoint)
            .map_err(|_| crate::StoreError::Unavailable("the journal's proof".into()))
    })
    .await;
    let receipt = match made {
        Ok(Ok(receipt)) => receipt,
        _ => return problem_page(&Problem::unavailable("the receipt cannot be made now")),
    };
    let vkey = endpoints.bank().journal_verifier_key();
    receipt_page(
        &receipt,
        &vkey,
        "the bank's own, about its own journal",
        &format!("/dashboard/approvals/{}", esc(&path.consent)),
        None,
        customer.as_str(),
    )
}

async fn bank_confirm<S, H>(
    State((endpoints, csrf)): State<BankState<S, H>>,
    headers: HeaderMap,
    Path(consent): Path<String>,
) -> Response
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let Some(customer) = endpoints.authenticator().authenticate(&headers) else {
        return sign_in_page();
    };
    let Some(csrf) = csrf else {
        return problem_page(&forbidden_form());
    };
    let main = format!(
        "<p>The platform will no longer receive anything under this approval; the bank refuses it \
         from now on and tells the platform's broker.</p>\n\
         <form method=\"post\" action=\"/dashboard/approvals/{id}/revoke\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <button type=\"submit\" class=\"danger\">Yes, stop sharing</button>\n\
         <a href=\"/dashboard\">No, go back</a>\n</form>\n",
        esc(&csrf.token(&customer, endpoints.bank().now())),
        id = esc(&consent),
    );
    page("Stop sharing?", Some(customer.as_str()), &main)
}

async fn bank_revoke<S, H>(
    State((endpoints, csrf)): State<BankState<S, H>>,
    headers: HeaderMap,
    Path(consent): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response
where
    S: Store + LedgerRead + Send + Sync + 'static,
    H: DataHolder + Send + Sync + 'static,
    H::Error: Send + 'static,
{
    let customer = match checked_form(
        endpoints.authenticator().as_ref(),
        csrf.as_ref(),
        endpoints.bank().now(),
        &headers,
        form,
    ) {
        Ok(customer) => customer,
        Err(page) => return *page,
    };
    let Ok(consent) = ConsentId::new(consent) else {
        return problem_page(&Problem::not_found());
    };
    match revoke_and_deliver(&endpoints, customer, consent).await {
        Ok(_) => Redirect::to("/dashboard").into_response(),
        Err(problem) => problem_page(&problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use time::macros::datetime;

    fn cookie(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{name}={value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn an_approval_stopped_in_chat_shows_as_stopped_there() {
        let now = datetime!(2026-12-04 06:00 UTC);
        fn parse<T: std::str::FromStr>(text: &str) -> T {
            text.parse().unwrap_or_else(|_| unreachable!())
        }
        let record = crate::AttestationRecord {
            id: "att-1".to_owned(),
            consent: parse("cns_1"),
            subject: parse("alice"),
            platform: parse("chat"),
            broker: parse("broker"),
            scopes: crate::ScopeSet::from([crate::Scope::Balance]),
            purposes: crate::PurposeSet::from([crate::Purpose::CustomerService]),
            accounts: crate::AccountSet::new(),
            unattended_daily_limit: 0,
            signed_at: now,
            expires_at: now + time::Duration::days(30),
            revoked: None,
            superseded_by: None,
            devices: Vec::new(),
            plaintext: crate::PlaintextUses::new(),
            pairwise: None,
            version: 1,
        };
        assert_eq!(approval_status(&record, None, now).0, "status-active");
        let (class, status) = approval_status(&record, Some(now), now);
        assert_eq!(class, "status-ended");
        assert_eq!(status, "Stopped in chat on 2026-12-04T06:00:00Z");
        // Stopped at the bank: the approval's own revocation is what is shown.
        let revoked = crate::AttestationRecord {
            revoked: Some(crate::store::BankRevocation {
                by: Revoker::Subject,
                reason: crate::RevocationReason::SubjectWithdrew,
                at: now,
            }),
            ..record
        };
        assert_eq!(
            approval_status(&revoked, Some(now), now).1,
            "Stopped by you"
        );
        // Stopped in chat first, and revoked at the bank an hour later: the first stop shows.
        let earlier = now - time::Duration::hours(1);
        assert_eq!(
            approval_status(&revoked, Some(earlier), now).1,
            "Stopped in chat on 2026-12-04T05:00:00Z"
        );
    }

    #[test]
    fn a_session_is_one_cookie_that_verifies_before_it_expires() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 09:00 UTC)));
        let sessions = SessionCookies::new(&[1; 32]).with_clock(clock.clone());
        let alice = SubjectId::new("alice").unwrap();
        let value = sessions.issue(&alice);
        assert_eq!(sessions.cookie_name(), "__Host-cb_session");
        assert!(sessions.set_cookie(&alice).ends_with("; Secure"));
        let headers = cookie(SECURE_SESSION_COOKIE, &value);
        assert_eq!(sessions.authenticate(&headers), Some(alice.clone()));
        // Without the prefix, another key, another subject spliced in, two cookies: nobody.
        assert_eq!(sessions.authenticate(&cookie(SESSION_COOKIE, &value)), None);
        let other = SessionCookies::new(&[2; 32]).with_clock(clock.clone());
        assert_eq!(other.authenticate(&headers), None);
        let (_, rest) = value.split_once('.').unwrap();
        let spliced = format!("{}.{rest}", URL_SAFE_NO_PAD.encode("mallory"));
        assert_eq!(
            sessions.authenticate(&cookie(SECURE_SESSION_COOKIE, &spliced)),
            None
        );
        let mut two = headers.clone();
        two.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SECURE_SESSION_COOKIE}={value}")).unwrap(),
        );
        assert_eq!(sessions.authenticate(&two), None);
        clock.advance(time::Duration::minutes(31));
        assert_eq!(sessions.authenticate(&headers), None);
    }

    #[test]
    fn a_form_token_is_the_subjects_and_expires() {
        let csrf = Csrf::new(&[3; 32]);
        let now = datetime!(2026-11-21 09:00 UTC);
        let alice = SubjectId::new("alice").unwrap();
        let bob = SubjectId::new("bob").unwrap();
        let token = csrf.token(&alice, now);
        assert!(csrf.check(&alice, &token, now).is_ok());
        assert!(csrf.check(&bob, &token, now).is_err());
        assert!(
            csrf.check(&alice, &token, now + FORM_TOKEN_LIFETIME)
                .is_err()
        );
        // A later expiry written in: the MAC no longer matches.
        let (_, tag) = token.split_once('.').unwrap();
        let stretched = format!(
            "{}.{tag}",
            (now + time::Duration::days(30)).unix_timestamp()
        );
        assert!(csrf.check(&alice, &stretched, now).is_err());
        assert!(csrf.check(&alice, "", now).is_err());
    }
}
