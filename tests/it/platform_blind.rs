//! The platform relays what it cannot read, as a property of the whole story: run
//! `examples/messenger_bank.rs` on SQLite files in a fresh directory, then search every byte the
//! story left outside Alice's phone (the platform's database and its WAL, the log of what the
//! platform relayed, the keys, and the bank's ledger too) for Alice's balance and the fraud
//! alert's text: as text, and inside every run of base64 (standard or URL-safe, at every
//! alignment) and hex that the bytes contain, decoded. Nothing may be found. A positive control
//! checks that the same search finds the figures in what the bank would have sent unsealed.

use std::path::Path;

use base64::Engine as _;
use consent_broker::{AccountData, Scope, SealedResponse, open_response};

use crate::story;

/// Alice's current-account balance and the alert, as the story's bank holds them.
const FIGURES: [&str; 3] = [
    "123456",
    "Card used in two countries within an hour",
    "two countries",
];

/// Every file under `dir`, with its bytes, except under `skip`.
pub(crate) fn files(dir: &Path, skip: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.starts_with(skip) {
            continue;
        }
        if path.is_dir() {
            files(&path, skip, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

/// Maximal runs of bytes in `alphabet`, at least `min` long.
fn runs(bytes: &[u8], alphabet: impl Fn(u8) -> bool, min: usize) -> Vec<&[u8]> {
    bytes
        .split(|b| !alphabet(*b))
        .filter(|run| run.len() >= min)
        .collect()
}

/// Every decoding of the base64 and hex runs in `bytes`, at every alignment.
fn decodings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut decoded = Vec::new();
    let base64_alphabet = |b: u8| b.is_ascii_alphanumeric() || b"+/-_".contains(&b);
    for run in runs(bytes, base64_alphabet, 8) {
        for engine in [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            for offset in 0..4 {
                let Some(rest) = run.get(offset..) else {
                    continue;
                };
                // Whole groups of four only: a partial last group may not decode.
                let rest = &rest[..rest.len() / 4 * 4];
                if let Ok(bytes) = engine.decode(rest) {
                    decoded.push(bytes);
                }
            }
        }
    }
    for run in runs(bytes, |b| b.is_ascii_hexdigit(), 8) {
        for offset in 0..2 {
            let hex = &run[offset..];
            let bytes: Vec<u8> = hex
                .chunks_exact(2)
                .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
                .collect();
            decoded.push(bytes);
        }
    }
    decoded
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Where `figure` appears in `bytes`: as text, or in a decoded run.
pub(crate) fn trace_of(bytes: &[u8], figure: &str) -> Option<&'static str> {
    if contains(bytes, figure) {
        return Some("text");
    }
    decodings(bytes)
        .iter()
        .any(|decoded| contains(decoded, figure))
        .then_some("base64 or hex")
}

#[test]
fn the_search_finds_the_figures_in_what_an_unsealed_response_would_carry() {
    let unsealed = br#"{"scope":"alerts","data":[{"message":"Card used in two countries within an hour","minor_units":123456}]}"#;
    let std = base64::engine::general_purpose::STANDARD.encode(unsealed);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&unsealed[3..]);
    let hex: String = unsealed.iter().map(|b| format!("{b:02X}")).collect();
    for (form, bytes) in [
        ("text", unsealed.to_vec()),
        ("base64", format!("x={std};").into_bytes()),
        ("base64url, shifted", format!("\"{url}\"").into_bytes()),
        ("hex", format!("0x{hex}").into_bytes()),
    ] {
        for figure in FIGURES {
            assert!(
                trace_of(&bytes, figure).is_some(),
                "{figure:?} not found in its {form} form"
            );
        }
    }
}

#[test]
fn nothing_the_platform_stored_holds_alices_balance_or_her_alert() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("platform.sqlite");
    story::tell(&story::Storage::Sqlite(db.clone())).unwrap();

    // Everything the story wrote, except the phone's own directory.
    let phone = db.with_extension("phone");
    let mut stored = Vec::new();
    files(dir.path(), &phone, &mut stored);
    let names: Vec<&str> = stored.iter().map(|(name, _)| name.as_str()).collect();
    let relay_log = db.with_extension("relay.log").display().to_string();
    assert!(names.contains(&relay_log.as_str()), "{names:?}");
    assert!(
        names.iter().any(|name| name.ends_with("platform.sqlite")),
        "{names:?}"
    );

    // The relay log holds the sealed responses themselves: two, each for Alice's phone.
    let log = &stored
        .iter()
        .find(|(name, _)| *name == relay_log)
        .unwrap()
        .1;
    let relayed: Vec<SealedResponse> = std::str::from_utf8(log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(relayed.len(), 2);
    assert_eq!(
        relayed.iter().map(|r| r.context.scope).collect::<Vec<_>>(),
        [Scope::Balance, Scope::Alerts]
    );

    for (name, bytes) in &stored {
        for figure in FIGURES {
            assert_eq!(trace_of(bytes, figure), None, "{name} holds {figure:?}");
        }
    }

    // The phone opens what the platform relayed: the figures were there to find.
    let key: [u8; 32] = std::fs::read(phone.join("alice-phone.x25519"))
        .unwrap()
        .try_into()
        .unwrap();
    let phone = consent_broker::hpke::DeviceSecretKey::from_bytes(key);
    match open_response(&relayed[0], &phone).unwrap() {
        AccountData::Balance(balance) => assert_eq!(balance.available.minor_units, 123_456),
        other => panic!("{other:?}"),
    }
    match open_response(&relayed[1], &phone).unwrap() {
        AccountData::Alerts(alerts) => assert_eq!(alerts[0].message, FIGURES[1]),
        other => panic!("{other:?}"),
    }
}
