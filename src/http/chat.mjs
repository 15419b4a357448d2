// The chat view's script: opens the bank's sealed answers in the page with WebCrypto.
//
// The device key is kept in this browser's IndexedDB as a non-extractable CryptoKey: scripts
// can use it to open answers but cannot read its bytes out. (This script comes from the
// platform's server: a platform that serves a different one could still open answers in the
// page. Sealing keeps the answers out of the platform's servers, storage and logs; to be
// independent of the platform's page too, open answers in the bank's app.)
import { openSealedResponse, OpenError } from "/chat/open-sealed-response.mjs";

const DB = "consent-broker";
const STORE = "device";

function fromBase64url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
  });
}

/** Keeps the device's X25519 key pair (`{d, x}`, base64url) as a non-extractable key. */
export async function storeDeviceKey(jwk) {
  const privateKey = await crypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "X25519", d: jwk.d, x: jwk.x },
    { name: "X25519" },
    false,
    ["deriveBits"],
  );
  await transact("readwrite", (store) =>
    store.put({ privateKey, publicKeyRaw: fromBase64url(jwk.x) }, "key"),
  );
}

async function deviceKey() {
  return transact("readonly", (store) => store.get("key"));
}

function describe(opened) {
  const data = opened.data;
  if (data && data.scope === "balance" && data.data) {
    const money = data.data.available;
    if (money && Number.isInteger(money.minor_units) && typeof money.currency === "string") {
      // Two decimal places: the currencies this demo shows (EUR, GBP, USD) all have two.
      const amount = (money.minor_units / 100).toFixed(2);
      return `Balance of ${opened.context.account}: ${amount} ${money.currency}, as of ${data.data.as_of}`;
    }
  }
  return JSON.stringify(data);
}

async function main() {
  const list = document.getElementById("messages");
  if (!list) return;
  const key = await deviceKey();
  const outputs = list.querySelectorAll("output");
  if (!key) {
    outputs.forEach((o) => (o.textContent = "this device has no key to open it"));
    document.body.dataset.chatReady = "no-key";
    return;
  }
  const answer = await fetch("/chat/messages", { credentials: "same-origin" });
  const messages = await answer.json();
  // The bank numbers its answers (its journal's sequence): each must come after the one before
  // from the same bank, or the platform is replaying or reordering them.
  const last = new Map();
  for (const [index, sealed] of messages.entries()) {
    const output = document.getElementById(`message-${index}`);
    if (!output) continue;
    try {
      const opened = await openSealedResponse(sealed, key.privateKey, key.publicKeyRaw);
      const { holder, sequence } = opened.context;
      if (last.has(holder) && sequence <= last.get(holder)) {
        output.textContent = "not shown: replayed or out of order";
        output.dataset.refused = "order";
        continue;
      }
      last.set(holder, sequence);
      output.textContent = describe(opened);
      output.dataset.opened = JSON.stringify(opened.data);
    } catch (error) {
      output.textContent = error instanceof OpenError ? `does not open: ${error.kind}` : "does not open";
    }
  }
  document.body.dataset.chatReady = "true";
}

main().catch(() => {
  document.body.dataset.chatReady = "failed";
});
