//! Which name services the process's libc may use, fixed before the process enters the
//! container's root.
//!
//! A program's name lookups (wasi:sockets' ip-name-lookup) are answered by the host's libc
//! (`getaddrinfo`) inside this process, after it has pivoted into the rootfs. glibc reads
//! `/etc/nsswitch.conf` there, and for any service other than its built-in `files` and
//! `dns` it loads `libnss_SERVICE.so.2` from the image's library directories: native code
//! from the image (which a guest can write into a writable rootfs) running in this process,
//! with its control socket to the shim. Naming the services here, for every database,
//! makes glibc ignore nsswitch.conf for good: lookups still read the image's `/etc/hosts`
//! and `/etc/resolv.conf`, and never load a library.

use std::ffi::{c_char, c_int, CStr};

use thiserror::Error;

extern "C" {
    /// glibc's (public since 2.2.5): sets a database's service line as nsswitch.conf would,
    /// and keeps it from being read again.
    fn __nss_configure_lookup(database: *const c_char, services: *const c_char) -> c_int;
}

/// The databases glibc knows, each with the built-in services only.
const DATABASES: &[(&CStr, &CStr)] = &[
    (c"hosts", c"files dns"),
    (c"aliases", c"files"),
    (c"ethers", c"files"),
    (c"group", c"files"),
    (c"gshadow", c"files"),
    (c"initgroups", c"files"),
    (c"netgroup", c"files"),
    (c"networks", c"files"),
    (c"passwd", c"files"),
    (c"protocols", c"files"),
    (c"publickey", c"files"),
    (c"rpc", c"files"),
    (c"services", c"files"),
    (c"shadow", c"files"),
];

/// A database whose services could not be fixed.
#[derive(Debug, Error)]
#[error("fixing the name services of the {database} database")]
pub struct NameServiceError {
    database: String,
}

/// Fixes every database to libc's built-in services. Called while the process still sees
/// the host's root, before any lookup.
pub fn use_built_in_services_only() -> Result<(), NameServiceError> {
    for (database, services) in DATABASES {
        // SAFETY: two NUL-terminated strings that outlive the call; glibc copies them.
        if unsafe { __nss_configure_lookup(database.as_ptr(), services.as_ptr()) } != 0 {
            return Err(NameServiceError {
                database: database.to_string_lossy().into_owned(),
            });
        }
    }
    Ok(())
}
