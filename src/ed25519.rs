//! Ed25519 signature verification: every signature this crate checks (tokens, DPoP proofs,
//! checkpoints, cosignatures, the JWT provider's EdDSA) goes through [`verify`]. The bank's
//! attestations are verified through jsonwebtoken's process-wide provider: by this function when
//! the crate's provider is installed (what `crypto::install` does unless the host installed one
//! of its own first), by the host's EdDSA otherwise.
//!
//! It is RFC 8032's verification (section 5.1.7) with the cofactorless equation, exactly as
//! `ring` (and so BoringSSL's ref10) does it: `S` must be below the group order `L`; the key `A`
//! must decode to a point (a `y` coordinate at or above `p` is read modulo `p`, and `x = 0` with
//! the sign bit set is taken as `x = 0`, as ref10 does); `k = SHA-512(R || A || M) mod L`; and
//! the signature holds when the canonical encoding of `[S]B - [k]A` is exactly the signature's
//! `R` bytes. So a non-canonical `R`, and an `R` whose low-order part does not cancel with
//! `[k]A`'s, never verify; low-order keys and `R` values that satisfy the equation do. The
//! tests hold this to `ring`'s answer on every vector of C2SP's complete set of Ed25519 edge
//! cases (`tests/data/cctv-ed25519`), and on signatures with single bits flipped.
//!
//! Why not `ring`'s verification, as before: the arithmetic here is curve25519-dalek's (already
//! in the tree for X25519), whose double-base multiplication uses AVX2 when the CPU has it, and
//! a decoded key is kept (a few per thread), where `ring` decodes the key, a square root, on
//! every call. The bank's gate verifies two signatures per request, about half of its CPU. On
//! this repository's machine two verifications took 0.77–0.86× `ring`'s time (medians of 60
//! alternated blocks, three runs), and the gate's check without its journal 0.68× the
//! instructions (`BENCHMARKS.md`). Signing stays `ring`'s.

use std::cell::RefCell;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;

/// Length of an Ed25519 public key.
const KEY_LEN: usize = 32;
/// How many decoded keys each thread keeps: a gate verifies with its broker's key and the
/// platforms' proof keys, a handful.
const DECODED_PER_THREAD: usize = 8;

/// Keys decoded on this thread: `(encoded key, -A)`, replaced in turn once full.
struct Decoded {
    keys: Vec<([u8; KEY_LEN], EdwardsPoint)>,
    next: usize,
}

thread_local! {
    static DECODED: RefCell<Decoded> = const {
        RefCell::new(Decoded {
            keys: Vec::new(),
            next: 0,
        })
    };
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `message` (see the module's doc
/// for exactly which signatures verify). Malformed input (a key that is not 32 bytes or not a
/// point, a signature that is not 64 bytes) does not verify.
pub(crate) fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = <&[u8; KEY_LEN]>::try_from(public_key) else {
        return false;
    };
    let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
        return false;
    };
    let (r, s) = signature.split_at(32);
    let Ok(s) = <[u8; 32]>::try_from(s) else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    let Some(minus_a) = negated_key(key) else {
        return false;
    };
    let mut hash = ring::digest::Context::new(&ring::digest::SHA512);
    hash.update(r);
    hash.update(key);
    hash.update(message);
    let Ok(wide) = <[u8; 64]>::try_from(hash.finish().as_ref()) else {
        return false;
    };
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s)
        .compress()
        .as_bytes()
        .as_slice()
        == r
}

