//! Makes the Workload API accept gRPC clients that send an invalid HTTP/2
//! `:authority` over Unix sockets.
//!
//! gRPC C-core (and so grpc-python, which py-spiffe uses) sends the
//! percent-encoded socket path as `:authority` (e.g. `tmp%2Fagent.sock`),
//! which is not a valid authority; the `h2` server behind tonic resets such
//! streams with PROTOCOL_ERROR and offers no switch to relax the check. No
//! crate does this rewrite, so it is done here: this stream adapter sits
//! between the socket and the HTTP/2 server, decodes every client header
//! block with its own HPACK decoder, replaces an invalid `:authority` with
//! `localhost`, and re-encodes the block with its own HPACK encoder. Because
//! every block is re-encoded, the server's HPACK state only ever reflects
//! this encoder, so the two stay in step. All other frames pass untouched;
//! the server-to-client direction is not touched at all.
//!
//! The choice is made once per connection, at its first header block: a
//! client whose first authority is valid (tonic, grpc-go) gets its bytes
//! passed through unchanged for the whole connection, at no cost.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused: no Workload API request
/// comes near it, and it bounds memory per connection.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

struct PendingHeaders {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// Decided once per connection, at its first header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Undecided,
    /// The client sends valid authorities (tonic, grpc-go): bytes flow
    /// through untouched, at no cost.
    Passthrough,
    /// The client sends invalid ones (gRPC C-core): every block is re-encoded.
    Rewrite,
}

