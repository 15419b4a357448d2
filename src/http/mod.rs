//! Across the wire (feature `http`): each party's HTTP endpoints, a drop-in gate for a bank's
//! API, the platform's clients, and the subject's dashboard.
//!
//! The core of the crate is synchronous and knows nothing of any runtime; this module puts it
//! on [axum] and [tower] (tokio) for servers and [reqwest] for clients, and runs every core call
//! on a blocking thread (`tokio::task::spawn_blocking`), so an executor thread never waits on a
//! disk or a database.
//!
//! - [`broker`]: the platform's public endpoints: the JWKS at the well-known path, the log's
//!   checkpoint and tiles (C2SP `tlog-tiles`), the signed revocation feed for banks (with a
//!   cursor), the endpoint where banks deliver their signed instructions, and [`HttpWitness`],
//!   the client that asks a witness across the network to cosign.
//! - [`gate`]: [`GateLayer`], a tower layer that puts the bank's holder gate in front of any
//!   handler (RFC 9449 `Authorization: DPoP` and `DPoP` headers; RFC 6750 / RFC 9449
//!   `WWW-Authenticate` challenges; refusals as RFC 9457 problem details carrying the typed
//!   reason), and [`Admitted`], the extractor a data handler takes.
//! - [`bank`]: the bank's endpoints: the data endpoint behind the gate, approvals (after the
//!   bank authenticated the customer: [`SubjectAuthenticator`]), the customer's revocations,
//!   the witness (`add-checkpoint`), and the bank's side of the dashboard.
//! - [`client`]: [`BankClient`], which calls the bank with the token and a fresh DPoP proof per
//!   attempt, with timeouts and bounded retries, mapping every refusal to a typed error; and
//!   [`BrokerClient`], which reads the broker's public endpoints.
//! - [`dashboard`]: the page where a person sees every consent, its history with receipts, and
//!   revokes it; and the chat view, which opens the bank's sealed responses in the page with
//!   WebCrypto so the platform's server only relays ciphertext.
//! - [`Metrics`]: counters and latencies in the Prometheus text format; every request runs in a
//!   `tracing` span named after its route (the route's template, never the path: a path may
//!   hold an id), and no span or event carries personal data.
//!
//! Every router bounds what it reads: bodies to [`MAX_BODY_BYTES`], credentials to the token
//! and proof limits; hostile input gets a typed 4xx answer (a problem document), never a 5xx.
//! `docs/HTTP.md` lists every endpoint, status code and problem type.

pub mod bank;
pub mod broker;
pub mod client;
pub mod dashboard;
pub mod gate;
mod metrics;
mod problem;

pub use bank::SubjectAuthenticator;
pub use broker::{HttpTiles, HttpWitness};
pub use client::{BankClient, BrokerClient, ClientError, ClientSettings, tls_config};
pub use gate::{Admitted, GateLayer};
pub use metrics::Metrics;
pub use problem::{PROBLEM_BASE, Problem, ProblemDetails};

/// The largest request body any endpoint of this module reads (64 KiB): attestations, feeds,
/// instructions and checkpoints are a few KiB at most.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Runs a synchronous core call on tokio's blocking pool. A call that panicked (a bug) is
/// answered as a 500 problem, never by tearing the server down.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Problem::internal("the call did not complete"))
}
