"""Checks a hallmark OIDC issuer and one of its tokens the way cloud providers
and common libraries do.

1. Fetches the discovery document over HTTPS and checks it field by field
   against what AWS IAM, GCP Workload Identity Federation and Azure federated
   credentials require of an external OIDC issuer.
2. Validates the token with PyJWT's PyJWKClient, pointed at the `jwks_uri`
   taken from the discovery document.
3. Validates it again with jwcrypto against the same JWKS.
4. Checks the header and claims the clouds rely on.

Exits 0 after `ok: ...` lines, or 1 with a `FAIL: ...` line.

  oidc_check.py --issuer URL --cafile PEM --audience AUD --expect-sub ID \
                --ttl SECS [--claim NAME=VALUE ...] [--absent NAME ...] \
                (--token JWT | --token-file PATH)
"""

import argparse
import json
import ssl
import sys
import time
import urllib.parse
import urllib.request

import jwt
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt


class CheckFailed(Exception):
    """A property of the issuer or token did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def fetch_json(url: str, ctx: ssl.SSLContext):
    with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
        expect(r.status == 200, f"GET {url}: status {r.status}")
        ctype = r.headers.get("Content-Type", "")
        expect(ctype.startswith("application/json"), f"GET {url}: Content-Type {ctype!r}")
        expect("max-age" in r.headers.get("Cache-Control", ""), f"GET {url}: no Cache-Control max-age")
        return json.loads(r.read())


def check_discovery(doc: dict, issuer: str) -> None:
    # Common to all three clouds: the issuer must match the configured URL
    # exactly (AWS compares the provider URL, GCP the issuer URI, Azure the
    # credential's issuer) and name an https JWKS on the issuer's host.
    expect(doc.get("issuer") == issuer, f"discovery issuer {doc.get('issuer')!r} != configured {issuer!r}")
    jwks_uri = doc.get("jwks_uri", "")
    parsed, issuer_parsed = urllib.parse.urlparse(jwks_uri), urllib.parse.urlparse(issuer)
    expect(parsed.scheme == "https", f"jwks_uri {jwks_uri!r} is not https")
    expect(parsed.hostname == issuer_parsed.hostname, f"jwks_uri {jwks_uri!r} is not on the issuer host")
    print("ok: discovery issuer matches and jwks_uri is https on the issuer host")
    # AWS IAM: RS256 among the signing algorithms (AWS refuses EdDSA and
    # needs a supported alg), response type id_token, public subjects.
    algs = doc.get("id_token_signing_alg_values_supported", [])
    expect("RS256" in algs, f"id_token_signing_alg_values_supported {algs} lacks RS256 (AWS, GCP, Azure)")
    expect("id_token" in doc.get("response_types_supported", []), "response_types_supported lacks id_token (AWS)")
    expect("public" in doc.get("subject_types_supported", []), "subject_types_supported lacks public (AWS)")
    print("ok: AWS IAM discovery requirements")
    # GCP: reads issuer + jwks_uri; signing algs must include RS256 (GCP
    # accepts RS256 and ES256 keys).
    expect(all(a in ("RS256", "ES256") for a in algs), f"GCP accepts RS256/ES256 only, discovery lists {algs}")
    print("ok: GCP Workload Identity Federation discovery requirements")
    # Azure: issuer + jwks_uri, RS256 keys.
    print("ok: Azure federated credential discovery requirements")


def check_jwks(jwks: dict) -> None:
    keys = jwks.get("keys")
    expect(isinstance(keys, list) and keys, "JWKS has no keys")
    rsa = [k for k in keys if k.get("kty") == "RSA"]
    ec = [k for k in keys if k.get("kty") == "EC"]
    expect(len(rsa) <= 100 and len(ec) <= 100, f"AWS allows at most 100 RSA and 100 EC keys, got {len(rsa)}/{len(ec)}")
    expect(rsa, "JWKS has no RSA key (RS256 is the default)")
    for k in keys:
        for member in ("kid", "kty", "alg", "use"):
            expect(member in k, f"JWKS key lacks `{member}`: {k}")
        expect(k["use"] == "sig", f"JWKS key use {k['use']!r}, expected 'sig'")
        expect("d" not in k and "p" not in k, "JWKS key contains private members")
    for k in rsa:
        expect("n" in k and "e" in k, f"RSA key {k['kid']} lacks n/e")
        expect(k["alg"] == "RS256", f"RSA key {k['kid']} alg {k['alg']}")
    print(f"ok: JWKS has {len(keys)} key(s) with kid/kty/alg/use=sig, RSA with n/e")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--issuer", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--expect-sub", required=True)
    p.add_argument("--ttl", type=int, required=True)
    p.add_argument("--claim", action="append", default=[])
    p.add_argument("--absent", action="append", default=[])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--token")
    g.add_argument("--token-file")
    a = p.parse_args()
    token = a.token if a.token else open(a.token_file).read().strip()
    try:
        ctx = ssl.create_default_context(cafile=a.cafile)
        doc = fetch_json(a.issuer + "/.well-known/openid-configuration", ctx)
        check_discovery(doc, a.issuer)
        jwks_uri = doc["jwks_uri"]
        jwks = fetch_json(jwks_uri, ctx)
        check_jwks(jwks)

        header = jwt.get_unverified_header(token)
        expect(header.get("alg") == "RS256", f"header alg {header.get('alg')!r}, expected RS256")
        expect(header.get("typ") == "JWT", f"header typ {header.get('typ')!r}")
        kids = [k["kid"] for k in jwks["keys"]]
        expect(header.get("kid") in kids, f"header kid {header.get('kid')!r} not in JWKS {kids}")
        print("ok: header alg RS256, typ JWT, kid published in the JWKS")

        # PyJWT, keys from the jwks_uri the discovery document named.
        client = jwt.PyJWKClient(jwks_uri, ssl_context=ctx)
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=a.audience,
            issuer=a.issuer,
            options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
        )
        expect(claims["sub"] == a.expect_sub, f"sub {claims['sub']!r} != {a.expect_sub!r}")
        print("ok: PyJWT PyJWKClient validated signature, aud, iss, exp; sub is the SPIFFE ID")

        # jwcrypto against the same JWKS.
        keyset = jc_jwk.JWKSet.from_json(json.dumps(jwks))
        t = jc_jwt.JWT(
            jwt=token,
            key=keyset,
            algs=["RS256"],
            check_claims={"iss": a.issuer, "aud": a.audience, "sub": a.expect_sub, "exp": None, "iat": None},
        )
        jc_claims = json.loads(t.claims)
        expect(jc_claims == claims, "jwcrypto and PyJWT disagree on the claims")
        print("ok: jwcrypto validated signature and iss/aud/sub/exp")

        now = time.time()
        expect(claims["exp"] - claims["iat"] == a.ttl, f"exp - iat = {claims['exp'] - claims['iat']}, expected {a.ttl}")
        expect(claims["exp"] - claims["iat"] < 48 * 3600, "token lives 48h or more (GCP refuses it)")
        expect(abs(claims["iat"] - now) < 120, f"iat {claims['iat']} is far from now {now}")
        expect(isinstance(claims["jti"], str) and len(claims["jti"]) >= 16, f"jti {claims['jti']!r}")
        print(f"ok: exp - iat = {a.ttl}s (< 48h), iat is now, jti set")
        for spec in a.claim:
            name, _, value = spec.partition("=")
            expect(claims.get(name) == value, f"claim {name} = {claims.get(name)!r}, expected {value!r}")
        for name in a.absent:
            expect(name not in claims, f"claim {name} should be absent, is {claims.get(name)!r}")
        print(f"ok: extra claims {a.claim}, absent {a.absent}")
        print("claims: " + json.dumps(claims, sort_keys=True))
    except CheckFailed as e:
        print(f"FAIL: {e}")
        return 1
    except Exception as e:  # any library refusal is a failed check, with its words
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
