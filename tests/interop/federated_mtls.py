"""Two workloads of different trust domains talk mTLS with spiffe-tls.

Each process gets its SVID and its trust bundles from its own agent's
Workload API (SPIFFE_ENDPOINT_SOCKET) through py-spiffe's X509Source; the
other trust domain's bundle can only come from the federated bundles the
agent hands out. spiffe-tls (pyOpenSSL) does the handshake and checks the
peer's SPIFFE ID; this script reads that ID again from the peer
certificate's URI SAN and prints it.

Modes:
  listen --expect-peer ID --port-file F --message M
        listen on 127.0.0.1 (port written to F), accept one connection,
        send M, expect M reversed back
  dial --address HOST:PORT --expect-peer ID --message M
        connect, expect M, send it back reversed

The caller bounds the run time (pyOpenSSL connections do not take socket
timeouts). Both print `peer: <SPIFFE ID>` and `ok: ...` lines and exit 0, or print a
`FAIL: ...` line and exit 1.
"""

import argparse
import os
import sys
import warnings

from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from spiffe import SpiffeId, X509Source
from spiffetls import ListenOptions, dial, listen
from spiffetls.mode import ClientTlsMode, ServerTlsMode
from spiffetls.tlsconfig.authorize import authorize_id

SOURCE_TIMEOUT_SECS = 15.0


class CheckFailed(Exception):
    """A property of the identity or the connection did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def peer_id(conn) -> str:
    """The SPIFFE ID in the URI SAN of the peer's leaf certificate."""
    cert = conn.get_peer_certificate()
    expect(cert is not None, "the peer presented no certificate")
    san = cert.to_cryptography().extensions.get_extension_for_oid(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME
    )
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    expect(len(uris) == 1, f"peer certificate has {len(uris)} URI SANs, want exactly 1: {uris}")
    return uris[0]


def open_source(peer: SpiffeId) -> X509Source:
    """An X509Source whose bundle set already holds the peer's trust domain."""
    source = X509Source(timeout_in_seconds=SOURCE_TIMEOUT_SECS)
    context = source.get_x509_context()
    domains = sorted(str(b.trust_domain) for b in context.x509_bundle_set.bundles)
    print(f"ok: own SVID {context.default_svid.spiffe_id}; bundles for {', '.join(domains)}")
    expect(
        context.x509_bundle_set.get_bundle_for_trust_domain(peer.trust_domain) is not None,
        f"the Workload API gave no bundle for {peer.trust_domain} (have {domains}); "
        "the entry must federate with it",
    )
    return source


def recv_exact(conn, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def run_listen(args) -> None:
    want = SpiffeId(args.expect_peer)
    source = open_source(want)
    try:
        server = listen(
            "127.0.0.1:0",
            source,
            ListenOptions(tls_mode=ServerTlsMode.MTLS, authorize_fn=authorize_id(want)),
        )
        port = server.getsockname()[1]
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(port))
        # Atomic, so the test never reads a half-written port.
        os.rename(tmp, args.port_file)
        conn, _ = server.accept()
        conn.do_handshake()
        got = peer_id(conn)
        print(f"peer: {got}")
        expect(got == str(want), f"peer is {got}, want {want}")
        conn.sendall(args.message.encode())
        back = recv_exact(conn, len(args.message)).decode()
        expect(back == args.message[::-1], f"peer answered {back!r}, want {args.message[::-1]!r}")
        print(f"ok: exchanged {args.message!r} with {got}")
        conn.shutdown()
        conn.close()
        server.close()
    finally:
        source.close()


def run_dial(args) -> None:
    want = SpiffeId(args.expect_peer)
    source = open_source(want)
    try:
        conn = dial(
            args.address,
            source,
            # The client side has no MTLS mode: it always presents its SVID.
            tls_mode=ClientTlsMode.TLS,
            authorize_fn=authorize_id(want),
        )
        got = peer_id(conn)
        print(f"peer: {got}")
        expect(got == str(want), f"peer is {got}, want {want}")
        msg = recv_exact(conn, len(args.message)).decode()
        expect(msg == args.message, f"peer sent {msg!r}, want {args.message!r}")
        conn.sendall(msg[::-1].encode())
        print(f"ok: exchanged {msg!r} with {got}")
        conn.close()
    finally:
        source.close()


def main() -> int:
    warnings.simplefilter("ignore", DeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("listen")
    p.add_argument("--expect-peer", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--message", required=True)
    p = sub.add_parser("dial")
    p.add_argument("--address", required=True)
    p.add_argument("--expect-peer", required=True)
    p.add_argument("--message", required=True)
    args = parser.parse_args()
    try:
        {"listen": run_listen, "dial": run_dial}[args.mode](args)
    except CheckFailed as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - any error is this check's failure report
        print(f"FAIL: {args.mode}: {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
