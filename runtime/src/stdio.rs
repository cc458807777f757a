use std::fs::File;
use std::os::unix::fs::FileTypeExt;

use wasmtime_wasi::cli::{AsyncStdinStream, InputFile, OutputFile};

/// The three standard streams of a program, already opened by the host.
///
/// The host opens them (it knows its own conventions: FIFOs, log files); this crate only
/// decides how to read and write them. `None` means the stream is closed: reads see EOF and
/// writes are discarded.
#[derive(Debug, Default)]
pub struct StdioFiles {
    /// Standard input.
    pub stdin: Option<File>,
    /// Standard output.
    pub stdout: Option<File>,
    /// Standard error.
    pub stderr: Option<File>,
}

pub(crate) enum Stdin {
    Closed,
    /// A FIFO read without blocking the program's thread, so a stop request can interrupt a
    /// program waiting for input.
    Pipe(AsyncStdinStream),
    File(InputFile),
}

/// Must be called inside the program's tokio runtime: a FIFO registers with its reactor.
pub(crate) fn stdin_stream(file: Option<File>) -> std::io::Result<Stdin> {
    let Some(file) = file else {
        return Ok(Stdin::Closed);
    };
    if file.metadata()?.file_type().is_fifo() {
        let pipe = tokio::net::unix::pipe::Receiver::from_file(file)?;
        Ok(Stdin::Pipe(AsyncStdinStream::new(pipe)))
    } else {
        Ok(Stdin::File(InputFile::new(file)))
    }
}

/// Output is written synchronously on the program's own thread: writes land in order, nothing
/// is buffered that could be lost when the program ends, and a trap message written after the
/// program's last output appears after it.
pub(crate) fn output_stream(file: Option<File>) -> Option<OutputFile> {
    file.map(OutputFile::new)
}
