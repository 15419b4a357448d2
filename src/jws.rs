//! Strict parsing of compact JWS (RFC 7515) shared by the access token and the DPoP proof: exact
//! segment count, unpadded base64url, JSON objects, typed claims, and the Ed25519 signature check
//! by the crate's one verification (`crate::ed25519`; signing goes through jsonwebtoken's
//! process-wide provider). Each caller maps a [`JwsProblem`] into its own error type, so that a
//! refusal names the part and claim at fault.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::keys::Ed25519PublicKey;
use crate::token::{ClaimProblem, MAX_UNIX_TIME, TokenPart};

/// What is wrong with a compact JWS, before any meaning is given to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwsProblem {
    /// Longer than the caller allows.
    TooLarge { len: usize },
    /// Not three dot-separated segments.
    SegmentCount { segments: usize },
    /// A segment is not unpadded base64url.
    Base64(TokenPart),
    /// The header or payload is not a UTF-8 JSON object.
    Json(TokenPart),
    /// A claim is missing, mistyped or invalid.
    Claim {
        claim: String,
        problem: ClaimProblem,
    },
}

/// A compact JWS split into its segments, with only the header decoded: the caller checks the
/// header (algorithm, type, key) before anything else is decoded.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    pub header: Map<String, Value>,
    payload_b64: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    signature_b64: &'a str,
}

/// Splits `jws` and decodes its header, refusing anything over `max_len` bytes first.
pub(crate) fn split(jws: &str, max_len: usize) -> Result<Compact<'_>, JwsProblem> {
    if jws.len() > max_len {
        return Err(JwsProblem::TooLarge { len: jws.len() });
    }
    let mut segments = jws.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwsProblem::SegmentCount {
            segments: jws.split('.').count(),
        });
    };
    let header = object(&decode(header_b64, TokenPart::Header)?, TokenPart::Header)?;
    let signing_input = jws
        .get(..header_b64.len() + 1 + payload_b64.len())
        .unwrap_or_default();
    Ok(Compact {
        header,
        payload_b64,
        signing_input,
        signature_b64,
    })
}

impl Compact<'_> {
    /// The payload, *unverified*: only to learn which keys to verify it with (an issuer), never
    /// to act on.
    pub(crate) fn unverified_payload(&self) -> Result<Map<String, Value>, JwsProblem> {
        object(
            &decode(self.payload_b64, TokenPart::Payload)?,
            TokenPart::Payload,
        )
    }

    /// Checks the signature with `key` and returns the payload's bytes, for
    /// [`Members::parse`]: `Ok(None)` when the signature does not verify (nothing of the payload
    /// is interpreted then). Both segments are decoded before the signature is checked.
    pub(crate) fn open(&self, key: &Ed25519PublicKey) -> Result<Option<Vec<u8>>, JwsProblem> {
        let signature = decode(self.signature_b64, TokenPart::Signature)?;
        let payload = decode(self.payload_b64, TokenPart::Payload)?;
        if !crate::ed25519::verify(key.as_bytes(), self.signing_input.as_bytes(), &signature) {
            return Ok(None);
        }
        Ok(Some(payload))
    }

    /// [`Compact::open`], with the payload parsed as a JSON object.
    pub(crate) fn open_object(
        &self,
        key: &Ed25519PublicKey,
    ) -> Result<Option<Map<String, Value>>, JwsProblem> {
        self.open(key)?
            .map(|payload| object(&payload, TokenPart::Payload))
            .transpose()
    }
}

/// A JSON object's members in their order, for reading claims by name: the same answers as
/// [`serde_json::Map`] (the last of a duplicated name counts, as RFC 7519 §4 allows), without
/// its tree and with strings borrowed from the text wherever they have no escape; but a member
/// named with `serde_json`'s private marker is refused (see [`PRIVATE_MARKER`]). A token's
/// claims are read on every request the gate serves: parsed into a `Map`, they took a tenth of
/// a full token verification (`callgrind`), as much as everything else besides the signature.
#[derive(Debug)]
pub(crate) struct Members<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

/// One member's value.
#[derive(Debug, PartialEq)]
pub(crate) enum Member<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// Any other value, exactly as [`serde_json::Value`] reads it.
    Other(Value),
}

