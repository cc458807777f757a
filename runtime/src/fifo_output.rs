//! stdout/stderr over a FIFO, written without ever blocking the program's thread.
//!
//! A blocking `write(2)` into a pipe nobody drains would park the program's thread where no
//! stop request can reach it, and SIGKILL would not stop the task. Here bytes the pipe cannot
//! take yet wait in a buffer, and the program waits for the pipe on its executor, where a stop
//! request cancels the wait.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe::Sender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// How much a program may write ahead of the pipe before it has to wait.
const WRITE_BUDGET: usize = 64 * 1024;

struct Shared {
    pipe: Sender,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bytes accepted from the program that the pipe has not taken yet.
    pending: VecDeque<Bytes>,
    /// The first write error; the stream is dead after it.
    failed: Option<io::ErrorKind>,
}

/// A FIFO-backed output stream; clones share the pipe and the pending bytes, as every handle
/// of one stdout must.
#[derive(Clone)]
pub(crate) struct FifoOutput {
    shared: Arc<Shared>,
}

impl FifoOutput {
    /// Must be called inside the program's tokio runtime: the pipe registers with its reactor.
    pub(crate) fn new(file: std::fs::File) -> io::Result<Self> {
        Ok(FifoOutput {
            shared: Arc::new(Shared {
                pipe: Sender::from_file(file)?,
                state: Mutex::new(State::default()),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves as much pending data into the pipe as it takes now.
    fn push(&self, state: &mut State) {
        while let Some(front) = state.pending.front_mut() {
            match self.shared.pipe.try_write(front) {
                Ok(n) if n == front.len() => {
                    state.pending.pop_front();
                }
                Ok(n) => {
                    let _ = front.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    state.failed = Some(e.kind());
                    state.pending.clear();
                    return;
                }
            }
        }
    }

    /// Resolves once every accepted byte is in the pipe (or the pipe failed).
    pub(crate) async fn drained(&self) {
        std::future::poll_fn(|cx| self.poll_drained(cx)).await
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            {
                let mut state = self.state();
                self.push(&mut state);
                if state.pending.is_empty() || state.failed.is_some() {
                    return Poll::Ready(());
                }
            }
            match self.shared.pipe.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    self.state().failed = Some(e.kind());
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn error(kind: io::ErrorKind) -> StreamError {
        if kind == io::ErrorKind::BrokenPipe {
            StreamError::Closed
        } else {
            StreamError::LastOperationFailed(io::Error::from(kind).into())
        }
    }
}

impl IsTerminal for FifoOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for FifoOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FifoOutput {
    async fn ready(&mut self) {
        self.drained().await
    }
}

impl OutputStream for FifoOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut state = self.state();
        if let Some(kind) = state.failed {
            return Err(Self::error(kind));
        }
        if !bytes.is_empty() {
            state.pending.push_back(bytes);
        }
        self.push(&mut state);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Nothing is buffered beyond `pending`, which `ready` drains.
        match self.state().failed {
            Some(kind) => Err(Self::error(kind)),
            None => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let mut state = self.state();
        self.push(&mut state);
        if let Some(kind) = state.failed {
            return Err(Self::error(kind));
        }
        let queued: usize = state.pending.iter().map(Bytes::len).sum();
        Ok(WRITE_BUDGET.saturating_sub(queued))
    }
}

impl AsyncWrite for FifoOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.poll_drained(cx).is_pending() {
            return Poll::Pending;
        }
        let mut state = self.state();
        if let Some(kind) = state.failed {
            return Poll::Ready(Err(kind.into()));
        }
        state.pending.push_back(Bytes::copy_from_slice(buf));
        self.push(&mut state);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drained(cx).map(Ok)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
