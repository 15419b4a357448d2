//! A host application that installs its own provider before `install()` keeps it.
//! Its own test binary, hence its own process: the process-wide provider starts empty.
#![expect(clippy::unwrap_used, reason = "tests fail by panicking")]

use consent_broker::crypto::{Installed, RING_PROVIDER, install};
use jsonwebtoken::crypto::{CryptoProvider, KeyUtils, sign, verify};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// The host's own provider: a different static, built from the same functions.
static HOST: CryptoProvider = CryptoProvider {
    signer_factory: RING_PROVIDER.signer_factory,
    verifier_factory: RING_PROVIDER.verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: RING_PROVIDER
            .key_utils
            .rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: RING_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: RING_PROVIDER
            .key_utils
            .ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: RING_PROVIDER
            .key_utils
            .ed_pub_components_from_private_key,
        compute_digest: RING_PROVIDER.key_utils.compute_digest,
    },
};

#[test]
fn a_provider_the_host_installed_is_kept() {
    assert!(
        HOST.install_default().is_ok(),
        "nothing may be installed before the host"
    );
    assert_eq!(install(), Ok(Installed::Host));
    // Cached: the answer does not change, and nothing can replace the host's provider.
    assert_eq!(install(), Ok(Installed::Host));
    assert!(RING_PROVIDER.install_default().is_err());

    let secret = b"host-installed provider";
    let signature = sign(
        b"message",
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    let key = DecodingKey::from_secret(secret);
    assert_eq!(
        verify(&signature, b"message", &key, Algorithm::HS256),
        Ok(true)
    );
    assert_eq!(
        verify(&signature, b"massage", &key, Algorithm::HS256),
        Ok(false)
    );
}