impl<'a> Members<'a> {
    /// Parses `bytes` as a JSON object: refused where [`serde_json::Value`] would refuse it or
    /// read it as something other than an object, and where a member is named with
    /// [`PRIVATE_MARKER`].
    pub(crate) fn parse(bytes: &'a [u8], part: TokenPart) -> Result<Self, JwsProblem> {
        serde_json::from_slice(bytes).map_err(|_| JwsProblem::Json(part))
    }

    /// The value of the last member named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Member<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// The prefix of the member names with which `serde_json` marks its private values (a raw
/// value, an arbitrary-precision number). With its `raw_value` feature on (which a dependency may
/// turn on), a `Value` read from an object whose first member is `$serde_json::private::RawValue`
/// becomes the JSON text of that member's string, so that a payload could carry its claims
/// wrapped, and be read one way in one build and another way in the next. [`Members`] refuses
/// any member so named, in every build.
const PRIVATE_MARKER: &str = "$serde_json::private::";

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(16);
                while let Some(Name(name)) = map.next_key()? {
                    if name.starts_with(PRIVATE_MARKER) {
                        return Err(serde::de::Error::custom("a member of serde_json's own"));
                    }
                    let value: Member<'de> = map.next_value()?;
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A member's name, borrowed where it has no escape.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Text).map(Name)
    }
}

