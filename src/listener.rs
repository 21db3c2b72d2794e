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

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::limits::PeerAddr;

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
        (GuardedStream { inner: stream, stall: self.stall, timer: None, stalled: false, reader: None }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, GuardedListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A TCP connection that fails once a write has been stuck for the stall timeout.
pub struct GuardedStream {
    inner: TcpStream,
    stall: Duration,
    /// Running while a write is pending; dropped by any progress.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
    /// The last pending reader, woken when the connection stalls (a websocket's reader
    /// waits for bytes that a stalled client will never send).
    reader: Option<Waker>,
}

fn stalled_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")
}

impl GuardedStream {
    /// Runs the stall clock while a write is pending: `Pending` until it has run out, then
    /// the connection is stalled for good.
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.stall;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer = None;
        self.stalled = true;
        metrics::counter!("fleetcast_connections_stalled_total").increment(1);
        tracing::info!(stall_ms = stall.as_millis() as u64, "client stopped reading; connection closed");
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Err(stalled_error()))
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
        if this.stalled {
            return Poll::Ready(Err(stalled_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if poll.is_pending() {
            this.reader = Some(cx.waker().clone());
        }
        poll
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Err(stalled_error()));
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
        if this.stalled {
            return Poll::Ready(Err(stalled_error()));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Err(stalled_error()));
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
        if this.stalled {
            // Nothing more can be sent; dropping the stream closes it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
