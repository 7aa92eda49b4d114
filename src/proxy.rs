//! A TCP proxy for fault-injection tests, to put between a worker and
//! PostgreSQL.
//!
//! ```no_run
//! # async fn example() {
//! use graphile_worker_dev::proxy::Proxy;
//!
//! let db = graphile_worker_dev::fresh_database().await;
//! let proxy = Proxy::start(&db.url).await;
//! // Connect the code under test to `proxy.url()`, then:
//! proxy.pause(); // stall every connection
//! proxy.resume();
//! proxy.blackhole_responses(true); // statements run, their outcomes are lost
//! proxy.blackhole_responses(false);
//! proxy.cut(); // reset every open connection
//! proxy.refuse(true); // close new connections at once
//! # }
//! ```
//!
//! Each accepted connection opens its own connection to the upstream
//! server and bytes are copied both ways until either side closes, or the
//! proxy cuts it. The faults apply to every connection, open or new, from
//! the moment they are set. Dropping the [`Proxy`] stops accepting and
//! resets every connection.
//!
//! The proxy follows the message framing of the PostgreSQL protocol both
//! ways, which is what lets
//! [`blackhole_responses`](Proxy::blackhole_responses) lose the outcomes of
//! exactly the statements sent while it is on. With TLS it sees only bytes,
//! and the blackhole then drops everything the server sends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy. See the [module documentation](self).
#[derive(Debug)]
pub struct Proxy {
    url: String,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    /// `host:port` of the upstream server.
    upstream: String,
    /// True while paused.
    paused: watch::Sender<bool>,
    /// Bumped by every cut (and when the proxy is dropped).
    cuts: watch::Sender<u64>,
    blackhole: AtomicBool,
    refuse: AtomicBool,
    open: AtomicUsize,
}

impl Proxy {
    /// Starts a proxy to the server of `upstream`, a `postgres://` URL, on a
    /// free port of 127.0.0.1. Connections go to the URL's host and port
    /// (default 5432); a host given in the query string is not supported.
    ///
    /// Panics if the URL has no host or the port cannot be bound.
    pub async fn start(upstream: &str) -> Proxy {
        let (authority_start, authority_end) = authority(upstream);
        let authority = &upstream[authority_start..authority_end];
        let userinfo_end = authority.rfind('@').map(|at| at + 1);
        let host_port = &authority[userinfo_end.unwrap_or(0)..];
        assert!(!host_port.is_empty(), "proxy: no host in {upstream}");
        let upstream_addr = if host_port.ends_with(']') || !host_port.contains(':') {
            // `[::1]` or `host`: the default port.
            format!("{host_port}:5432")
        } else {
            host_port.to_owned()
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy: local address").port();
        let url = format!(
            "{}127.0.0.1:{port}{}",
            &upstream[..authority_start + userinfo_end.unwrap_or(0)],
            &upstream[authority_end..]
        );
        let state = Arc::new(State {
            upstream: upstream_addr,
            paused: watch::channel(false).0,
            cuts: watch::channel(0).0,
            blackhole: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            open: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Proxy { url, state, accept }
    }

    /// The upstream URL with its host and port replaced by the proxy's;
    /// user, password, database and query are kept.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stalls every connection: no byte is forwarded either way (they wait
    /// in the sockets), and new connections are accepted but not connected
    /// upstream, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.state.paused.send_replace(true);
    }

    /// Ends a [`pause`](Self::pause): waiting bytes and connections go
    /// through.
    pub fn resume(&self) {
        self.state.paused.send_replace(false);
    }

    /// While `on`, what the client sends still reaches the server, so its
    /// statements run and commit, but their outcomes never come back.
    ///
    /// Precisely: each request the proxy forwards while this is on (a
    /// `Sync`, a simple `Query`) loses its outcome: from the first message
    /// of its answer that reports how a statement went (`BindComplete`,
    /// `DataRow`, `CommandComplete`, `ErrorResponse`, ...), that connection
    /// hears nothing more from the server until it is closed or
    /// [`cut`](Self::cut). Requests forwarded before are answered in full,
    /// even if the answer comes later; a request held by a
    /// [`pause`](Self::pause) counts when it is forwarded.
    ///
    /// Messages that report no outcome still go through: start-up,
    /// notifications, and the answers to preparing a statement
    /// (`ParseComplete`, `ParameterDescription`, `RowDescription`,
    /// `ReadyForQuery`), because sqlx waits for those before it sends the
    /// statement itself; so does the answer to a bare `Sync`, the pool's
    /// ping.
    pub fn blackhole_responses(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::SeqCst);
    }

    /// Resets every open connection now: both the client's and the
    /// server's socket are closed with `SO_LINGER` 0 (a TCP reset), and
    /// bytes not yet forwarded are lost. New connections are accepted as
    /// before.
    pub fn cut(&self) {
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// While `on`, accepted connections are closed at once (with a reset),
    /// before anything is sent upstream.
    pub fn refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::SeqCst);
    }

