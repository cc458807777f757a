//! Files written whole or not at all: to a temporary name beside the target, then renamed
//! over it, so a reader sees the old file or the new one, never a part.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// Writes `parts` to `path` through a temporary file in `dir` renamed into place, so readers
/// see the whole file or none of it.
pub(crate) fn write_atomically(dir: &Path, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let temp = dir.join(format!(".tmp-{}-{tid}-{nanos:x}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&temp)?;
        for part in parts {
            file.write_all(part)?;
        }
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}
