// The chat view's script: opens the bank's sealed answers in the page with WebCrypto.
//
// The device key lives only in this browser (here in localStorage under DEVICE_KEY, as the
// X25519 JWK the person's device registered at the bank; a production app keeps it as a
// non-extractable CryptoKey in IndexedDB). The platform's server relays ciphertext only.
import { openSealedResponse, OpenError } from "/chat/open-sealed-response.mjs";

export const DEVICE_KEY = "consent-broker-device-key";

function fromBase64url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function describe(opened) {
  const data = opened.data;
  if (data && data.scope === "balance" && data.data) {
    const money = data.data.available;
    if (money && Number.isInteger(money.minor_units) && typeof money.currency === "string") {
      // Two decimal places: the currencies this demo shows (EUR, GBP, USD) all have two.
      const amount = (money.minor_units / 100).toFixed(2);
      return `Balance of ${opened.context.account}: ${amount} ${money.currency}`;
    }
  }
  return JSON.stringify(data);
}

async function main() {
  const list = document.getElementById("messages");
  if (!list) return;
  const stored = localStorage.getItem(DEVICE_KEY);
  const outputs = list.querySelectorAll("output");
  if (!stored) {
    outputs.forEach((o) => (o.textContent = "this device has no key to open it"));
    return;
  }
  const jwk = JSON.parse(stored);
  const privateKey = await crypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "X25519", d: jwk.d, x: jwk.x },
    { name: "X25519" },
    false,
    ["deriveBits"],
  );
  const publicKeyRaw = fromBase64url(jwk.x);
  const answer = await fetch("/chat/messages", { credentials: "same-origin" });
  const messages = await answer.json();
  for (const [index, sealed] of messages.entries()) {
    const output = document.getElementById(`message-${index}`);
    if (!output) continue;
    try {
      const opened = await openSealedResponse(sealed, privateKey, publicKeyRaw);
      output.textContent = describe(opened);
      output.dataset.opened = JSON.stringify(opened.data);
    } catch (error) {
      output.textContent = error instanceof OpenError ? `does not open: ${error.code}` : "does not open";
    }
  }
  document.body.dataset.chatReady = "true";
}

main().catch(() => {
  document.body.dataset.chatReady = "failed";
});
