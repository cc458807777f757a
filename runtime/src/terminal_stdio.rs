//! Standard streams on a terminal: the slave side of a pty the host owns (`ctr run -t`).
//!
//! The program reads and writes the slave without ever blocking its thread (the descriptor is
//! non-blocking and waits happen on the executor, where a stop request cancels them), and it
//! sees a terminal: WASI reports its stdio as a character device, so `isatty()` is true.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{
    AsyncStdinStream, AsyncStdoutStream, IsTerminal, StdinStream, StdoutStream,
};
use wasmtime_wasi::p2::{InputStream, OutputStream};

/// How much a program may write ahead of the terminal before it has to wait.
const WRITE_BUDGET: usize = 64 * 1024;

/// A pty slave descriptor registered with the program's reactor.
#[derive(Clone)]
struct TerminalFd(Arc<AsyncFd<File>>);

impl TerminalFd {
    /// Must be called inside the program's tokio runtime.
    fn new(file: File) -> io::Result<Self> {
        set_nonblocking(&file)?;
        // SAFETY: the AsyncFd owns the File, which keeps its descriptor open and unchanged
        // until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(file) }.map_err(io::Error::from)?;
        Ok(TerminalFd(Arc::new(fd)))
    }
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with flag arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// EIO on a pty means the other side hung up: for the program, the end of input.
fn is_hangup(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

impl AsyncRead for TerminalFd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if is_hangup(&e) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for TerminalFd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(buf)) {
                Ok(Err(e)) if is_hangup(&e) => {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
                }
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A program's stdin on the terminal.
pub(crate) struct TerminalInput(AsyncStdinStream);

impl TerminalInput {
    /// Must be called inside the program's tokio runtime.
    pub(crate) fn new(file: File) -> io::Result<Self> {
        Ok(TerminalInput(AsyncStdinStream::new(TerminalFd::new(file)?)))
    }
}

impl IsTerminal for TerminalInput {
    fn is_terminal(&self) -> bool {
        true
    }
}

impl StdinStream for TerminalInput {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        self.0.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        self.0.p2_stream()
    }
}

/// A program's stdout or stderr on the terminal. Every write is flushed before the program
/// goes on (WASI preview 1 writes block), so stdout and stderr, each its own stream, still
/// interleave on the terminal in the order the program wrote them.
#[derive(Clone)]
pub(crate) struct TerminalOutput(Arc<AsyncStdoutStream>);

impl TerminalOutput {
    /// Must be called inside the program's tokio runtime.
    pub(crate) fn new(file: File) -> io::Result<Self> {
        Ok(TerminalOutput(Arc::new(AsyncStdoutStream::new(
            WRITE_BUDGET,
            TerminalFd::new(file)?,
        ))))
    }
}

impl IsTerminal for TerminalOutput {
    fn is_terminal(&self) -> bool {
        true
    }
}

impl StdoutStream for TerminalOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        self.0.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        self.0.p2_stream()
    }
}