/// Reads a string, borrowed where the input allows it.
struct Text;

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }
    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }
    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A string as [`Text`] reads it; anything else as `serde_json::Value`'s own visitor
        /// builds it (the same calls, or the same visitor behind a forwarding deserializer).
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Member<'de>, E> {
                Text.visit_borrowed_str(text).map(Member::Str)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Member<'de>, E> {
                Text.visit_str(text).map(Member::Str)
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Member<'de>, E> {
                Text.visit_string(text).map(Member::Str)
            }
            fn visit_bool<E>(self, value: bool) -> Result<Member<'de>, E> {
                Ok(Member::Other(Value::Bool(value)))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Member<'de>, E> {
                Ok(Member::Other(Value::Number(value.into())))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Member<'de>, E> {
                Ok(Member::Other(Value::Number(value.into())))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Member<'de>, E> {
                Ok(Member::Other(
                    Number::from_f64(value).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_unit<E>(self) -> Result<Member<'de>, E> {
                Ok(Member::Other(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Member<'de>, E> {
                Ok(Member::Other(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Member<'de>, D::Error> {
                Value::deserialize(inner).map(Member::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Member::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Member::Other)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// The first of `members` the header has, if any: members that point at key material elsewhere
/// and are never followed.
pub(crate) fn first_present(
    header: &Map<String, Value>,
    members: &[&'static str],
) -> Option<&'static str> {
    members
        .iter()
        .copied()
        .find(|member| header.contains_key(*member))
}

/// A compact JWS of `header` and `payload` (JSON texts) signed with `key` (EdDSA) through
/// jsonwebtoken's process-wide provider; `None` when the provider cannot sign.
pub(crate) fn sign_eddsa(
    header: &str,
    payload: &str,
    key: &crate::keys::SigningKey,
) -> Option<String> {
    let input = format!(
        "{}.{}",
        encode(header.as_bytes()),
        encode(payload.as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding_key(), Algorithm::EdDSA).ok()?;
    Some(format!("{input}.{signature}"))
}

/// Unpadded base64url of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes one segment: unpadded base64url only (no `+`, `/` or `=`, canonical trailing bits).
/// The decoder refuses every byte outside the base64url alphabet itself (a test holds it to
/// that), so no separate scan of the segment runs first.
pub(crate) fn decode(segment: &str, part: TokenPart) -> Result<Vec<u8>, JwsProblem> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsProblem::Base64(part))
}

/// Whether `text` uses only the base64url alphabet (no padding).
pub(crate) fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A header or payload as a `Map`: read by [`Members`] (so a member named with
/// [`PRIVATE_MARKER`] is refused here too, in every build), the last duplicate counting.
fn object(bytes: &[u8], part: TokenPart) -> Result<Map<String, Value>, JwsProblem> {
    let mut map = Map::new();
    for (name, value) in Members::parse(bytes, part)?.0 {
        let value = match value {
            Member::Str(text) => Value::String(text.into_owned()),
            Member::Other(value) => value,
        };
        map.insert(name.into_owned(), value);
    }
    Ok(map)
}

/// A claim error.
pub(crate) fn claim_error(claim: &str, problem: ClaimProblem) -> JwsProblem {
    JwsProblem::Claim {
        claim: claim.to_owned(),
        problem,
    }
}

/// A required string claim.
pub(crate) fn string_claim<'a>(claims: &'a Members<'_>, name: &str) -> Result<&'a str, JwsProblem> {
    match claims.get(name) {
        None => Err(claim_error(name, ClaimProblem::Missing)),
        Some(Member::Str(value)) => Ok(value),
        Some(Member::Other(_)) => Err(claim_error(name, ClaimProblem::WrongType)),
    }
}

/// A required string claim parsed as `T`.
pub(crate) fn parsed_claim<T: std::str::FromStr>(
    claims: &Members<'_>,
    name: &str,
) -> Result<T, JwsProblem> {
    string_claim(claims, name)?
        .parse()
        .map_err(|_| claim_error(name, ClaimProblem::Invalid))
}

/// A required NumericDate claim: a whole number of seconds in `0..=MAX_UNIX_TIME`.
pub(crate) fn time_claim(claims: &Members<'_>, name: &str) -> Result<i64, JwsProblem> {
    let Some(value) = claims.get(name) else {
        return Err(claim_error(name, ClaimProblem::Missing));
    };
    let Member::Other(Value::Number(number)) = value else {
        return Err(claim_error(name, ClaimProblem::WrongType));
    };
    if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
        // serde_json reads an integer too large for 64 bits as a float, so a float outside the
        // i64 range is an absurd time, whatever its notation; inside it, a float is the wrong
        // type (NumericDate here is a whole number of seconds).
        // `i64::MAX as f64` rounds to 2^63, the first magnitude an i64 cannot hold.
        let in_range = float.abs() < i64::MAX as f64;
        let problem = if in_range {
            ClaimProblem::WrongType
        } else {
            ClaimProblem::Invalid
        };
        return Err(claim_error(name, problem));
    }
    match number.as_i64() {
        Some(seconds) if (0..=MAX_UNIX_TIME).contains(&seconds) => Ok(seconds),
        _ => Err(claim_error(name, ClaimProblem::Invalid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `Map` answers for `name`, and what `Members` answers, as the same `Value`.
    fn both(map: &Map<String, Value>, members: &Members<'_>, name: &str) -> (Value, Value) {
        let old = map.get(name).cloned().unwrap_or(Value::Null);
        let new = match members.get(name) {
            None => Value::Null,
            Some(Member::Str(text)) => Value::String(text.to_string()),
            Some(Member::Other(value)) => value.clone(),
        };
        // A member present with `null` and one absent differ: keep that apart too.
        let present = (map.contains_key(name), members.get(name).is_some());
        assert_eq!(present.0, present.1, "presence of {name:?}");
        (old, new)
    }

    const NAMES: &[&str] = &[
        "iss", "aud", "sub", "cnf", "iat", "exp", "jti", "a", "", "é", "\u{0}",
    ];

    /// The `Map` path as it was before `Members`: the reference the tests compare with.
    fn old_object(bytes: &[u8]) -> Result<Map<String, Value>, JwsProblem> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(JwsProblem::Json(TokenPart::Payload)),
        }
    }

    /// The names of an object's members as `serde_json` reads them (escapes undone), whatever
    /// their values; `None` when the text is no object.
    fn member_names(text: &[u8]) -> Option<Vec<String>> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    names.push(name);
                }
                Ok(names)
            }
        }
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        deserializer.deserialize_map(Names).ok()
    }

    /// `Members` against `serde_json::Map` on one text: the same refusals, and the same value
    /// for every name; except that a member named with serde_json's private marker is refused
    /// by `Members` whatever `Map` makes of it (which depends on serde_json's features).
    fn agree(text: &[u8]) {
        let map = old_object(text);
        let members = Members::parse(text, TokenPart::Payload);
        let marked = member_names(text)
            .is_some_and(|names| names.iter().any(|name| name.starts_with(PRIVATE_MARKER)));
        let via_members = object(text, TokenPart::Payload);
        if marked {
            assert!(members.is_err(), "{:?}", String::from_utf8_lossy(text));
            assert!(via_members.is_err(), "{:?}", String::from_utf8_lossy(text));
            return;
        }
        // The `Map` that headers, feeds and instructions now get through `Members`.
        assert_eq!(
            via_members.as_ref().ok(),
            map.as_ref().ok(),
            "{:?}",
            String::from_utf8_lossy(text)
        );
        match (&map, &members) {
            (Ok(map), Ok(members)) => {
                let mut names: Vec<&str> = NAMES.to_vec();
                names.extend(map.keys().map(String::as_str));
                names.extend(members.0.iter().map(|(name, _)| name.as_ref()));
                for name in names {
                    let (old, new) = both(map, members, name);
                    assert_eq!(old, new, "{name:?} in {:?}", String::from_utf8_lossy(text));
                }
            }
            (Err(_), Err(_)) => {}
            _ => panic!(
                "one refused and not the other: {:?} / {:?} for {:?}",
                map.as_ref().map(|_| ()),
                members.as_ref().map(|_| ()),
                String::from_utf8_lossy(text)
            ),
        }
    }

    const SEEDS: &[&str] = &[
        r#"{"iss":"broker","aud":"bank","iat":1795251600,"exp":1795251900,"jti":"abcdefghijklmnop","cnf":{"jkt":"x"}}"#,
        r#"{"aud":"other-bank","aud":"bank","aud":5}"#,
        r#"{"a\u0075d":"bank","aud":"x","\u0061ud":"y"}"#,
        r#"{"iat":1.0,"exp":1e400,"nbf":-0,"x":18446744073709551616,"y":9223372036854775808,"z":-9223372036854775809}"#,
        r#"{"jti":"\ud800","iss":"\ud83d\ude00"}"#,
        r#"{"iss":"a\"b\\c\/d\n","sub":"\u00e9"}"#,
        r#"{"$serde_json::private::RawValue":"{\"aud\":\"bank\",\"iss\":\"x\"}"}"#,
        r#"{"$serde_json::private::RawValue":"[1]"}"#,
        r#"{"$serde_json::private::RawValue":5}"#,
        r#"{"aud":"bank","$serde_json::private::RawValue":"{\"aud\":\"x\"}"}"#,
        r#"{"cnf":{"jkt":"a","jkt":"b"},"cnf":{"$serde_json::private::RawValue":"{\"jkt\":1}"}}"#,
        r#"{"a":[1,"two",{"three":[null,true,false]}],"b":null,"c":{}}"#,
        "{}",
        "[]",
        r#""aud""#,
        r#"{"aud":"bank",}"#,
        r#"{"aud":"bank"} "#,
        r#"{"aud":"bank"}x"#,
        " \t\n{\"aud\" : \"bank\" }\n",
        "\u{feff}{\"aud\":\"bank\"}",
    ];

    #[test]
    fn members_answer_exactly_as_a_serde_json_map_on_seeds_and_their_mutations() {
        let mut texts: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
        // Raw bytes no &str can hold: invalid UTF-8 inside and outside strings, control bytes.
        texts.push(b"{\"aud\":\"ba\xffnk\"}".to_vec());
        texts.push(b"{\"au\xc3\":\"bank\"}".to_vec());
        texts.push(b"{\"x\":\"\xed\xa0\x80\",\"aud\":\"bank\"}".to_vec());
        texts.push(b"{\"aud\":\"a\x01b\"}".to_vec());
        texts.push(b"{\"aud\":\"bank\"}\x00".to_vec());
        // Nesting at and beyond serde_json's depth limit.
        for depth in [126, 127, 128, 129, 200] {
            let mut text = b"{\"aud\":\"bank\",\"deep\":".to_vec();
            text.extend(std::iter::repeat_n(b'[', depth));
            text.extend(std::iter::repeat_n(b']', depth));
            text.push(b'}');
            texts.push(text);
        }
        for text in &texts {
            agree(text);
        }
        // Mutations of every seed: bytes replaced, inserted and cut, spans repeated.
        let pieces: &[&[u8]] = &[
            b"\"",
            b"\\",
            b"\\u0075",
            b"\\ud800",
            b"\\udc00",
            b",",
            b":",
            b"{",
            b"}",
            b"[",
            b"]",
            b"1e400",
            b"-0",
            b"1.5",
            b"null",
            b"\xff",
            b"\xc3\xa9",
            b"\"aud\":\"x\",",
            b"\"$serde_json::private::RawValue\":",
            b" ",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for round in 0..40_000_usize {
            let mut text = texts[round % texts.len()].clone();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % (text.len() + 1);
                match next() % 4 {
                    0 if at < text.len() => text[at] = next() as u8,
                    1 => {
                        let piece = pieces[(next() as usize) % pieces.len()];
                        text.splice(at..at, piece.iter().copied());
                    }
                    2 => text.truncate(at),
                    _ => {
                        let end = (at + (next() as usize) % 24).min(text.len());
                        let span = text[at..end].to_vec();
                        text.splice(at..at, span);
                    }
                }
            }
            if old_object(&text).is_ok() {
                accepted += 1;
            }
            agree(&text);
        }
        // The mutations reach both sides of the parser.
        assert!(accepted > 1_000, "{accepted} of 40,000 parsed");
    }

    #[test]
    fn the_decoder_refuses_every_byte_outside_base64url_wherever_it_stands() {
        // Segments of each length class a decoder treats apart (whole quanta, and two or three
        // characters left over), each valid as it is.
        let segments = ["QUJD", "QUJDRA", "QUJDREU", "QUJDREVG", "-_-_"];
        for segment in segments {
            assert!(is_base64url(segment));
            assert!(decode(segment, TokenPart::Payload).is_ok(), "{segment}");
            for byte in 0..=255_u8 {
                let outside = !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
                for at in 0..=segment.len() {
                    for replace in [false, true] {
                        let mut bytes = segment.as_bytes().to_vec();
                        if replace && at < bytes.len() {
                            bytes[at] = byte;
                        } else {
                            bytes.insert(at, byte);
                        }
                        let Ok(text) = std::str::from_utf8(&bytes) else {
                            continue;
                        };
                        if outside {
                            assert_eq!(
                                decode(text, TokenPart::Payload),
                                Err(JwsProblem::Base64(TokenPart::Payload)),
                                "{text:?}"
                            );
                        }
                    }
                }
            }
            // Multi-byte characters, padding in every place, and whitespace.
            for extra in ["é", "=", "==", " ", "\n", "+", "/"] {
                for at in [0, segment.len() / 2, segment.len()] {
                    let text = format!("{}{extra}{}", &segment[..at], &segment[at..]);
                    assert!(decode(&text, TokenPart::Payload).is_err(), "{text:?}");
                }
            }
        }
        // Non-canonical trailing bits are refused too (`QUI` is canonical, `QUJ` is not).
        assert!(decode("QUI", TokenPart::Payload).is_ok());
        assert!(decode("QUJ", TokenPart::Payload).is_err());
    }

    #[test]
    fn claims_wrapped_in_serde_jsons_private_members_are_refused_in_every_build() {
        // With serde_json's `raw_value` feature (which axum turns on), a `Value` unwraps the
        // first: a proof whose claims came wrapped was read as if they were not, and refused for
        // a missing `jti` in a build without the feature. Now it is malformed in every build.
        let wrapped = br#"{"$serde_json::private::RawValue":"{\"jti\":\"abcdefghijklmnop\",\"htm\":\"GET\"}"}"#;
        let named = [
            wrapped.to_vec(),
            br#"{"jti":"abcdefghijklmnop","$serde_json::private::Number":"1"}"#.to_vec(),
            br#"{"\u0024serde_json::private::RawValue":"{}"}"#.to_vec(),
            br#"{"jti":"abcdefghijklmnop","$serde_json::private::anything":1}"#.to_vec(),
        ];
        for text in named {
            assert_eq!(
                Members::parse(&text, TokenPart::Payload).map(|_| ()),
                Err(JwsProblem::Json(TokenPart::Payload)),
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
        // Nested, such a name is a value's business (`Value`'s own visitor reads it), and a name
        // that only resembles the marker is an ordinary member.
        let nested = br#"{"x":{"$serde_json::private::Other":1},"serde_json::private::":2}"#;
        let members = Members::parse(nested, TokenPart::Payload).unwrap();
        assert!(members.get("serde_json::private::").is_some());
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_the_last_duplicate_counts() {
        let text = br#"{"aud":"first","a\u0075d":"second","iss":"b\u0072oker","jti":"abc"}"#;
        let members = Members::parse(text, TokenPart::Payload).unwrap();
        assert_eq!(
            members.get("aud"),
            Some(&Member::Str(Cow::Owned("second".into())))
        );
        assert!(matches!(
            members.get("jti"),
            Some(Member::Str(Cow::Borrowed("abc")))
        ));
        assert!(
            matches!(members.get("iss"), Some(Member::Str(Cow::Owned(iss))) if iss == "broker")
        );
        assert_eq!(
            string_claim(&members, "nbf"),
            Err(claim_error("nbf", ClaimProblem::Missing))
        );
    }
}
