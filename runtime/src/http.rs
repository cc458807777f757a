//! Serving HTTP components (the `wasi:http/proxy` world), as `wasmtime serve` does.
//!
//! The component is compiled and linked once (at Create); every request then gets a fresh
//! instance from that template in a store of its own, so requests share nothing and one that
//! traps cannot affect the next. A request the component fails (trap, error, out of memory,
//! no response) is answered with 500 and logged; the server keeps serving.
//!
//! A first start serves baseline code. When the host offers the optimized code (see
//! [`crate::CodeUpgrade`]) the template is replaced: requests from then on run optimized
//! code, and requests under way finish on the instance they have.
//!
//! All of a container's requests run on its program thread's executor, like its other
//! programs: the thread sits in the container's network namespace (so the listener and every
//! outgoing connection are made there), and a spinning request yields at each epoch tick
//! rather than holding the thread.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::host::{new_store, ComponentHost, GaugeLimiter, WasiContextError};
use crate::upgrade::UpgradeError;
use crate::wasi_stdio::Output;
use crate::{Controls, ExitStatus, RuntimeError};

/// The container environment variable naming the address an HTTP component listens on:
/// `HOST:PORT`, or a bare port for all IPv4 addresses.
pub const LISTEN_ADDR_ENV: &str = "WASI_HTTP_ADDR";

/// Where an HTTP component listens when the container does not say.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";

/// The container environment variable bounding, in seconds, how long requests already in
/// flight may take to finish after SIGTERM (or SIGINT) before the task ends anyway.
pub const DRAIN_SECONDS_ENV: &str = "WASI_HTTP_DRAIN_SECONDS";

/// The drain bound when the container does not set one: Kubernetes' default grace period, so
/// a pod's SIGKILL, not this bound, is normally what cuts a drain short.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Where and how a container's HTTP component is served, read from its environment at
/// Create so a typo fails the container there rather than after Start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServeSettings {
    pub(crate) addr: SocketAddr,
    pub(crate) drain: Duration,
}

impl ServeSettings {
    pub(crate) fn from_env(env: &[(String, String)]) -> Result<Self, RuntimeError> {
        let var = |name: &str| {
            env.iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.trim())
        };
        let addr_text = var(LISTEN_ADDR_ENV).unwrap_or(DEFAULT_LISTEN_ADDR);
        let addr = match addr_text.parse::<u16>() {
            Ok(port) => SocketAddr::from(([0, 0, 0, 0], port)),
            Err(_) => addr_text.parse().map_err(|e| {
                RuntimeError::InvalidSpec(format!(
                    "{LISTEN_ADDR_ENV}={addr_text} is not HOST:PORT or a port: {e}"
                ))
            })?,
        };
        let drain = match var(DRAIN_SECONDS_ENV) {
            None => DEFAULT_DRAIN,
            Some(text) => text
                .parse::<f64>()
                .ok()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(|| {
                    RuntimeError::InvalidSpec(format!(
                        "{DRAIN_SECONDS_ENV}={text} is not a number of seconds"
                    ))
                })?,
        };
        Ok(ServeSettings { addr, drain })
    }
}

/// Makes the WASI context of one request (args, env, preopens, the container's stdout and
/// stderr).
pub(crate) type ContextFactory = dyn Fn() -> Result<WasiCtx, WasiContextError> + Send + Sync;

/// Loads and links the optimized code a server on baseline code switches to.
pub(crate) type LoadOptimized =
    Box<dyn FnOnce() -> Result<ProxyPre<ComponentHost>, OptimizedCodeError> + Send>;

