// Opens a response the bank sealed to this device, with WebCrypto alone (browsers, Node 20+,
// Deno). The format is docs/AUDIT_FORMAT.md section 1.7: HPKE (RFC 9180) base mode,
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, single-shot; `info` binds the response
// to its context, the envelope's device thumbprint is the AEAD's associated data, and the
// plaintext is padded to a fixed bucket.
//
//   import { openSealedResponse } from "./open-sealed-response.mjs";
//   const keys = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
//   const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
//   // ... register `publicKey` at the bank, then for each response the platform relays:
//   const { context, data } = await openSealedResponse(relayed, keys.privateKey, publicKey);
//   // data: {scope: "balance", data: {...}}; compare `context` (checked, not the relayed JSON)
//   // with what you asked for, and its sequence with the last one you accepted.
//
// The private key can stay non-extractable: only deriveBits is used. Nothing here sends
// anything anywhere.

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

/** The label that starts every response's HPKE `info`. */
export const INFO_LABEL = "consent-broker sealed response v1";
/** The padded plaintext sizes; beyond the last, a multiple of it. */
export const PAD_BUCKETS = [512, 2048, 8192, 32768];

const KEM_SUITE = new Uint8Array([0x4b, 0x45, 0x4d, 0x00, 0x20]); // "KEM" || 0x0020
const HPKE_SUITE = new Uint8Array([0x48, 0x50, 0x4b, 0x45, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);
// HKDF's default salt: HashLen zero bytes (an empty HMAC key is the same key, but WebCrypto
// refuses to import an empty one).
const NO_SALT = new Uint8Array(32);

/** Why a response could not be opened: `kind` is one of the three below. */
export class OpenError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "OpenError";
    /** "not_for_this_device" | "does_not_open" | "malformed" */
    this.kind = kind;
  }
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function u16(n) {
  return new Uint8Array([(n >> 8) & 0xff, n & 0xff]);
}

function base64url(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unbase64url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new OpenError("does_not_open", "not unpadded base64url");
  }
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

