"""Drives hallmark's Workload API with py-spiffe, a SPIFFE client nobody here wrote.

The socket comes from SPIFFE_ENDPOINT_SOCKET (`unix:///abs/path`), as for any
SPIFFE workload. Each mode exits 0 after printing `ok: ...` lines, or exits 1
with a `FAIL: ...` line naming what was expected and what arrived.

Modes:
  x509 --expect-id ID [--only]  fetch the X.509 context; check the SPIFFE ID, the
                                chain up to a bundle authority (signatures and
                                validity times) and that the key matches the leaf;
                                with --only, that the caller holds no other SVID
  jwt --expect-id ID --audience A
                                fetch a JWT-SVID; validate it through the
                                Workload API and locally against the JWT bundle
  rotation --expect-id ID --timeout S
                                watch the X.509 stream until the SVID is
                                replaced by one with another serial, which must
                                arrive before the first one's notAfter
  no-identity                   expect the Workload API to refuse this caller
                                with PermissionDenied / "no identity issued"
"""

import argparse
import datetime
import queue
import sys
import time

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import Certificate

from spiffe import JwtSvid, WorkloadApiClient
from spiffe.workloadapi.x509_context import X509Context

CALL_TIMEOUT_SECS = 10.0


class CheckFailed(Exception):
    """A property of the Workload API answer did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def grpc_status(err: BaseException):
    """The gRPC status code and details behind a py-spiffe error, if any."""
    seen = err
    while seen is not None:
        if isinstance(seen, grpc.Call):
            return seen.code(), seen.details()
        seen = seen.__cause__ or seen.__context__
    return None, None


def public_der(obj) -> bytes:
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_validity(cert: Certificate, what: str) -> None:
    now = utcnow()
    expect(
        cert.not_valid_before_utc <= now <= cert.not_valid_after_utc,
        f"{what} ({cert.subject.rfc4514_string() or 'empty subject'}) is not valid now: "
        f"notBefore={cert.not_valid_before_utc} notAfter={cert.not_valid_after_utc} now={now}",
    )


def verify_chain(chain: list, authorities: list) -> Certificate:
    """Checks each certificate's signature with the next one's key, and the
    last one's with a bundle authority. Returns the authority that anchors it."""
    expect(len(chain) >= 1, "X.509-SVID chain is empty")
    for i, cert in enumerate(chain):
        check_validity(cert, f"chain[{i}]")
    for i in range(len(chain) - 1):
        try:
            chain[i].verify_directly_issued_by(chain[i + 1])
        except Exception as err:  # noqa: BLE001 - any failure here is the finding
            raise CheckFailed(f"chain[{i}] is not signed by chain[{i + 1}]: {err!r}") from err
    last = chain[-1]
    failures = []
    for authority in authorities:
        try:
            last.verify_directly_issued_by(authority)
        except Exception as err:  # noqa: BLE001
            failures.append(f"{authority.subject.rfc4514_string()}: {err!r}")
            continue
        check_validity(authority, "bundle authority")
        return authority
    raise CheckFailed(
        f"chain[{len(chain) - 1}] (issuer {last.issuer.rfc4514_string()}) is signed by none of "
        f"the {len(authorities)} bundle authorities: {failures}"
    )


def mode_x509(args: argparse.Namespace) -> None:
    with WorkloadApiClient(default_timeout=CALL_TIMEOUT_SECS) as client:
        ctx = client.fetch_x509_context()
        svid = ctx.default_svid
        expect(
            str(svid.spiffe_id) == args.expect_id,
            f"default X.509-SVID has SPIFFE ID {svid.spiffe_id}, expected {args.expect_id}",
        )
        if args.only:
            held = [str(s.spiffe_id) for s in ctx.x509_svids]
            expect(held == [args.expect_id], f"caller holds {held}, expected only {args.expect_id}")
        td = svid.spiffe_id.trust_domain
        bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(td)
        expect(bundle is not None, f"X.509 context has no bundle for trust domain {td}")
        authorities = list(bundle.x509_authorities)
        expect(len(authorities) >= 1, f"bundle for {td} has no X.509 authorities")
        anchor = verify_chain(svid.cert_chain, authorities)
        expect(
            public_der(svid.private_key) == public_der(svid.leaf),
            "X.509-SVID private key does not match the leaf certificate's public key",
        )
        print(f"ok: X.509-SVID {svid.spiffe_id} serial {svid.leaf.serial_number:x} "
              f"chains to {anchor.subject.rfc4514_string()}")

        # FetchX509Bundles is a separate stream; it must carry the same roots.
        bundles = client.fetch_x509_bundles()
        separate = bundles.get_bundle_for_trust_domain(td)
        expect(separate is not None, f"FetchX509Bundles has no bundle for {td}")
        expect(
            {c.fingerprint(hashes.SHA256()) for c in separate.x509_authorities}
            == {c.fingerprint(hashes.SHA256()) for c in authorities},
            "FetchX509Bundles and FetchX509SVID disagree on the X.509 authorities",
        )
        print(f"ok: FetchX509Bundles carries the same {len(authorities)} authorities")