/// See the module docs.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// The original frames of the pending header block, forwarded as they
    /// are when the connection turns out not to need rewriting.
    pending_raw: Vec<u8>,
    raw: BytesMut,
    out: BytesMut,
    preface_left: usize,
    pending: Option<PendingHeaders>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Undecided,
            pending_raw: Vec::new(),
            raw: BytesMut::new(),
            out: BytesMut::new(),
            preface_left: PREFACE_LEN,
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Takes bytes read from the client and returns what the server may
    /// read now (complete frames, rewritten where needed). A partial frame
    /// waits for the next call.
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<BytesMut> {
        self.raw.extend_from_slice(bytes);
        self.process()?;
        Ok(self.out.split())
    }

    /// Moves every complete frame from `raw` to `out`, rewriting header blocks.
    fn process(&mut self) -> io::Result<()> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            self.out.extend_from_slice(&self.raw.split_to(n));
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        if self.mode == Mode::Passthrough {
            let rest = self.raw.split();
            self.out.extend_from_slice(&rest);
            return Ok(());
        }
        while self.raw.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if self.raw.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame = self.raw.split_to(FRAME_HEADER_LEN + len);
            let ty = frame[3];
            let flags = frame[4];
            let stream_id =
                u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            let payload = &frame[FRAME_HEADER_LEN..];
            match ty {
                TYPE_HEADERS => {
                    let mut p = payload;
                    let mut pad = 0usize;
                    if flags & FLAG_PADDED != 0 {
                        let (&n, rest) = p
                            .split_first()
                            .ok_or_else(|| bad("HEADERS padding length missing"))?;
                        pad = n as usize;
                        p = rest;
                    }
                    let priority = if flags & FLAG_PRIORITY != 0 {
                        if p.len() < 5 {
                            return Err(bad("HEADERS priority truncated"));
                        }
                        let mut pr = [0u8; 5];
                        pr.copy_from_slice(&p[..5]);
                        p = &p[5..];
                        Some(pr)
                    } else {
                        None
                    };
                    if pad > p.len() {
                        return Err(bad("HEADERS padding exceeds payload"));
                    }
                    let block = p[..p.len() - pad].to_vec();
                    self.pending_raw.clear();
                    self.pending_raw.extend_from_slice(&frame);
                    self.pending = Some(PendingHeaders {
                        stream_id,
                        end_stream: flags & FLAG_END_STREAM != 0,
                        priority,
                        block,
                    });
                    if flags & FLAG_END_HEADERS != 0 {
                        self.emit_headers()?;
                    }
                }
                TYPE_CONTINUATION => match self.pending.as_mut() {
                    Some(h) if h.stream_id == stream_id => {
                        h.block.extend_from_slice(payload);
                        self.pending_raw.extend_from_slice(&frame);
                        if h.block.len() > MAX_HEADER_BLOCK {
                            return Err(bad("header block too large"));
                        }
                        if flags & FLAG_END_HEADERS != 0 {
                            self.emit_headers()?;
                        }
                    }
                    // Not ours to judge: the server will reject it.
                    _ => self.out.extend_from_slice(&frame),
                },
                _ => self.out.extend_from_slice(&frame),
            }
        }
        Ok(())
    }

    fn emit_headers(&mut self) -> io::Result<()> {
        let Some(h) = self.pending.take() else {
            return Ok(());
        };
        let mut headers = self
            .decoder
            .decode(&h.block)
            .map_err(|e| bad(&format!("HPACK decoding failed: {e:?}")))?;
        let invalid = |name: &[u8], value: &[u8]| {
            name == b":authority" && http::uri::Authority::try_from(value).is_err()
        };
        if self.mode == Mode::Undecided {
            if headers.iter().any(|(n, v)| invalid(n, v)) {
                self.mode = Mode::Rewrite;
            } else {
                // The server decodes these same bytes, so its HPACK state
                // matches the client's from here on without our help.
                self.mode = Mode::Passthrough;
                let raw = std::mem::take(&mut self.pending_raw);
                self.out.extend_from_slice(&raw);
                let rest = self.raw.split();
                self.out.extend_from_slice(&rest);
                return Ok(());
            }
        }
        for (name, value) in headers.iter_mut() {
            if invalid(name, value) {
                *value = b"localhost".to_vec();
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut payload = Vec::with_capacity(block.len() + 5);
        if let Some(pr) = h.priority {
            payload.extend_from_slice(&pr);
        }
        payload.extend_from_slice(&block);
        // An empty block still needs its HEADERS frame.
        let pieces: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(MAX_FRAME).collect()
        };
        for (i, chunk) in pieces.iter().enumerate() {
            let (ty, mut flags) = if i == 0 {
                let mut f = 0;
                if h.end_stream {
                    f |= FLAG_END_STREAM;
                }
                if h.priority.is_some() {
                    f |= FLAG_PRIORITY;
                }
                (TYPE_HEADERS, f)
            } else {
                (TYPE_CONTINUATION, 0)
            };
            if i == pieces.len() - 1 {
                flags |= FLAG_END_HEADERS;
            }
            self.out
                .extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
            self.out.extend_from_slice(&[ty, flags]);
            self.out.extend_from_slice(&h.stream_id.to_be_bytes());
            self.out.extend_from_slice(chunk);
        }
        Ok(())
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from Workload API client: {what}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A truncated trailing frame is handed over as is; the
                // server reports it.
                if !this.raw.is_empty() {
                    let rest = this.raw.split();
                    this.out.extend_from_slice(&rest);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        let ready = this.feed(rb.filled())?;
                        this.out.unsplit(ready);
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[ty, flags]);
        f.extend_from_slice(&sid.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Runs `input` through the adapter and decodes the header blocks that
    /// come out with a fresh decoder (as the server would).
    async fn run(input: Vec<u8>) -> (Vec<u8>, Vec<Vec<(Vec<u8>, Vec<u8>)>>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut fix = AuthorityFix::new(server);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.unwrap();
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut rest = &out[PREFACE_LEN..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            frames.push(rest[..9 + len].to_vec());
            if rest[3] == TYPE_HEADERS {
                let mut p = &rest[9..9 + len];
                if rest[4] & FLAG_PRIORITY != 0 {
                    p = &p[5..];
                }
                blocks.push(dec.decode(p).unwrap());
            }
            rest = &rest[9 + len..];
        }
        (out, blocks)
    }

    #[tokio::test]
    async fn invalid_authority_is_replaced_and_hpack_state_stays_consistent() {
        let mut client_enc = loona_hpack::Encoder::new();
        let req = |auth: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
            vec![
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
                (b":authority", auth),
                (b"workload.spiffe.io", b"true"),
            ]
        };
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes through
                                             // Two requests: the second uses dynamic-table references to the
                                             // first's headers, exercising state carried across blocks.
        let b1 = client_enc.encode(req(b"tmp%2Fagent%2Fworkload.sock"));
        let b2 = client_enc.encode(req(b"tmp%2Fagent%2Fworkload.sock"));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1));
        // The second block split across HEADERS + CONTINUATION.
        let (h, c) = b2.split_at(b2.len() / 2);
        input.extend(frame(TYPE_HEADERS, FLAG_END_STREAM, 3, h));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, c));
        input.extend(frame(0x0, 0x1, 1, b"data"));
        let (out, blocks) = run(input).await;
        assert_eq!(&out[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let auth = b.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(auth.1, b"localhost");
            let path = b.iter().find(|(n, _)| n == b":path").unwrap();
            assert_eq!(path.1, b"/SpiffeWorkloadAPI/FetchX509SVID");
        }
        // END_STREAM survived the HEADERS+CONTINUATION merge.
        let second_headers_flags = {
            let mut rest = &out[PREFACE_LEN..];
            let mut seen = 0;
            loop {
                let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
                if rest[3] == TYPE_HEADERS {
                    seen += 1;
                    if seen == 2 {
                        break rest[4];
                    }
                }
                rest = &rest[9 + len..];
            }
        };
        assert_eq!(
            second_headers_flags & (FLAG_END_STREAM | FLAG_END_HEADERS),
            FLAG_END_STREAM | FLAG_END_HEADERS
        );
        assert!(out.ends_with(&frame(0x0, 0x1, 1, b"data")));
    }

    #[tokio::test]
    async fn connection_with_valid_authority_passes_through_untouched() {
        let mut enc = loona_hpack::Encoder::new();
        let b1 = enc.encode(vec![
            (&b":authority"[..], &b"localhost:1234"[..]),
            (&b":method"[..], &b"POST"[..]),
        ]);
        // A later block with a bad authority on the same connection is left
        // alone too: the connection was judged by its first block.
        let b2 = enc.encode(vec![(&b":authority"[..], &b"tmp%2Fx.sock"[..])]);
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &{
            let mut p = vec![3u8];
            p.extend_from_slice(&b1);
            p.extend_from_slice(&[0, 0, 0]);
            p
        }));
        input.extend(frame(0x0, 0x1, 1, b"data"));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut fix = AuthorityFix::new(server);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn garbage_header_block_is_an_error() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut fix = AuthorityFix::new(server);
        let mut out = Vec::new();
        assert!(fix.read_to_end(&mut out).await.is_err());
    }
}
