//! The program's standard streams as WASI sees them: the files the host opened (FIFOs, log
//! files, a terminal) turned into WASI input and output streams that never block a thread.
//! Where those files come from is the host's business; a terminal's streams are
//! `terminal_stdio`'s.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;

use std::pin::Pin;

use tokio::io::AsyncWriteExt;
use wasmtime_wasi::cli::{AsyncStdinStream, InputFile, OutputFile, StdoutStream};
use wasmtime_wasi::WasiCtxBuilder;

use crate::fifo_output::FifoOutput;
use crate::terminal_stdio::{TerminalInput, TerminalOutput};

/// The three standard streams of a program, already opened by the host.
///
/// The host opens them (it knows its own conventions: FIFOs, log files, a pty); this crate
/// only decides how to read and write them. `None` means the stream is closed: reads see EOF
/// and writes are discarded.
#[derive(Debug, Default)]
pub struct StdioFiles {
    /// Standard input.
    pub stdin: Option<File>,
    /// Standard output.
    pub stdout: Option<File>,
    /// Standard error.
    pub stderr: Option<File>,
    /// The streams are a terminal (the slave side of a pty): the program sees a tty.
    pub terminal: bool,
}

pub(crate) enum Stdin {
    Closed,
    Terminal(TerminalInput),
    /// A FIFO read without blocking the program's thread, so a stop request can interrupt a
    /// program waiting for input.
    Pipe(AsyncStdinStream),
    File(InputFile),
}

/// Must be called inside the program's tokio runtime: a FIFO registers with its reactor.
pub(crate) fn stdin_stream(file: Option<File>, terminal: bool) -> std::io::Result<Stdin> {
    let Some(file) = file else {
        return Ok(Stdin::Closed);
    };
    if terminal {
        return Ok(Stdin::Terminal(TerminalInput::new(file)?));
    }
    if file.metadata()?.file_type().is_fifo() {
        let pipe = tokio::net::unix::pipe::Receiver::from_file(file)?;
        Ok(Stdin::Pipe(AsyncStdinStream::new(pipe)))
    } else {
        Ok(Stdin::File(InputFile::new(file)))
    }
}

/// Where a program's stdout or stderr goes.
#[derive(Clone)]
pub(crate) enum Output {
    /// A FIFO (containerd's usual stdio): written without blocking the program's thread.
    Fifo(FifoOutput),
    /// A regular file (`file://` stdio): plain writes, which a file never blocks for long.
    File(OutputFile),
    /// A terminal: written through the reactor, seen by the program as a tty.
    Terminal(TerminalOutput),
}

/// Must be called inside the program's tokio runtime: a FIFO registers with its reactor.
pub(crate) fn output_stream(file: Option<File>, terminal: bool) -> std::io::Result<Option<Output>> {
    let Some(file) = file else {
        return Ok(None);
    };
    if terminal {
        return Ok(Some(Output::Terminal(TerminalOutput::new(file)?)));
    }
    if file.metadata()?.file_type().is_fifo() {
        Ok(Some(Output::Fifo(FifoOutput::new(file)?)))
    } else {
        Ok(Some(Output::File(OutputFile::new(file))))
    }
}

impl Output {
    pub(crate) fn install_as_stdout(&self, builder: &mut WasiCtxBuilder) {
        match self {
            Output::Fifo(fifo) => builder.stdout(fifo.clone()),
            Output::File(file) => builder.stdout(file.clone()),
            Output::Terminal(tty) => builder.stdout(tty.clone()),
        };
    }

    pub(crate) fn install_as_stderr(&self, builder: &mut WasiCtxBuilder) {
        match self {
            Output::Fifo(fifo) => builder.stderr(fifo.clone()),
            Output::File(file) => builder.stderr(file.clone()),
            Output::Terminal(tty) => builder.stderr(tty.clone()),
        };
    }

    /// Resolves once everything the program wrote has reached the pipe or file.
    pub(crate) async fn drained(&self) {
        if let Output::Fifo(fifo) = self {
            fifo.drained().await;
        }
    }

    /// Appends a host message (a trap report) after the program's own output.
    pub(crate) async fn write_message(&self, message: &str) {
        let result = match self {
            Output::Fifo(fifo) => {
                let mut fifo = fifo.clone();
                fifo.write_all(message.as_bytes()).await
            }
            Output::File(file) => {
                let mut file = file.clone();
                file.write_all(message.as_bytes()).await
            }
            Output::Terminal(tty) => {
                let mut tty = Pin::from(StdoutStream::async_stream(tty));
                match tty.write_all(message.as_bytes()).await {
                    Ok(()) => tty.flush().await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            log::debug!("writing to the program's stderr: {e}");
        }
        self.drained().await;
    }
}
