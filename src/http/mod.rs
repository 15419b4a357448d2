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
//! and proof limits, requests in flight to [`MAX_IN_FLIGHT`] (the rest shed at once with a 503),
//! each request to 30 s; hostile input gets a typed 4xx answer (a problem document), never a 5xx.
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

/// The most core calls this process runs or queues on tokio's blocking pool at once, over all
/// routers; a request that would need one more is answered 503 `overloaded` with
/// `Retry-After: 1` at once, before anything is decided. A call holds its slot until it ends
/// (even if its request timed out), so the bound is on the work, not on the waiting; requests
/// still reading their bodies or waiting for a lock hold none. A proxy in front still limits
/// per client.
pub const MAX_IN_FLIGHT: usize = 256;

/// The slots of [`MAX_IN_FLIGHT`].
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_IN_FLIGHT);

/// How much of a body beyond [`MAX_BODY_BYTES`] is read and thrown away before the 413 is sent
/// (1 MiB in all).
///
/// A server that answers before the request's body has arrived and closes the connection
/// leaves the rest of the body unread in its socket, and the kernel then resets the connection:
/// the client, still sending, often loses the answer and sees a broken connection instead of
/// the 413 (in a test of this crate, 12 requests of 500 with a 200 KiB body). So a body that
/// is too large is read to its end, up to this much, and only then refused. Beyond it, the 413
/// is sent at once and the connection may be reset: nobody sends a megabyte to these endpoints
/// by mistake.
const DRAIN_BYTES: usize = 1024 * 1024;

/// The layers every router of this module has: bodies bounded to [`MAX_BODY_BYTES`], each
/// request traced, counted, timed out and answered with a problem document when it fails.
pub(crate) fn bounded(router: axum::Router, metrics: Metrics) -> axum::Router {
    router
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(read_body))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::observe,
        ))
}

/// The 413 for a body beyond [`MAX_BODY_BYTES`].
fn too_large() -> Problem {
    let status = axum::http::StatusCode::PAYLOAD_TOO_LARGE;
    Problem::new(
        status,
        "http/413",
        status.canonical_reason().unwrap_or("Payload Too Large"),
    )
}

/// Reads the request's body before any handler sees it: whole when it is within
/// [`MAX_BODY_BYTES`] (the handler gets it from memory), and to its end (up to
/// [`DRAIN_BYTES`]) before a 413 when it is not, so that the client receives the 413 instead of
/// a reset connection. A body declared larger than [`DRAIN_BYTES`], or announced with
/// `Expect: 100-continue` and declared too large, is refused without reading it. A body that
/// cannot be read (the client went away, a broken chunked encoding) is a 400. Trailers are not
/// kept: no endpoint of this module reads any.
async fn read_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use http_body_util::BodyExt as _;
    let headers = request.headers();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let waits_for_continue = headers
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let limit = u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX);
    let drain = u64::try_from(DRAIN_BYTES).unwrap_or(u64::MAX);
    if declared.is_some_and(|n| n > drain || (waits_for_continue && n > limit)) {
        return too_large().into_response();
    }
    let (parts, mut body) = request.into_parts();
    // What a declared length within the limit needs, and no more (a chunked body grows it).
    let mut kept: Vec<u8> =
        Vec::with_capacity(declared.map_or(0, |n| usize::try_from(n.min(limit)).unwrap_or(0)));
    let mut read = 0_usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Problem::bad_request("the request's body could not be read").into_response();
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read = read.saturating_add(data.len());
        if read > DRAIN_BYTES {
            return too_large().into_response();
        }
        if read <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        }
    }
    if read > MAX_BODY_BYTES {
        return too_large().into_response();
    }
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(kept));
    next.run(request).await
}

/// The answer when every slot is taken.
fn overloaded() -> Problem {
    Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Too many requests at once",
    )
    .retry_after(1)
}

/// Runs a synchronous core call on tokio's blocking pool. A call that panicked (a bug) is
/// answered as a 500 problem, never by tearing the server down.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    blocking_in(&SLOTS, f).await
}

/// [`blocking`] with the slots of `slots`.
async fn blocking_in<T: Send + 'static>(
    slots: &'static tokio::sync::Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    let slot = slots.try_acquire().map_err(|_| overloaded())?;
    tokio::task::spawn_blocking(move || {
        // Held until the call ends, even if the request that asked for it is gone.
        let _slot = slot;
        f()
    })
    .await
    .map_err(|_| Problem::internal("the call did not complete"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_beyond_the_slots_is_shed_at_once_and_a_slot_is_held_until_its_work_ends() {
        static ONE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        let (started, wait) = std::sync::mpsc::channel::<()>();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let running = tokio::spawn(blocking_in(&ONE, move || {
            let _ = started.send(());
            let _ = hold.recv();
        }));
        tokio::task::spawn_blocking(move || wait.recv().unwrap())
            .await
            .unwrap();
        let shed = blocking_in(&ONE, || ()).await.unwrap_err();
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.details().code(), Some("overloaded"));
        // The request that asked is dropped: its work still runs and still holds the slot.
        running.abort();
        assert!(blocking_in(&ONE, || ()).await.is_err());
        release.send(()).unwrap();
        // Once the work ends, the slot is free.
        for _ in 0..100 {
            if blocking_in(&ONE, || ()).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the slot was never released");
    }
}