/// `-A` for the encoded key, from this thread's decoded keys or decoded now (`None`: not a
/// point).
fn negated_key(key: &[u8; KEY_LEN]) -> Option<EdwardsPoint> {
    let decode = || CompressedEdwardsY(*key).decompress().map(|a| -a);
    DECODED
        .try_with(|decoded| {
            let Ok(mut decoded) = decoded.try_borrow_mut() else {
                return decode();
            };
            if let Some((_, point)) = decoded.keys.iter().find(|(known, _)| known == key) {
                return Some(*point);
            }
            let point = decode()?;
            let slot = decoded.next;
            decoded.next = (slot + 1) % DECODED_PER_THREAD;
            match decoded.keys.get_mut(slot) {
                Some(entry) => *entry = (*key, point),
                None => decoded.keys.push((*key, point)),
            }
            Some(point)
        })
        .unwrap_or_else(|_| decode())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
    use serde::Deserialize;

    use super::*;

    fn ring_verifies(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, key)
            .verify(message, signature)
            .is_ok()
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[derive(Deserialize)]
    struct Vector {
        number: u32,
        key: String,
        sig: String,
        msg: String,
        flags: Option<Vec<String>>,
    }

    /// C2SP's CCTV Ed25519 vectors: every combination of low-order, mixed-order and
    /// non-canonical encodings of `A` and `R`. This verification answers as `ring` does on each,
    /// and as the vectors' README says ref10-derived verifiers do: reject a non-canonical `R`
    /// and a low-order residue, accept everything else.
    #[test]
    fn answers_as_ring_on_every_cctv_edge_case() {
        let vectors: Vec<Vector> = serde_json::from_str(include_str!(
            "../tests/data/cctv-ed25519/ed25519vectors.json"
        ))
        .unwrap();
        assert_eq!(vectors.len(), 914);
        let (mut accepted, mut rejected) = (0, 0);
        for vector in &vectors {
            let (key, sig, msg) = (hex(&vector.key), hex(&vector.sig), vector.msg.as_bytes());
            let ours = verify(&key, msg, &sig);
            assert_eq!(
                ours,
                ring_verifies(&key, msg, &sig),
                "vector {}",
                vector.number
            );
            let flags = vector.flags.as_deref().unwrap_or_default();
            let refused = flags
                .iter()
                .any(|f| f == "non_canonical_R" || f == "low_order_residue");
            assert_eq!(ours, !refused, "vector {}: {flags:?}", vector.number);
            match ours {
                true => accepted += 1,
                false => rejected += 1,
            }
        }
        // Both outcomes are exercised, many times.
        assert!(accepted > 100 && rejected > 100, "{accepted} / {rejected}");
    }

    /// RFC 8032 section 7.1, TEST 1 to 3: the signatures verify, and with any one bit of the
    /// key, the message or the signature flipped, neither this verification nor `ring`'s does.
    #[test]
    fn rfc8032_vectors_verify_and_every_flipped_bit_fails() {
        let vectors = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (key, message, signature) in vectors {
            let (key, message, signature) = (hex(key), hex(message), hex(signature));
            assert!(verify(&key, &message, &signature));
            for part in 0..3 {
                let len = [key.len(), message.len(), signature.len()][part];
                for bit in 0..len * 8 {
                    let (mut k, mut m, mut s) = (key.clone(), message.clone(), signature.clone());
                    [&mut k, &mut m, &mut s][part][bit / 8] ^= 1 << (bit % 8);
                    assert!(!verify(&k, &m, &s), "part {part}, bit {bit}");
                    assert!(!ring_verifies(&k, &m, &s), "part {part}, bit {bit}");
                }
            }
        }
    }

    /// More keys than a thread keeps, used in turn and crossed: each signature verifies under
    /// its own key only, whatever the thread decoded before.
    #[test]
    fn the_decoded_keys_never_answer_for_another_key() {
        let random = SystemRandom::new();
        let pairs: Vec<Ed25519KeyPair> = (0..DECODED_PER_THREAD * 2 + 3)
            .map(|_| {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random).unwrap();
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
            })
            .collect();
        let message = b"the same message under every key";
        let signatures: Vec<_> = pairs.iter().map(|pair| pair.sign(message)).collect();
        for round in 0..3 {
            for (i, pair) in pairs.iter().enumerate() {
                let key = pair.public_key().as_ref();
                assert!(verify(key, message, signatures[i].as_ref()), "{round}/{i}");
                let other = &signatures[(i + 1 + round) % pairs.len()];
                assert!(!verify(key, message, other.as_ref()), "{round}/{i}");
            }
        }
    }

    /// A key and its negation share their `y` and differ in the sign bit only: each signature
    /// verifies under its own key and not under the other, in either order of first use (a
    /// thread keeping decoded keys by `y`, or by the bytes without the sign bit, would answer
    /// for the wrong one).
    #[test]
    fn a_key_and_its_negation_are_kept_apart() {
        use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;

        let random = SystemRandom::new();
        let scalar = || {
            let mut wide = [0u8; 64];
            ring::rand::SecureRandom::fill(&random, &mut wide).unwrap();
            Scalar::from_bytes_mod_order_wide(&wide)
        };
        // RFC 8032's signing equation over a raw scalar: S = r + k·a.
        let sign = |a: &Scalar, key: &[u8; 32], message: &[u8]| {
            let r = scalar();
            let big_r = (ED25519_BASEPOINT_TABLE * &r).compress();
            let mut hash = ring::digest::Context::new(&ring::digest::SHA512);
            hash.update(big_r.as_bytes());
            hash.update(key);
            hash.update(message);
            let k = Scalar::from_bytes_mod_order_wide(hash.finish().as_ref().try_into().unwrap());
            [big_r.to_bytes(), (r + k * a).to_bytes()].concat()
        };
        let message = b"signed under a key and under its negation";
        for first in [0, 1] {
            let a = scalar();
            let key = (ED25519_BASEPOINT_TABLE * &a).compress().to_bytes();
            let negated = (ED25519_BASEPOINT_TABLE * &-a).compress().to_bytes();
            assert_eq!(key[..31], negated[..31]);
            assert_eq!(key[31] ^ negated[31], 0x80);
            let keys = [
                (key, sign(&a, &key, message)),
                (negated, sign(&-a, &negated, message)),
            ];
            for i in [first, 1 - first, first, 1 - first] {
                let (own, signature) = &keys[i];
                let (other, _) = &keys[1 - i];
                assert!(ring_verifies(own, message, signature));
                assert!(verify(own, message, signature), "{first}/{i}");
                assert!(!verify(other, message, signature), "{first}/{i}");
            }
        }
    }

    /// Malformed input does not verify: wrong lengths, a key that is no point, `S` at or above
    /// the group order.
    #[test]
    fn malformed_input_does_not_verify() {
        let random = SystemRandom::new();
        let pair =
            Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&random).unwrap().as_ref())
                .unwrap();
        let key = pair.public_key().as_ref();
        let signature = pair.sign(b"m");
        let signature = signature.as_ref();
        assert!(verify(key, b"m", signature));
        assert!(!verify(&key[..31], b"m", signature));
        assert!(!verify(&[key, &[0]].concat(), b"m", signature));
        assert!(!verify(key, b"m", &signature[..63]));
        assert!(!verify(key, b"m", &[signature, &[0]].concat()));
        // y = 2 is not the y of any point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(CompressedEdwardsY(not_a_point).decompress().is_none());
        assert!(!verify(&not_a_point, b"m", signature));
        // S + L: the same scalar modulo L, refused as non-canonical by both.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut s_plus_l = signature.to_vec();
        let mut carry = 0u16;
        for (byte, l) in s_plus_l[32..].iter_mut().zip(L) {
            let sum = u16::from(*byte) + u16::from(l) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!verify(key, b"m", &s_plus_l));
        assert!(!ring_verifies(key, b"m", &s_plus_l));
    }
}