/// Why a server on baseline code stays on it: the optimized code it was offered did not
/// load, or does not link.
#[derive(Debug, Error)]
pub(crate) enum OptimizedCodeError {
    /// The handed-over code could not be opened, checked or loaded.
    #[error("wasmtime: {0}")]
    Load(#[from] UpgradeError),
    /// The optimized serving engine could not be made, or the code does not link with it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The code a server starts with: its linked component and, when that is baseline code,
/// how to load the optimized code once `Controls::upgrade` offers it.
pub(crate) struct ServedCode {
    pub(crate) pre: ProxyPre<ComponentHost>,
    pub(crate) optimized: Option<LoadOptimized>,
}

/// What every request of one server needs.
struct RequestHandler {
    /// The template of each request's instance; replaced (once) by optimized code.
    pre: RwLock<ProxyPre<ComponentHost>>,
    new_ctx: Box<ContextFactory>,
    controls: Controls,
    stderr: Option<Output>,
    guest_path: String,
}

/// Serves `pre` until a stop request, then drains. Returns the task's status:
/// 0 after a drain that finished in time, 128+signal when the bound cut it short, 137 on
/// SIGKILL (immediate, in-flight requests are dropped).
pub(crate) async fn serve(
    code: ServedCode,
    listener: std::net::TcpListener,
    settings: &ServeSettings,
    new_ctx: Box<ContextFactory>,
    stderr: Option<Output>,
    controls: &Controls,
    guest_path: &str,
) -> ExitStatus {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return ExitStatus::Failed(format!("{guest_path}: listening socket: {e}")),
    };
    log::info!("{guest_path}: serving HTTP on {}", settings.addr);
    let handler = Arc::new(RequestHandler {
        pre: RwLock::new(code.pre),
        new_ctx,
        controls: controls.clone(),
        stderr,
        guest_path: guest_path.to_string(),
    });
    let (shutdown, shutdown_seen) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut load_optimized = code.optimized;
    let signal = loop {
        tokio::select! {
            biased;
            signal = controls.stopper.wait() => break signal,
            () = controls.upgrade.next(), if load_optimized.is_some() => {
                if let Some(load) = load_optimized.take() {
                    // Off this thread: checking and mapping tens of megabytes of code must
                    // not hold up the requests it serves meanwhile.
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        handler.switch(tokio::task::spawn_blocking(load).await);
                    });
                }
            }
            // Reaps finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = controls.pauser.gate(listener.accept()) => match accepted {
                Ok((stream, peer)) => {
                    let connection = serve_connection(
                        handler.clone(),
                        stream,
                        shutdown_seen.clone(),
                    );
                    let pauser = controls.pauser.clone();
                    connections.spawn(async move {
                        if let Err(e) = pauser.gate(connection).await {
                            log::debug!("HTTP connection from {peer}: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: retrying at once would spin.
                    log::warn!("{guest_path}: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };
    drop(listener);
    if signal == libc::SIGKILL {
        return ExitStatus::Signaled(signal);
    }
    let _ = shutdown.send(true);
    log::info!(
        "{guest_path}: signal {signal}: stopped accepting, draining {} connection(s) for up to {:?}",
        connections.len(),
        settings.drain
    );
    let drained = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        biased;
        _ = controls.stopper.wait_for_kill() => ExitStatus::Signaled(libc::SIGKILL),
        _ = drained => {
            log::info!("{guest_path}: drained");
            ExitStatus::Exited(0)
        }
        _ = tokio::time::sleep(settings.drain) => {
            log::warn!(
                "{guest_path}: {} connection(s) still open after the drain bound; stopping",
                connections.len()
            );
            ExitStatus::Signaled(signal)
        }
    }
}

/// Binds the handler's listening socket. Called by the program thread (so the socket belongs
/// to the container's network namespace) before it gives up its privileges.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves one connection's requests until the client closes it or, after a shutdown, until
/// the request in progress is answered.
async fn serve_connection(
    handler: Arc<RequestHandler>,
    stream: tokio::net::TcpStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> hyper::Result<()> {
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        // Sender gone or shutdown: either way this connection should finish up.
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

impl RequestHandler {
    /// Serves the `loaded` optimized code from the next request on. Code that did not load
    /// leaves the server on its baseline code, which works.
    fn switch(
        &self,
        loaded: Result<Result<ProxyPre<ComponentHost>, OptimizedCodeError>, tokio::task::JoinError>,
    ) {
        match loaded {
            Ok(Ok(pre)) => {
                *self.pre.write().unwrap_or_else(PoisonError::into_inner) = pre;
                log::info!(
                    "{}: serving optimized (Cranelift) code from now on; requests under way \
                     finish on baseline code",
                    self.guest_path
                );
            }
            Ok(Err(e)) => log::warn!(
                "{}: staying on baseline code: the optimized code did not load: {e}",
                self.guest_path
            ),
            Err(e) => log::warn!(
                "{}: staying on baseline code: loading the optimized code failed: {e}",
                self.guest_path
            ),
        }
    }

    async fn handle(
        &self,
        request: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        match self.call_guest(request).await {
            Ok(response) => response,
            Err(e) => {
                log::warn!("{}: {method} {uri}: {e:?}", self.guest_path);
                if let Some(stderr) = &self.stderr {
                    stderr
                        .write_message(&format!("Error: {method} {uri}: {e:?}\n"))
                        .await;
                }
                internal_error()
            }
        }
    }

    async fn call_guest(
        &self,
        request: hyper::Request<Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let host = ComponentHost {
            // As a message: the request's log line and stderr show its text, as they always
            // have, and the text already holds the causes.
            ctx: (self.new_ctx)().map_err(|e| wasmtime::Error::msg(e.to_string()))?,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: GaugeLimiter::new(self.controls.gauge.clone()),
        };
        // One template for the whole request: its store belongs to that template's engine.
        let pre = self
            .pre
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut store = new_store(pre.engine(), host, |h| &mut h.limits);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pauser = self.controls.pauser.clone();
        // The guest keeps running after it has set the response: it writes the body while
        // hyper sends it. So the call is a task of its own, not part of this future.
        let call = tokio::spawn(async move {
            pauser
                .gate(async {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, request, out)
                        .await
                })
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(wasmtime::format_err!(
                "the component answered with the error {code:?}"
            )),
            // The outparam was dropped unset: the call ended (trap, error, or a return
            // without a response); its result says which.
            Err(_) => match call.await {
                Ok(Ok(())) => Err(wasmtime::format_err!(
                    "the component returned without setting a response"
                )),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(wasmtime::format_err!("the request's task failed: {e}")),
            },
        }
    }
}

fn internal_error() -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(b"internal server error\n"))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_default_and_parse() {
        let default = ServeSettings::from_env(&env(&[("PATH", "/")])).unwrap();
        assert_eq!(default.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(default.drain, DEFAULT_DRAIN);
        let port = ServeSettings::from_env(&env(&[(LISTEN_ADDR_ENV, "9000")])).unwrap();
        assert_eq!(port.addr, "0.0.0.0:9000".parse().unwrap());
        let full = ServeSettings::from_env(&env(&[
            (LISTEN_ADDR_ENV, "127.0.0.1:81"),
            (DRAIN_SECONDS_ENV, "0.5"),
        ]))
        .unwrap();
        assert_eq!(full.addr, "127.0.0.1:81".parse().unwrap());
        assert_eq!(full.drain, Duration::from_millis(500));
        for bad in [
            (LISTEN_ADDR_ENV, "localhost"),
            (DRAIN_SECONDS_ENV, "-1"),
            (DRAIN_SECONDS_ENV, "soon"),
        ] {
            let err = ServeSettings::from_env(&env(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad.0), "{err}");
        }
    }
}
