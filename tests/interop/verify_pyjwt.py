#!/usr/bin/env python3
"""Verify a consent-broker access token with PyJWT: an implementation independent of the crate.

Usage: verify_pyjwt.py <jwks.json file> <token file> <expected aud> <expected iss>

Loads the JWKS, picks the key named by the token header's `kid`, requires `typ` "at+jwt" and
`alg` "EdDSA", and verifies signature, audience, issuer and times with PyJWT (no leeway),
requiring exp, iat, nbf, iss, aud, sub and jti. On success prints the claims as one line of JSON
and exits 0; on any failure prints the reason and exits 1. Used by tests/interop_pyjwt.rs.
"""

import json
import sys


def refuse(reason):
    print(f"REFUSED: {reason}")
    sys.exit(1)


def main(argv):
    if len(argv) != 5:
        refuse("usage: verify_pyjwt.py <jwks.json> <token file> <expected aud> <expected iss>")
    jwks_path, token_path, audience, issuer = argv[1:]
    try:
        import jwt
    except Exception as error:  # noqa: BLE001 - any import problem is a refusal
        refuse(f"PyJWT is not importable: {error!r}")

    try:
        with open(jwks_path, encoding="utf-8") as file:
            jwks = json.load(file)
        with open(token_path, encoding="utf-8") as file:
            token = file.read().strip()

        keys = jwt.PyJWKSet.from_dict(jwks)
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            refuse(f"header typ is {header.get('typ')!r}, expected 'at+jwt'")
        if header.get("alg") != "EdDSA":
            refuse(f"header alg is {header.get('alg')!r}, expected 'EdDSA'")
        kid = header.get("kid")
        matching = [key for key in keys.keys if key.key_id == kid]
        if len(matching) != 1:
            refuse(f"no single key with kid {kid!r} in the JWKS")
        key = matching[0]

        claims = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
        for name in ("cid", "scope", "purpose", "acct", "client_id", "sub", "jti"):
            if not isinstance(claims.get(name), str):
                refuse(f"claim {name!r} is not a string: {claims.get(name)!r}")
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - every failure is a refusal with its reason
        refuse(f"{type(error).__name__}: {error}")

    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
