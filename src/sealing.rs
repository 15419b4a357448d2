//! Responses sealed to the subject's devices: the platform relays them and cannot read them.
//!
//! The bank seals the data of each served access ([`AccountData`] as JSON) once per device the
//! subject registered at the bank and named in the approval, with HPKE ([`crate::hpke`]). The
//! HPKE `info` binds the response to its [`ResponseContext`] (the bank, the consent, the token,
//! the scope, the account and the journal entry that recorded the access), so a sealed response
//! cannot be replayed into another consent or conversation; the AEAD's associated data binds
//! each envelope to its device. The plaintext is padded to a fixed bucket size
//! ([`PAD_BUCKETS`]), so the ciphertext's length does not reveal a balance's magnitude, and
//! reveals how many alerts or transactions there are only to the bucket (one alert or five: 512
//! bytes; six to about twenty: 2,048).
//!
//! The device opens with [`open_response`] (or `js/open-sealed-response.mjs` in a browser, with
//! WebCrypto alone) and checks the context against what it asked for.

use serde::{Deserialize, Serialize};

use crate::data::AccountData;
use crate::hpke::{self, DevicePublicKey, DeviceSecretKey, HpkeError, KEY_LEN};
use crate::ids::{AccountId, ConsentId, HolderId};
use crate::jws;
use crate::random::RandomSource;
use crate::token::TokenPart;
use crate::vocab::Scope;

/// The label that starts every response's HPKE `info`.
pub const INFO_LABEL: &[u8] = b"consent-broker sealed response v1";
/// The padded plaintext sizes: the smallest that holds the response is used; beyond the last, a
/// multiple of it.
pub const PAD_BUCKETS: [usize; 4] = [512, 2_048, 8_192, LARGEST_BUCKET];
const LARGEST_BUCKET: usize = 32_768;
/// The largest padded response: 32 of the largest buckets (1 MiB). The bank refuses to seal more
/// ([`HpkeError::SealFailed`]); the device refuses a larger ciphertext before decoding it.
pub const MAX_RESPONSE_BYTES: usize = 32 * LARGEST_BUCKET;
/// The most envelopes a response carries (devices per subject that an approval can name).
pub const MAX_ENVELOPES: usize = 16;

/// How a served access's data left the bank, as its journal entry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Sealed to these devices (RFC 7638 thumbprints): the platform relayed what it cannot read.
    Sealed {
        /// The devices.
        devices: Vec<String>,
    },
    /// Unsealed: for a purpose both the bank's policy and the subject's approval allow.
    Plaintext,
}

/// What the bank's [`serve`](crate::Bank::serve) answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "delivery", rename_all = "snake_case")]
pub enum Response {
    /// Sealed to the subject's devices (the default).
    Sealed(SealedResponse),
    /// Unsealed, where the policy and the subject allowed it.
    Plaintext(AccountData),
}

/// What a sealed response is about, bound into its HPKE `info`. Sent in the clear beside the
/// envelopes: the platform knows all of it already (it holds the token that named it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseContext {
    /// The bank that sealed it.
    pub holder: HolderId,
    /// The consent it was served under.
    pub consent: ConsentId,
    /// The access token's `jti`.
    pub token_id: String,
    /// The scope of the data.
    pub scope: Scope,
    /// The account.
    pub account: AccountId,
    /// The bank journal's entry that recorded the access.
    pub sequence: u64,
}

impl ResponseContext {
    /// The HPKE `info`: [`INFO_LABEL`], then each field as a 2-byte big-endian length and its
    /// bytes (UTF-8), the sequence as 8 bytes big-endian.
    pub fn info(&self) -> Vec<u8> {
        let mut info = INFO_LABEL.to_vec();
        for field in [
            self.holder.as_str(),
            self.consent.as_str(),
            &self.token_id,
            self.scope.as_str(),
            self.account.as_str(),
        ] {
            let length = u16::try_from(field.len()).unwrap_or(u16::MAX);
            info.extend_from_slice(&length.to_be_bytes());
            info.extend_from_slice(field.as_bytes());
        }
        info.extend_from_slice(&self.sequence.to_be_bytes());
        info
    }
}

/// The response sealed to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The device key's RFC 7638 thumbprint (also the AEAD's associated data).
    pub device: String,
    /// HPKE `enc`, unpadded base64url.
    pub enc: String,
    /// The ciphertext with its tag, unpadded base64url.
    pub ciphertext: String,
}

/// A response sealed to the subject's devices, as the platform relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedResponse {
    /// What it is about.
    pub context: ResponseContext,
    /// One per device.
    pub envelopes: Vec<Envelope>,
}

