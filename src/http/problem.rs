//! RFC 9457 problem details: every refusal and failure of this module's servers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::refusal::GateRefusal;

/// The prefix of every problem type this crate defines: `urn:consent-broker:problem:` followed
/// by a code (`docs/HTTP.md` lists them). A URN: the types are identifiers, not pages to fetch.
pub const PROBLEM_BASE: &str = "urn:consent-broker:problem:";

/// The media type of a problem document (RFC 9457 §3).
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document as it travels (RFC 9457), with this crate's extension members: the gate's
/// typed refusal and the journal entry that recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDetails {
    /// The problem type: [`PROBLEM_BASE`] and a code.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the type (the same for every occurrence).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened here, without personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The gate's refusal, typed, when the gate refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<GateRefusal>,
    /// The bank's journal entry that recorded the refusal, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_seq: Option<u64>,
}

impl ProblemDetails {
    /// The code after [`PROBLEM_BASE`], if the type is one of this crate's.
    pub fn code(&self) -> Option<&str> {
        self.kind.strip_prefix(PROBLEM_BASE)
    }
}

/// An error answer of one of this module's servers: a status, a problem document, and the
/// headers that go with it (`WWW-Authenticate`, `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    details: ProblemDetails,
    www_authenticate: Option<String>,
    retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `status` with this crate's `code`.
    pub fn new(status: StatusCode, code: &str, title: &str) -> Self {
        Self(Box::new(Inner {
            details: ProblemDetails {
                kind: format!("{PROBLEM_BASE}{code}"),
                title: title.to_owned(),
                status: status.as_u16(),
                detail: None,
                refusal: None,
                journal_seq: None,
            },
            www_authenticate: None,
            retry_after: None,
        }))
    }

    /// With a detail (never personal data).
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.details.detail = Some(detail.into());
        self
    }

    /// With the gate's refusal and its journal entry.
    #[must_use]
    pub fn refusal(mut self, refusal: GateRefusal, journal_seq: Option<u64>) -> Self {
        self.0.details.refusal = Some(refusal);
        self.0.details.journal_seq = journal_seq;
        self
    }

    /// With a `WWW-Authenticate` challenge.
    #[must_use]
    pub fn challenge(mut self, challenge: String) -> Self {
        self.0.www_authenticate = Some(challenge);
        self
    }

    /// With `Retry-After` (seconds).
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// A 400 for a request this server cannot read.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(detail)
    }

    /// A 404.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }

    /// A 500: a bug or an unexpected failure (the detail names no data).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .detail(detail)
    }

    /// A 503 for a store or an account system that failed: nothing was decided or served; try
    /// again shortly.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
        )
        .detail(detail)
        .retry_after(1)
    }

    /// The document.
    pub fn details(&self) -> &ProblemDetails {
        &self.0.details
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.details.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The `WWW-Authenticate` challenge, if any.
    pub fn www_authenticate(&self) -> Option<&str> {
        self.0.www_authenticate.as_deref()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.0.details).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(challenge) = self
            .0
            .www_authenticate
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A quoted-string for an auth-param (RFC 9110 §5.6.4): only visible ASCII and spaces, without
/// quotes or backslashes, at most 200 characters.
pub(crate) fn quoted(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
        .take(200)
        .collect();
    format!("\"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_travels_as_problem_json_with_its_headers() {
        let problem = Problem::new(StatusCode::UNAUTHORIZED, "x", "X")
            .challenge("DPoP error=\"invalid_token\"".into())
            .retry_after(3);
        let response = problem.clone().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "DPoP error=\"invalid_token\""
        );
        assert_eq!(problem.details().code(), Some("x"));
    }

    #[test]
    fn quoted_strings_hold_no_quote_backslash_or_control() {
        assert_eq!(quoted("a\"b\\c\nd é"), "\"abcd \"");
    }
}