async function hmac(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

// LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite || label || ikm)
async function labeledExtract(suite, salt, label, ikm) {
  return hmac(salt.length ? salt : NO_SALT, concat(utf8.encode("HPKE-v1"), suite, utf8.encode(label), ikm));
}

// LabeledExpand(prk, label, info, L) for L <= 32: the first block of HKDF-Expand.
async function labeledExpand(suite, prk, label, info, length) {
  const labeled = concat(u16(length), utf8.encode("HPKE-v1"), suite, utf8.encode(label), info);
  const block = await hmac(prk, concat(labeled, new Uint8Array([1])));
  return block.slice(0, length);
}

const CONTEXT_FIELDS = ["holder", "consent", "token_id", "scope", "account"];
const SCOPES = ["balance", "alerts", "transactions"];
/** The largest padded response (1 MiB) and the most envelopes, as in Rust. */
export const MAX_RESPONSE_BYTES = 32 * 32768;
export const MAX_ENVELOPES = 16;

/**
 * The context exactly as Rust reads it, or an `OpenError("malformed")`: an object with these six
 * members and no other, ids as non-empty strings (at most 8 KiB), a known scope, and the
 * sequence a non-negative safe integer (a larger one, or one relayed as a string, would not be
 * the number the bank sealed under). Returns a frozen copy: compare that, not the relayed JSON.
 */
export function checkedContext(context) {
  const malformed = (why) => new OpenError("malformed", `context: ${why}`);
  if (context === null || typeof context !== "object" || Array.isArray(context)) throw malformed("not an object");
  const keys = Object.keys(context).sort();
  if (keys.join() !== [...CONTEXT_FIELDS, "sequence"].sort().join()) throw malformed("unexpected members");
  for (const field of CONTEXT_FIELDS) {
    const value = context[field];
    if (typeof value !== "string" || value.length === 0 || value.length > 8192) throw malformed(field);
  }
  if (!SCOPES.includes(context.scope)) throw malformed("scope");
  if (!Number.isSafeInteger(context.sequence) || context.sequence < 0) throw malformed("sequence");
  return Object.freeze(Object.fromEntries([...CONTEXT_FIELDS, "sequence"].map((f) => [f, context[f]])));
}

/** The HPKE `info` of a response context (AUDIT_FORMAT.md 1.7). */
export function responseInfo(context) {
  const checked = checkedContext(context);
  const parts = [utf8.encode(INFO_LABEL)];
  for (const field of CONTEXT_FIELDS) {
    const bytes = utf8.encode(checked[field]);
    parts.push(u16(bytes.length), bytes);
  }
  const sequence = new Uint8Array(8);
  new DataView(sequence.buffer).setBigUint64(0, BigInt(checked.sequence));
  parts.push(sequence);
  return concat(...parts);
}

/** The RFC 7638 thumbprint of a raw X25519 public key: how the bank names the device. */
export async function thumbprint(publicKeyRaw) {
  const jwk = `{"crv":"X25519","kty":"OKP","x":"${base64url(publicKeyRaw)}"}`;
  return base64url(new Uint8Array(await subtle.digest("SHA-256", utf8.encode(jwk))));
}

/**
 * The confirmation code the device shows while the subject registers it in the bank's session:
 * four groups of five digits from the thumbprint, the same as the bank shows for the key it
 * received. Compare every group.
 */
export async function confirmationCode(publicKeyRaw) {
  const digest = new Uint8Array(
    await subtle.digest("SHA-256", utf8.encode(await thumbprint(publicKeyRaw))),
  );
  let value = 0n;
  for (const byte of digest.slice(0, 9)) value = (value << 8n) | BigInt(byte);
  const digits = (value % 10n ** 20n).toString().padStart(20, "0");
  return digits.match(/.{5}/g).join("-");
}

function unpad(padded) {
  const bucketed = PAD_BUCKETS.includes(padded.length) || padded.length % 32768 === 0;
  if (!bucketed || padded.length < 4) return null;
  const length = new DataView(padded.buffer, padded.byteOffset).getUint32(0);
  if (length > padded.length - 4) return null;
  if (padded.subarray(4 + length).some((b) => b !== 0)) return null;
  return padded.subarray(4, 4 + length);
}

function isFor(data, context) {
  if (data === null || typeof data !== "object" || data.scope !== context.scope) return false;
  if (data.scope === "balance") return data.data?.account === context.account;
  return Array.isArray(data.data) && data.data.every((item) => item?.account === context.account);
}

/**
 * Opens `sealed` (the bank's response as relayed: `{delivery: "sealed", context, envelopes}`,
 * or the same without `delivery`) with this device's X25519 key pair: `privateKey` a CryptoKey
 * usable for deriveBits, `publicKeyRaw` its 32-byte public key. Returns `{context, data}` once
 * the envelope opened under the response's own context and the data is of that context's scope
 * and account: `context` the checked, frozen context (compare it with what you asked for: your
 * consent and account, and a `sequence` above the last you accepted from this bank, which
 * refuses a replayed response), `data` the response (`{scope, data}`; a balance carries its
 * `as_of`). Throws an `OpenError` otherwise.
 */
export async function openSealedResponse(sealed, privateKey, publicKeyRaw) {
  if (sealed === null || typeof sealed !== "object") throw new OpenError("malformed", "not an object");
  if (sealed.delivery !== undefined && sealed.delivery !== "sealed") {
    throw new OpenError("malformed", "not a sealed response");
  }
  if (Object.keys(sealed).some((k) => !["delivery", "context", "envelopes"].includes(k))) {
    throw new OpenError("malformed", "unexpected members");
  }
  const { envelopes } = sealed;
  const context = checkedContext(sealed.context);
  if (!Array.isArray(envelopes) || envelopes.length > MAX_ENVELOPES) {
    throw new OpenError("malformed", "no envelopes, or too many");
  }
  const pkR = new Uint8Array(publicKeyRaw);
  const device = await thumbprint(pkR);
  const envelope = envelopes.find((e) => e?.device === device);
  if (!envelope) throw new OpenError("not_for_this_device", "the response is not sealed to this device");
  if (Object.keys(envelope).sort().join() !== "ciphertext,device,enc") {
    throw new OpenError("malformed", "unexpected envelope members");
  }
  if (
    typeof envelope.enc !== "string" ||
    envelope.enc.length !== 43 ||
    typeof envelope.ciphertext !== "string" ||
    envelope.ciphertext.length > Math.ceil((MAX_RESPONSE_BYTES + 16) / 3) * 4
  ) {
    throw new OpenError("does_not_open", "enc or ciphertext of the wrong size");
  }
  const enc = unbase64url(envelope.enc);
  const ciphertext = unbase64url(envelope.ciphertext);
  if (enc.length !== 32) throw new OpenError("does_not_open", "enc is not an X25519 key");

  let padded;
  try {
    const ephemeral = await subtle.importKey("raw", enc, { name: "X25519" }, false, []);
    const dh = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: ephemeral }, privateKey, 256));
    if (dh.every((b) => b === 0)) throw new Error("low-order point");
    // DHKEM ExtractAndExpand
    const eaePrk = await labeledExtract(KEM_SUITE, new Uint8Array(), "eae_prk", dh);
    const shared = await labeledExpand(KEM_SUITE, eaePrk, "shared_secret", concat(enc, pkR), 32);
    // Base-mode key schedule
    const pskIdHash = await labeledExtract(HPKE_SUITE, new Uint8Array(), "psk_id_hash", new Uint8Array());
    const infoHash = await labeledExtract(HPKE_SUITE, new Uint8Array(), "info_hash", responseInfo(context));
    const scheduleContext = concat(new Uint8Array([0]), pskIdHash, infoHash);
    const secret = await labeledExtract(HPKE_SUITE, shared, "secret", new Uint8Array());
    const key = await labeledExpand(HPKE_SUITE, secret, "key", scheduleContext, 16);
    const nonce = await labeledExpand(HPKE_SUITE, secret, "base_nonce", scheduleContext, 12);
    const aesKey = await subtle.importKey("raw", key, { name: "AES-GCM" }, false, ["decrypt"]);
    padded = new Uint8Array(
      await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: utf8.encode(device) }, aesKey, ciphertext),
    );
  } catch {
    throw new OpenError("does_not_open", "the response does not open: altered, or moved to another context");
  }
  const json = unpad(padded);
  if (json === null) throw new OpenError("malformed", "not a padded response");
  let data;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
  } catch {
    throw new OpenError("malformed", "not JSON");
  }
  if (!isFor(data, context)) throw new OpenError("malformed", "not the context's scope and account");
  return { context, data };
}
