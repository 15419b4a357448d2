//! A jsonwebtoken call before any provider is installed leaves the panicking placeholder for
//! the life of the process; `install()` must detect it and report it, not panic.
//! Its own test binary, hence its own process.
#![expect(clippy::expect_used, reason = "tests fail by panicking")]

use std::panic;

use consent_broker::crypto::{ProviderError, install};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

/// RFC 7515 Appendix A.1: any well-formed HS256 token reaches the provider.
const TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[test]
fn install_after_an_early_jsonwebtoken_call_reports_unusable() {
    let early = panic::catch_unwind(|| {
        let key = DecodingKey::from_secret(b"too early");
        decode::<serde_json::Value>(TOKEN, &key, &Validation::new(Algorithm::HS256))
    });
    assert!(
        early.is_err(),
        "jsonwebtoken should have panicked inside its placeholder"
    );

    let outcome = panic::catch_unwind(install).expect("install() must not panic");
    assert_eq!(outcome, Err(ProviderError::Unusable));
    // Cached, and still not panicking.
    assert_eq!(install(), Err(ProviderError::Unusable));
    let message = ProviderError::Unusable.to_string();
    assert!(
        message.contains("consent_broker::crypto::install()"),
        "{message}"
    );
}
