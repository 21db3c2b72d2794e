//! The node's TCP listener, which cuts off clients that stop reading. Every accepted
//! connection is a [`GuardedStream`]: once a write has made no progress for the stall
//! timeout (`--write-stall-timeout-ms`) — the kernel's send buffer full because the client
//! no longer reads — the connection fails every read and write from then on, so whatever
//! serves it (the HTTP connection, an SSE stream, a websocket and its Socket.IO session)
//! closes and frees what it held. Without it a websocket writer blocked on such a client
//! stays blocked forever, with its queue and buffers, and the session keeps counting as
//! connected. The client reconnects and recovers what it missed with `since` /
//! `Last-Event-ID`. A client on a slow link is not affected: any progress restarts the
//! clock. Cut-offs are counted in `fleetcast_connections_stalled_total`.
//!
//! The same end can be brought about from outside: each connection's [`Cut`] travels in
//! its connect info ([`Peer`]), so the Socket.IO edge can cut the connection of a socket
//! that must reconnect (after a pub/sub gap it cannot fill) while the client, seeing its
//! transport close, reconnects on its own.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A connection's connect info: its peer address and the handle that cuts it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Ends the connection.
    pub cut: Cut,
}

/// Ends a connection from outside: every read and write fails from then on, exactly as for
/// a stalled client, and whatever serves it closes.
#[derive(Clone, Debug, Default)]
pub struct Cut(Arc<CutState>);

#[derive(Debug, Default)]
struct CutState {
    cut: AtomicBool,
    /// The last pending reader and writer, woken by the cut (a websocket's reader waits
    /// for bytes that may never come).
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Cut {
    /// Cuts the connection.
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::SeqCst);
        self.0.reader.wake();
        self.0.writer.wake();
    }

    fn is_cut(&self) -> bool {
        self.0.cut.load(Ordering::SeqCst)
    }
}

/// A TCP listener whose connections are [`GuardedStream`]s.
pub struct GuardedListener {
    inner: TcpListener,
    stall: Duration,
}

impl GuardedListener {
    /// Guards the connections of `inner` with the stall timeout `stall`.
    pub fn new(inner: TcpListener, stall: Duration) -> Self {
        Self { inner, stall }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (GuardedStream { inner: stream, stall: self.stall, timer: None, cut: Cut::default() }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Peer { addr: *stream.remote_addr(), cut: stream.io().cut.clone() }
    }
}

/// A TCP connection that fails once a write has been stuck for the stall timeout, or once
/// it is cut.
pub struct GuardedStream {
    inner: TcpStream,
    stall: Duration,
    /// Running while a write is pending; dropped by any progress.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set by a stall or from outside.
    cut: Cut,
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection cut (stalled, or told to reconnect)")
}

impl GuardedStream {
    /// Runs the stall clock while a write is pending: `Pending` until it has run out, then
    /// the connection is stalled for good.
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.stall;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_pending() {
            self.cut.0.writer.register(cx.waker());
            if !self.cut.is_cut() {
                return Poll::Pending;
            }
            return Poll::Ready(Err(cut_error()));
        }
        self.timer = None;
        self.cut.cut();
        metrics::counter!("fleetcast_connections_stalled_total").increment(1);
        tracing::info!(stall_ms = stall.as_millis() as u64, "client stopped reading; connection closed");
        Poll::Ready(Err(cut_error()))
    }

    /// The outcome of a write attempt: bytes written stop the stall clock (a flush does
    /// not: on TCP it moves nothing and is always ready).
    fn written(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.timer = None;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.pending_write(cx),
            other => other,
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if poll.is_pending() {
            this.cut.0.reader.register(cx.waker());
            if this.cut.is_cut() {
                return Poll::Ready(Err(cut_error()));
            }
        }
        poll
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        // A write still pending when the stall clock ran out ends here too (the clock's
        // wake-up may only lead to a flush).
        if this.timer.is_some()
            && let Poll::Ready(Err(e)) = this.pending_write::<()>(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            // Nothing more can be sent; dropping the stream closes it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
