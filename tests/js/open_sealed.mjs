// Driver for tests/it/sealing.rs: opens, with js/open-sealed-response.mjs and WebCrypto alone,
// each response the Rust side sealed, and prints what happened as JSON.
// Usage: node tests/js/open_sealed.mjs CASES.json
import { readFileSync } from "node:fs";
import { confirmationCode, openSealedResponse, thumbprint } from "../../js/open-sealed-response.mjs";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = [];
for (const c of cases) {
  const privateKey = await crypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "X25519", d: c.secret_key, x: c.public_key },
    { name: "X25519" },
    false,
    ["deriveBits"],
  );
  const publicKey = Uint8Array.from(atob(c.public_key.replace(/-/g, "+").replace(/_/g, "/")), (ch) =>
    ch.charCodeAt(0),
  );
  const result = {
    thumbprint: await thumbprint(publicKey),
    confirmation_code: await confirmationCode(publicKey),
  };
  try {
    result.opened = await openSealedResponse(c.response, privateKey, publicKey);
  } catch (error) {
    if (error?.name !== "OpenError") throw error;
    result.error = error.kind;
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