def mode_jwt(args: argparse.Namespace) -> None:
    audience = args.audience
    with WorkloadApiClient(default_timeout=CALL_TIMEOUT_SECS) as client:
        svid = client.fetch_jwt_svid({audience})
        expect(
            str(svid.spiffe_id) == args.expect_id,
            f"JWT-SVID has sub {svid.spiffe_id}, expected {args.expect_id}",
        )
        expect(audience in svid.audience, f"JWT-SVID aud {svid.audience} lacks {audience}")
        expect(svid.expiry > time.time(), f"JWT-SVID already expired (exp {svid.expiry})")
        print(f"ok: fetched JWT-SVID for {svid.spiffe_id}, aud {sorted(svid.audience)}")

        validated = client.validate_jwt_svid(svid.token, audience)
        expect(
            str(validated.spiffe_id) == args.expect_id,
            f"ValidateJWTSVID returned {validated.spiffe_id}, expected {args.expect_id}",
        )
        print("ok: ValidateJWTSVID accepts it")

        try:
            client.validate_jwt_svid(svid.token, audience + "-other")
        except Exception as err:  # noqa: BLE001 - the refusal is what we want
            code, details = grpc_status(err)
            expect(
                code == grpc.StatusCode.INVALID_ARGUMENT,
                f"ValidateJWTSVID with another audience: expected INVALID_ARGUMENT, got {code} {details!r} ({err})",
            )
            print(f"ok: ValidateJWTSVID refuses another audience: {details}")
        else:
            raise CheckFailed("ValidateJWTSVID accepted the token for an audience it was not minted for")

        bundles = client.fetch_jwt_bundles()
        td = svid.spiffe_id.trust_domain
        bundle = bundles.get_bundle_for_trust_domain(td)
        expect(bundle is not None, f"FetchJWTBundles has no bundle for {td}")
        expect(len(bundle.jwt_authorities) >= 1, f"JWT bundle for {td} has no keys")
        local = JwtSvid.parse_and_validate(svid.token, bundle, {audience})
        expect(
            str(local.spiffe_id) == args.expect_id,
            f"local validation gave {local.spiffe_id}, expected {args.expect_id}",
        )
        print(f"ok: token verifies locally against the JWT bundle ({len(bundle.jwt_authorities)} keys)")


def mode_rotation(args: argparse.Namespace) -> None:
    updates: "queue.Queue[tuple[float, object]]" = queue.Queue()

    def on_success(ctx: X509Context) -> None:
        updates.put((time.time(), ctx))

    def on_error(err: Exception) -> None:
        updates.put((time.time(), err))

    deadline = time.time() + args.timeout
    first_serial = None
    first_not_after = None
    with WorkloadApiClient() as client:
        handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
        try:
            while True:
                remaining = deadline - time.time()
                expect(
                    remaining > 0,
                    f"no rotated X.509-SVID for {args.expect_id} within {args.timeout}s "
                    f"(first serial {first_serial:x} notAfter {first_not_after})"
                    if first_serial is not None
                    else f"no X.509 context at all within {args.timeout}s",
                )
                try:
                    at, item = updates.get(timeout=remaining)
                except queue.Empty:
                    continue
                if isinstance(item, Exception):
                    raise CheckFailed(f"X.509 stream failed: {item!r}")
                mine = [s for s in item.x509_svids if str(s.spiffe_id) == args.expect_id]
                expect(mine != [], f"X.509 context lacks {args.expect_id}: "
                       f"{[str(s.spiffe_id) for s in item.x509_svids]}")
                leaf = mine[0].leaf
                if first_serial is None:
                    first_serial = leaf.serial_number
                    first_not_after = leaf.not_valid_after_utc
                    print(f"ok: first X.509-SVID serial {first_serial:x}, notAfter {first_not_after}")
                    continue
                if leaf.serial_number == first_serial:
                    continue
                arrived = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
                expect(
                    arrived < first_not_after,
                    f"rotated SVID arrived at {arrived}, after the first one expired at {first_not_after}",
                )
                check_validity(leaf, "rotated leaf")
                print(f"ok: rotated to serial {leaf.serial_number:x} at {arrived}, "
                      f"{(first_not_after - arrived).total_seconds():.1f}s before the first expired")
                return
        finally:
            handle.cancel()


def mode_no_identity(_args: argparse.Namespace) -> None:
    with WorkloadApiClient(default_timeout=CALL_TIMEOUT_SECS) as client:
        try:
            svid = client.fetch_x509_svid()
        except Exception as err:  # noqa: BLE001 - inspect whatever py-spiffe raised
            code, details = grpc_status(err)
            expect(
                code == grpc.StatusCode.PERMISSION_DENIED and "no identity issued" in (details or ""),
                f"expected PERMISSION_DENIED with 'no identity issued', got {code} {details!r} ({err})",
            )
            print(f"ok: refused with PERMISSION_DENIED: {details}")
            return
        raise CheckFailed(f"caller without entries was issued {svid.spiffe_id}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    x509 = sub.add_parser("x509")
    x509.add_argument("--expect-id", required=True)
    x509.add_argument("--only", action="store_true")
    jwt_p = sub.add_parser("jwt")
    jwt_p.add_argument("--expect-id", required=True)
    jwt_p.add_argument("--audience", required=True)
    rot = sub.add_parser("rotation")
    rot.add_argument("--expect-id", required=True)
    rot.add_argument("--timeout", type=float, required=True)
    sub.add_parser("no-identity")
    args = parser.parse_args()

    modes = {
        "x509": mode_x509,
        "jwt": mode_jwt,
        "rotation": mode_rotation,
        "no-identity": mode_no_identity,
    }
    try:
        modes[args.mode](args)
    except CheckFailed as err:
        print(f"FAIL: py-spiffe {args.mode}: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - report any client error as a failure
        cause = err.__cause__ or err.__context__
        print(f"FAIL: py-spiffe {args.mode}: {err!r} (cause: {cause!r})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