/// Why a response could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No envelope is for this device.
    #[error("the response is not sealed to this device")]
    NotForThisDevice,
    /// The envelope does not open: altered, or its context is not the one it was sealed with.
    #[error("the response does not open: altered, or moved to another context")]
    DoesNotOpen,
    /// It opened, but is not a padded response of the context's scope and account.
    #[error("the response is malformed")]
    Malformed,
}

/// The plaintext padded to its bucket: 4 bytes of length, the JSON, zeros.
fn pad(json: &[u8]) -> Vec<u8> {
    let needed = json.len().saturating_add(4);
    let size = PAD_BUCKETS
        .iter()
        .copied()
        .find(|bucket| *bucket >= needed)
        .unwrap_or_else(|| {
            needed
                .div_ceil(LARGEST_BUCKET)
                .saturating_mul(LARGEST_BUCKET)
        });
    let mut padded = u32::try_from(json.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    padded.extend_from_slice(json);
    padded.resize(size, 0);
    padded
}

fn unpad(padded: &[u8]) -> Option<&[u8]> {
    let (length, rest) = padded.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
    let (json, padding) = (rest.get(..length)?, rest.get(length..)?);
    let bucketed =
        PAD_BUCKETS.contains(&padded.len()) || padded.len().is_multiple_of(LARGEST_BUCKET);
    (bucketed && padding.iter().all(|byte| *byte == 0)).then_some(json)
}

/// Seals `data` for `context` to each of `devices`.
///
/// # Errors
/// [`HpkeError`] (no randomness, a low-order device key).
pub fn seal_response(
    data: &AccountData,
    context: &ResponseContext,
    devices: &[DevicePublicKey],
    random: &dyn RandomSource,
) -> Result<SealedResponse, HpkeError> {
    let json = serde_json::to_vec(data).map_err(|_| HpkeError::SealFailed)?;
    let plaintext = pad(&json);
    if plaintext.len() > MAX_RESPONSE_BYTES || devices.len() > MAX_ENVELOPES {
        return Err(HpkeError::SealFailed);
    }
    let info = context.info();
    let envelopes = devices
        .iter()
        .map(|device| {
            let thumbprint = device.thumbprint();
            let sealed = hpke::seal(device, &info, thumbprint.as_bytes(), &plaintext, random)?;
            Ok(Envelope {
                device: thumbprint,
                enc: jws::encode(&sealed.enc),
                ciphertext: jws::encode(&sealed.ciphertext),
            })
        })
        .collect::<Result<_, HpkeError>>()?;
    Ok(SealedResponse {
        context: context.clone(),
        envelopes,
    })
}

/// Opens `sealed` with the device's key: the data, once the envelope opened under the response's
/// own context and the data is of that context's scope and account. The caller compares the
/// context with what it asked for (its consent, its account, a sequence it has not seen).
///
/// # Errors
/// [`OpenError`].
pub fn open_response(
    sealed: &SealedResponse,
    device: &DeviceSecretKey,
) -> Result<AccountData, OpenError> {
    if sealed.envelopes.len() > MAX_ENVELOPES {
        return Err(OpenError::Malformed);
    }
    let thumbprint = device.public_key().thumbprint();
    let envelope = sealed
        .envelopes
        .iter()
        .find(|envelope| envelope.device == thumbprint)
        .ok_or(OpenError::NotForThisDevice)?;
    // Unpadded base64url: 43 characters for the key, the tag and the largest response for the
    // ciphertext. Anything longer is refused before it is decoded.
    if envelope.enc.len() != 43
        || envelope.ciphertext.len() > (MAX_RESPONSE_BYTES + hpke::TAG_LEN).div_ceil(3) * 4
    {
        return Err(OpenError::DoesNotOpen);
    }
    let enc: [u8; KEY_LEN] = jws::decode(&envelope.enc, TokenPart::Header)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(OpenError::DoesNotOpen)?;
    let ciphertext = jws::decode(&envelope.ciphertext, TokenPart::Payload)
        .map_err(|_| OpenError::DoesNotOpen)?;
    let padded = hpke::open(
        device,
        &enc,
        &sealed.context.info(),
        thumbprint.as_bytes(),
        &ciphertext,
    )
    .map_err(|_| OpenError::DoesNotOpen)?;
    let json = unpad(&padded).ok_or(OpenError::Malformed)?;
    let data: AccountData = serde_json::from_slice(json).map_err(|_| OpenError::Malformed)?;
    if !data.is_for(sealed.context.scope, &sealed.context.account) {
        return Err(OpenError::Malformed);
    }
    Ok(data)
}
