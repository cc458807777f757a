//! Looking into a network namespace the test made (a pod's, a Docker container's): a thread
//! of the test enters it and connects on its loopback, so no test traffic leaves it.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// Runs `f` on a thread of its own that has entered the network namespace at `netns` (a
/// `/proc/PID/ns/net` or a bind-mounted namespace file). setns changes only the calling
/// thread's namespace, so the test's other threads stay where they are.
pub fn inside<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let namespace = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor this thread owns, for this thread only.
        if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow!("the thread in the network namespace panicked"))?
}

/// The names of the network interfaces of the calling thread's namespace.
pub fn interface_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array ending in an entry of index 0, which is read up
    // to that entry and then freed.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut entry = list;
        while (*entry).if_index != 0 {
            names.push(
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}

/// Whether two namespace files name the same namespace (same device and inode).
pub fn same_namespace(a: &Path, b: &Path) -> Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}
