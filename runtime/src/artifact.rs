//! The two kinds of compiled code the compile cache holds, behind one interface, so the
//! cache, tiering and background optimization treat modules and components alike.

use std::fs::File;
use std::os::fd::AsRawFd;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// Compiled code that can be stored in the cache and mapped back from it.
pub(crate) trait Artifact: Sized {
    /// "module" or "component", for messages.
    const WHAT: &'static str;

    /// Compiles `wasm` with `engine`.
    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self>;

    /// Compiles `wasm` with `engine` straight to the bytes a later [`Artifact::deserialize`]
    /// maps back. Cheaper than [`Artifact::compile`] and then serializing: the code is never
    /// made executable in this process nor copied out again, which for a program of tens of
    /// megabytes is a tenth of a baseline compile.
    fn precompile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Vec<u8>>;

    /// Loads `artifact` (copied into memory of its own): what a compile becomes when its
    /// artifact could not be stored and mapped back from the cache.
    ///
    /// # Safety
    /// `artifact` must come from [`Artifact::precompile`] with a compatible engine:
    /// deserializing runs its code without validation.
    unsafe fn deserialize_bytes(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Self>;

    /// Maps the artifact at the start of `file`.
    ///
    /// # Safety
    /// `file` must hold, from offset 0, an artifact serialized by a compatible wasmtime:
    /// deserializing runs its code without validation. The cache checks an entry's
    /// checksums before it calls this.
    unsafe fn deserialize(engine: &Engine, file: File) -> wasmtime::Result<Self>;
}

impl Artifact for Module {
    const WHAT: &'static str = "module";

    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        Module::new(engine, wasm)
    }

    fn precompile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_module(wasm)
    }

    unsafe fn deserialize_bytes(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promises.
        unsafe { Module::deserialize(engine, artifact) }
    }

    unsafe fn deserialize(engine: &Engine, file: File) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promises.
        unsafe { Module::deserialize_open_file(engine, file) }
    }
}

impl Artifact for Component {
    const WHAT: &'static str = "component";

    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        Component::new(engine, wasm)
    }

    fn precompile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_component(wasm)
    }

    unsafe fn deserialize_bytes(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promises.
        unsafe { Component::deserialize(engine, artifact) }
    }

    /// Components have no `deserialize_open_file`; opening the checked file's
    /// /proc/self/fd link maps that same file, never one renamed over its name since.
    unsafe fn deserialize(engine: &Engine, file: File) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promises.
        unsafe {
            Component::deserialize_file(engine, format!("/proc/self/fd/{}", file.as_raw_fd()))
        }
    }
}