    /// How many client connections are open through the proxy (including
    /// ones waiting for a [`pause`](Self::pause) to end).
    pub fn connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.resume();
        self.cut();
    }
}

/// Byte range of the authority (`user:password@host:port`) in `url`.
fn authority(url: &str) -> (usize, usize) {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map(|i| start + i)
        .unwrap_or(url.len());
    (start, end)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of file descriptors and the like: try again shortly.
                eprintln!("proxy: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if state.refuse.load(Ordering::SeqCst) {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        // Subscribed now, so a cut from here on reaches this connection.
        let cuts = state.cuts.subscribe();
        let open = OpenGuard::new(state.clone());
        tokio::spawn(connection(client, state.clone(), cuts, open));
    }
}

/// Counts an open connection while it lives.
struct OpenGuard(Arc<State>);

impl OpenGuard {
    fn new(state: Arc<State>) -> Self {
        state.open.fetch_add(1, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    mut client: TcpStream,
    state: Arc<State>,
    mut cuts: watch::Receiver<u64>,
    _open: OpenGuard,
) {
    let _ = client.set_nodelay(true);
    // A new connection waits out a pause before it goes upstream.
    let mut paused = state.paused.subscribe();
    let unpaused = async {
        // An error means the proxy is gone, and the cut below fires too.
        let _ = paused.wait_for(|p| !*p).await;
    };
    tokio::select! {
        () = unpaused => {}
        _ = cuts.changed() => {
            let _ = client.set_zero_linger();
            return;
        }
    }
    let server = tokio::select! {
        server = TcpStream::connect(&state.upstream) => server,
        _ = cuts.changed() => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("proxy: cannot connect to {}: {e}", state.upstream);
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let shared = Shared::default();
    let reset = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        tokio::select! {
            _ = requests(&mut client_read, &mut server_write, &state, &shared) => false,
            _ = responses(&mut server_read, &mut client_write, &state, &shared) => false,
            _ = cuts.changed() => true,
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    // Otherwise one side closed (or failed): the other is closed too.
}

/// What the two directions of one connection tell each other.
#[derive(Debug, Default)]
struct Shared {
    /// The client asked for encryption: the server's first answer is one
    /// byte.
    encryption_requested: AtomicBool,
    /// The server agreed to encryption: bytes only from then on.
    opaque: AtomicBool,
    /// One entry per request forwarded and not yet answered in full (by
    /// `ReadyForQuery`): whether its outcome is to be lost.
    pending: Mutex<VecDeque<bool>>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<bool>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits out a pause; false if the proxy is gone.
async fn unpaused(paused: &mut watch::Receiver<bool>) -> bool {
    paused.wait_for(|p| !*p).await.is_ok()
}

/// Reads the next bytes into `buf` once not paused; bytes read just before
/// a pause wait for its end too. `None` when the connection or the proxy
/// ends.
async fn read_unpaused(
    from: &mut ReadHalf<'_>,
    buf: &mut [u8],
    paused: &mut watch::Receiver<bool>,
) -> Option<usize> {
    if !unpaused(paused).await {
        return None;
    }
    let n = match from.read(buf).await {
        Ok(0) | Err(_) => return None,
        Ok(n) => n,
    };
    unpaused(paused).await.then_some(n)
}

/// Copies the client's bytes to the server, noting each request (and
/// whether it is blackholed) before it goes through.
async fn requests(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, state: &State, shared: &Shared) {
    let mut paused = state.paused.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    let mut framer = RequestFramer::default();
    loop {
        let Some(n) = read_unpaused(from, &mut buf, &mut paused).await else {
            return;
        };
        framer.observe(&buf[..n], state.blackhole.load(Ordering::SeqCst), shared);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Copies the server's bytes to the client, holding them while paused and
/// dropping the outcomes of blackholed requests.
async fn responses(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    state: &State,
    shared: &Shared,
) {
    let mut paused = state.paused.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(buf.len());
    let mut framer: Option<ResponseFramer> = None;
    loop {
        let Some(n) = read_unpaused(from, &mut buf, &mut paused).await else {
            return;
        };
        // The server speaks only after the client's first bytes went
        // through, so whether they asked for encryption is known.
        let framer = framer.get_or_insert_with(|| {
            ResponseFramer::new(shared.encryption_requested.load(Ordering::SeqCst))
        });
        out.clear();
        framer.filter(
            &buf[..n],
            state.blackhole.load(Ordering::SeqCst),
            shared,
            &mut out,
        );
        if !out.is_empty() && to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Where a reader of framed messages (a type byte, then a 4-byte
/// big-endian length that counts itself, then the body) is.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Next comes a message's type byte.
    Type,
    /// Reading a message's length.
    Length {
        kind: u8,
        forward: bool,
        got: usize,
        bytes: [u8; 4],
    },
    /// Inside a message's body.
    Body { forward: bool, left: usize },
    /// Encrypted: bytes only.
    Opaque,
}

impl Frame {
    /// Takes `byte` as part of a length; returns the next state once the
    /// length is complete.
    fn length_byte(kind: u8, forward: bool, mut got: usize, mut bytes: [u8; 4], byte: u8) -> Self {
        bytes[got] = byte;
        got += 1;
        if got < 4 {
            return Frame::Length {
                kind,
                forward,
                got,
                bytes,
            };
        }
        let body = (u32::from_be_bytes(bytes) as usize).saturating_sub(4);
        if body == 0 {
            Frame::Type
        } else {
            Frame::Body {
                forward,
                left: body,
            }
        }
    }
}

/// Follows what the client sends: the untyped opening messages (an
/// encryption request, then the start-up message), then typed messages.
#[derive(Debug)]
struct RequestFramer {
    at: RequestFrame,
}

#[derive(Debug, Clone, Copy)]
enum RequestFrame {
    /// An untyped message: its length, then a 4-byte code or version.
    Untyped {
        got: usize,
        head: [u8; 8],
    },
    /// The rest of an untyped message.
    UntypedBody {
        left: usize,
    },
    Framed(Frame),
}

impl Default for RequestFramer {
    fn default() -> Self {
        Self {
            at: RequestFrame::Untyped {
                got: 0,
                head: [0; 8],
            },
        }
    }
}

/// Protocol codes of the untyped opening messages.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

impl RequestFramer {
    /// Notes the requests in `bytes` (about to be forwarded) in `shared`.
    fn observe(&mut self, mut bytes: &[u8], blackhole: bool, shared: &Shared) {
        while let Some((&byte, rest)) = bytes.split_first() {
            if shared.opaque.load(Ordering::SeqCst) {
                self.at = RequestFrame::Framed(Frame::Opaque);
            }
            match self.at {
                RequestFrame::Untyped { mut got, mut head } => {
                    head[got] = byte;
                    got += 1;
                    bytes = rest;
                    if got < 8 {
                        self.at = RequestFrame::Untyped { got, head };
                        continue;
                    }
                    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                    if length == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
                        // The start-up message follows the server's answer.
                        shared.encryption_requested.store(true, Ordering::SeqCst);
                        self.at = RequestFrame::Untyped {
                            got: 0,
                            head: [0; 8],
                        };
                        continue;
                    }
                    if code != CANCEL_REQUEST {
                        // The start-up message: answered up to the first
                        // ReadyForQuery, never lost.
                        shared.pending().push_back(false);
                    }
                    let left = (length as usize).saturating_sub(8);
                    self.at = if left == 0 {
                        RequestFrame::Framed(Frame::Type)
                    } else {
                        RequestFrame::UntypedBody { left }
                    };
                }
                RequestFrame::UntypedBody { left } => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    self.at = if take == left {
                        RequestFrame::Framed(Frame::Type)
                    } else {
                        RequestFrame::UntypedBody { left: left - take }
                    };
                }
                RequestFrame::Framed(Frame::Type) => {
                    // Sync, Query and FunctionCall are each answered up to
                    // one ReadyForQuery.
                    if matches!(byte, b'S' | b'Q' | b'F') {
                        shared.pending().push_back(blackhole);
                    }
                    bytes = rest;
                    self.at = RequestFrame::Framed(Frame::Length {
                        kind: byte,
                        forward: true,
                        got: 0,
                        bytes: [0; 4],
                    });
                }
                RequestFrame::Framed(Frame::Length {
                    kind,
                    forward,
                    got,
                    bytes: length,
                }) => {
                    bytes = rest;
                    self.at =
                        RequestFrame::Framed(Frame::length_byte(kind, forward, got, length, byte));
                }
                RequestFrame::Framed(Frame::Body { forward, left }) => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    self.at = RequestFrame::Framed(if take == left {
                        Frame::Type
                    } else {
                        Frame::Body {
                            forward,
                            left: left - take,
                        }
                    });
                }
                RequestFrame::Framed(Frame::Opaque) => return,
            }
        }
    }
}

/// Follows what the server sends and decides what reaches the client.
#[derive(Debug)]
struct ResponseFramer {
    /// Waiting for the one-byte answer to an encryption request.
    encryption_answer: bool,
    at: Frame,
    /// An outcome was dropped on this connection: the client is out of step
    /// with the server, and hears nothing more.
    silenced: bool,
}

/// Server messages that report how a statement went.
const OUTCOMES: &[u8] = b"23CDIEsVGHWdc";

impl ResponseFramer {
    fn new(encryption_requested: bool) -> Self {
        Self {
            encryption_answer: encryption_requested,
            at: Frame::Type,
            silenced: false,
        }
    }

    /// Whether to forward a message of type `kind`, which answers the
    /// oldest pending request (or none: notifications and the like).
    fn forward(&mut self, kind: u8, shared: &Shared) -> bool {
        let mut pending = shared.pending();
        let lost = pending.front().copied().unwrap_or(false);
        if kind == b'Z' {
            pending.pop_front();
        }
        if !self.silenced && lost && OUTCOMES.contains(&kind) {
            self.silenced = true;
        }
        !self.silenced
    }

    /// Appends to `out` what of `bytes` goes to the client.
    fn filter(&mut self, mut bytes: &[u8], blackhole: bool, shared: &Shared, out: &mut Vec<u8>) {
        if self.encryption_answer
            && let Some((&byte, rest)) = bytes.split_first()
        {
            self.encryption_answer = false;
            // `S`/`G`: encryption follows; `N`: framed messages.
            if byte == b'S' || byte == b'G' {
                self.at = Frame::Opaque;
                shared.opaque.store(true, Ordering::SeqCst);
            }
            out.push(byte);
            bytes = rest;
        }
        while let Some((&byte, rest)) = bytes.split_first() {
            match self.at {
                Frame::Opaque => {
                    if !blackhole {
                        out.extend_from_slice(bytes);
                    }
                    return;
                }
                Frame::Type => {
                    let forward = self.forward(byte, shared);
                    if forward {
                        out.push(byte);
                    }
                    self.at = Frame::Length {
                        kind: byte,
                        forward,
                        got: 0,
                        bytes: [0; 4],
                    };
                    bytes = rest;
                }
                Frame::Length {
                    kind,
                    forward,
                    got,
                    bytes: length,
                } => {
                    if forward {
                        out.push(byte);
                    }
                    self.at = Frame::length_byte(kind, forward, got, length, byte);
                    bytes = rest;
                }
                Frame::Body { forward, left } => {
                    let take = left.min(bytes.len());
                    if forward {
                        out.extend_from_slice(&bytes[..take]);
                    }
                    bytes = &bytes[take..];
                    self.at = if take == left {
                        Frame::Type
                    } else {
                        Frame::Body {
                            forward,
                            left: left - take,
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    const SSL: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\x00x\x00\x00";
        let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    #[tokio::test]
    async fn the_url_keeps_everything_but_host_and_port() {
        let proxy = Proxy::start("postgres://u:p%40ss@db.example:6543/app?sslmode=disable").await;
        let url = proxy.url();
        assert!(url.starts_with("postgres://u:p%40ss@127.0.0.1:"), "{url}");
        assert!(url.ends_with("/app?sslmode=disable"), "{url}");
        assert_eq!(proxy.state.upstream, "db.example:6543");

        let proxy = Proxy::start("postgres://localhost").await;
        assert_eq!(proxy.state.upstream, "localhost:5432");
        assert!(proxy.url().starts_with("postgres://127.0.0.1:"));
    }

    #[test]
    fn only_the_outcomes_of_requests_sent_while_blackholing_are_lost() {
        let shared = Shared::default();
        let mut requests = RequestFramer::default();
        let mut responses = ResponseFramer::new(false);
        let ready = message(b'Z', b"I");
        let parse_complete = message(b'1', b"");
        let row = message(b'D', b"\x00\x01\x00\x00\x00\x011");
        let complete = message(b'C', b"SELECT 1\x00");
        let sync = message(b'S', b"");
        let mut out = Vec::new();
        // Byte by byte, the worst split of reads.
        let feed = |responses: &mut ResponseFramer, bytes: &[u8], out: &mut Vec<u8>| {
            for b in bytes {
                responses.filter(std::slice::from_ref(b), true, &shared, out);
            }
        };

        for b in startup() {
            requests.observe(&[b], true, &shared);
        }
        // A request sent before the blackhole is answered in full.
        requests.observe(&sync, false, &shared);
        // Then, blackholed: a prepare (answered) and an execution (lost).
        requests.observe(&sync, true, &shared);
        requests.observe(&sync, true, &shared);
        let mut answers = ready.clone(); // start-up
        for m in [&row, &complete, &ready] {
            answers.extend_from_slice(m); // the one sent before
        }
        for m in [&parse_complete, &ready] {
            answers.extend_from_slice(m); // the prepare
        }
        let expected = answers.clone();
        for m in [&row, &complete, &ready] {
            answers.extend_from_slice(m); // the execution
        }
        feed(&mut responses, &answers, &mut out);
        assert_eq!(out, expected);
        // The connection then hears nothing more.
        requests.observe(&sync, false, &shared);
        out.clear();
        feed(&mut responses, &ready, &mut out);
        assert!(out.is_empty());

        // An encryption request, refused: one byte, then framed messages.
        let shared = Shared::default();
        let mut requests = RequestFramer::default();
        requests.observe(&SSL, true, &shared);
        assert!(shared.encryption_requested.load(Ordering::SeqCst));
        let mut responses = ResponseFramer::new(true);
        out.clear();
        responses.filter(b"N", true, &shared, &mut out);
        requests.observe(&startup(), true, &shared);
        responses.filter(&ready, true, &shared, &mut out);
        assert_eq!(out, [&b"N"[..], &ready].concat());
        // Accepted: bytes only, all dropped while blackholing.
        let shared = Shared::default();
        let mut responses = ResponseFramer::new(true);
        out.clear();
        responses.filter(b"S\x16\x03", true, &shared, &mut out);
        assert_eq!(out, b"S");
        assert!(shared.opaque.load(Ordering::SeqCst));
    }

    /// A stand-in for PostgreSQL: refuses encryption, answers the start-up
    /// with ReadyForQuery, a Sync with ReadyForQuery, and a Query (counted)
    /// with CommandComplete and ReadyForQuery, 300 ms later if the query
    /// text is `slow`.
    async fn fake_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let statements = Arc::new(AtomicUsize::new(0));
        let counted = statements.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 8];
                    if s.read_exact(&mut head).await.is_err() || s.write_all(b"N").await.is_err() {
                        return;
                    }
                    let mut length = [0u8; 4];
                    if s.read_exact(&mut length).await.is_err() {
                        return;
                    }
                    let mut rest = vec![0u8; u32::from_be_bytes(length) as usize - 4];
                    if s.read_exact(&mut rest).await.is_err()
                        || s.write_all(&message(b'Z', b"I")).await.is_err()
                    {
                        return;
                    }
                    loop {
                        let mut kind = [0u8; 1];
                        if s.read_exact(&mut kind).await.is_err()
                            || s.read_exact(&mut length).await.is_err()
                        {
                            return;
                        }
                        let mut body = vec![0u8; u32::from_be_bytes(length) as usize - 4];
                        if s.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let mut reply = Vec::new();
                        if kind[0] == b'Q' {
                            counted.fetch_add(1, Ordering::SeqCst);
                            if body.starts_with(b"slow") {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            reply.extend(message(b'C', b"UPDATE 1\x00"));
                        }
                        reply.extend(message(b'Z', b"I"));
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("postgres://x@{addr}/db"), statements)
    }

    fn address(proxy: &Proxy) -> String {
        let url = proxy.url();
        let (start, end) = authority(&url);
        url[start..end].rsplit('@').next().expect("host").to_owned()
    }

    async fn open(proxy: &Proxy) -> TcpStream {
        let mut c = TcpStream::connect(address(proxy)).await.expect("connect");
        c.write_all(&SSL).await.expect("encryption request");
        expect_bytes(&mut c, b"N").await;
        c.write_all(&startup()).await.expect("start-up");
        expect_bytes(&mut c, &message(b'Z', b"I")).await;
        c
    }

    async fn expect_bytes(c: &mut TcpStream, expected: &[u8]) {
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .expect("bytes within 5 s")
            .expect("read");
        assert_eq!(got, expected);
    }

    async fn expect_silence(c: &mut TcpStream) {
        let mut got = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(200), c.read(&mut got)).await;
        assert!(r.is_err(), "expected nothing, got {r:?}");
    }

    #[tokio::test]
    async fn bytes_flow_stall_get_lost_and_get_cut() {
        let (upstream, statements) = fake_server().await;
        let proxy = Proxy::start(&upstream).await;
        let ready = message(b'Z', b"I");
        let sync = message(b'S', b"");
        let query = message(b'Q', b"update\x00");
        let slow = message(b'Q', b"slow\x00");
        let complete = [message(b'C', b"UPDATE 1\x00"), ready.clone()].concat();

        let mut c = open(&proxy).await;
        c.write_all(&query).await.expect("write");
        expect_bytes(&mut c, &complete).await;
        assert_eq!(proxy.connections(), 1);

        proxy.pause();
        c.write_all(&sync).await.expect("write");
        expect_silence(&mut c).await;
        proxy.resume();
        expect_bytes(&mut c, &ready).await;

        // Sent before the blackhole, answered during it: not lost.
        c.write_all(&slow).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.blackhole_responses(true);
        expect_bytes(&mut c, &complete).await;
        // A bare Sync (a ping) is still answered...
        c.write_all(&sync).await.expect("write");
        expect_bytes(&mut c, &ready).await;
        // ...a statement's outcome is not, though it ran.
        c.write_all(&query).await.expect("write");
        expect_silence(&mut c).await;
        assert_eq!(statements.load(Ordering::SeqCst), 3);
        proxy.blackhole_responses(false);
        // That connection stays silent; a new one works.
        c.write_all(&sync).await.expect("write");
        expect_silence(&mut c).await;
        let mut c = open(&proxy).await;
        c.write_all(&sync).await.expect("write");
        expect_bytes(&mut c, &ready).await;

        proxy.cut();
        let mut byte = [0u8; 1];
        let n = c.read(&mut byte).await;
        assert!(matches!(n, Ok(0) | Err(_)), "cut: {n:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while proxy.connections() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "connections not closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        proxy.refuse(true);
        let mut refused = TcpStream::connect(address(&proxy)).await.expect("connect");
        let n = refused.read(&mut byte).await;
        assert!(matches!(n, Ok(0) | Err(_)), "refused: {n:?}");
        proxy.refuse(false);
        let mut c = open(&proxy).await;
        c.write_all(&sync).await.expect("write");
        expect_bytes(&mut c, &ready).await;
    }
}
