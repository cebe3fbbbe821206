"""Validates a hallmark JWT-SVID with PyJWT alone, against the JWKS that the
Workload API's FetchJWTBundles returns.

This deliberately avoids py-spiffe's own validation: the raw gRPC stubs shipped
with py-spiffe fetch the bundle bytes, and PyJWT parses the JWK Set and checks
the signature, `aud`, `exp` and `sub`. Exits 0 after `ok: ...` lines, or 1 with
a `FAIL: ...` line.

  pyjwt_check.py --expect-id ID --audience A [--token JWT]

Without --token the token is fetched with FetchJWTSVID on the same socket.
The socket comes from SPIFFE_ENDPOINT_SOCKET (`unix:///abs/path`).
"""

import argparse
import base64
import json
import os
import sys
import time

import grpc
import jwt
from jwt import PyJWKSet

from spiffe._proto import workload_pb2, workload_pb2_grpc

CALL_TIMEOUT_SECS = 10.0
HEADER = (("workload.spiffe.io", "true"),)
# JWT-SVID spec: only these algorithms are allowed.
SPIFFE_ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}


class CheckFailed(Exception):
    """A property of the token or bundle did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def channel_from_env() -> grpc.Channel:
    endpoint = os.environ.get("SPIFFE_ENDPOINT_SOCKET", "")
    expect(endpoint.startswith("unix://"), f"SPIFFE_ENDPOINT_SOCKET must be unix:///path, got {endpoint!r}")
    path = endpoint[len("unix://"):]
    return grpc.insecure_channel("unix:" + path)


def fetch_jwks(stub, trust_domain: str) -> bytes:
    stream = stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT_SECS)
    try:
        first = next(iter(stream))
    finally:
        stream.cancel()
    td_id = f"spiffe://{trust_domain}"
    expect(
        td_id in first.bundles,
        f"FetchJWTBundles is keyed by {sorted(first.bundles)}, expected the trust domain ID {td_id}",
    )
    return first.bundles[td_id]


def tamper(token: str) -> str:
    """Same header and signature, a payload with a different `sub`."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = claims["sub"] + "-forged"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def run(args: argparse.Namespace) -> None:
    trust_domain = args.expect_id.removeprefix("spiffe://").split("/", 1)[0]
    with channel_from_env() as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        token = args.token
        if not token:
            resp = stub.FetchJWTSVID(
                workload_pb2.JWTSVIDRequest(audience=[args.audience]),
                metadata=HEADER,
                timeout=CALL_TIMEOUT_SECS,
            )
            expect(len(resp.svids) >= 1, "FetchJWTSVID returned no SVIDs")
            token = resp.svids[0].svid
        jwks_bytes = fetch_jwks(stub, trust_domain)

    jwks = PyJWKSet.from_json(jwks_bytes.decode("utf-8"))
    print(f"ok: PyJWT parsed a JWKS of {len(jwks.keys)} keys")

    header = jwt.get_unverified_header(token)
    alg = header.get("alg")
    kid = header.get("kid")
    expect(alg in SPIFFE_ALGS, f"JWT alg {alg!r} is not one the JWT-SVID spec allows")
    expect(header.get("typ") in (None, "JWT", "JOSE"), f"JWT typ {header.get('typ')!r} is not JWT or JOSE")
    expect(bool(kid), "JWT header has no kid")
    try:
        key = jwks[kid]
    except KeyError as err:
        raise CheckFailed(f"kid {kid!r} is not in the JWKS (kids: {[k.key_id for k in jwks.keys]})") from err

    claims = jwt.decode(
        token,
        key=key,
        algorithms=[alg],
        audience=args.audience,
        options={"require": ["exp", "aud", "sub"]},
    )
    expect(claims["sub"] == args.expect_id, f"sub is {claims['sub']!r}, expected {args.expect_id!r}")
    expect(claims["exp"] > time.time(), f"exp {claims['exp']} is in the past")
    print(f"ok: PyJWT verified {alg} signature (kid {kid}), aud and exp; sub {claims['sub']}")

    try:
        jwt.decode(token, key=key, algorithms=[alg], audience=args.audience + "-other")
    except jwt.InvalidAudienceError:
        print("ok: PyJWT rejects another audience")
    else:
        raise CheckFailed("PyJWT accepted the token for an audience it was not minted for")

    try:
        jwt.decode(tamper(token), key=key, algorithms=[alg], audience=args.audience)
    except jwt.InvalidSignatureError:
        print("ok: PyJWT rejects a token whose payload was altered")
    else:
        raise CheckFailed("PyJWT accepted a token with a forged payload: the signature does not cover it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expect-id", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    try:
        run(args)
    except CheckFailed as err:
        print(f"FAIL: PyJWT: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - report any client error as a failure
        print(f"FAIL: PyJWT: {err!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
