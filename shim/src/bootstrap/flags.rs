use thiserror::Error;

/// What is wrong with a command line: a usage error (the binary exits with 2, as Go's
/// `flag` package makes containerd's own shims do).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlagError {
    /// A second positional argument after the action.
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(String),
    /// A boolean flag given a value that is not one.
    #[error("invalid boolean value {value:?} for -{flag}")]
    InvalidBoolean {
        /// The flag's name.
        flag: String,
        /// What it was given.
        value: String,
    },
    /// A flag that takes a value came last.
    #[error("flag -{0} needs a value")]
    MissingValue(String),
    /// A flag no containerd passes.
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
}

/// The command line containerd gives a shim, parsed the way Go's `flag` package would
/// (`-name value`, `--name value`, `-name=value`, boolean flags alone), because that is the
/// convention every containerd version follows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    /// containerd namespace of the task(s).
    pub namespace: String,
    /// Task id.
    pub id: String,
    /// containerd's gRPC socket (used to name our socket).
    pub address: String,
    /// containerd binary, for publishing events the old way: we speak ttrpc, but pass it on
    /// to the runc shims we start for native containers.
    pub publish_binary: String,
    /// Bundle directory (given to `delete`).
    pub bundle: String,
    /// Socket to serve on, given by the `start` process to the daemon it spawns.
    pub socket: String,
    /// The `BootstrapParams` containerd 2.3+ gave `start`, hex-encoded protobuf, handed to
    /// the daemon so that the runc shims it starts get what containerd gives a shim. Empty
    /// after a legacy handshake.
    pub bootstrap: String,
    /// Log at debug level.
    pub debug: bool,
    /// `-v`: print the version.
    pub version: bool,
    /// `-info`: answer a RuntimeInfo.
    pub info: bool,
    /// The action: `start`, `delete`, or empty for the daemon.
    pub action: String,
}

impl Flags {
    /// Parses `args` (without the program name). Unknown flags are an error so a typo in a
    /// manual invocation does not silently do something else.
    pub fn parse<I, S>(args: I) -> Result<Flags, FlagError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut flags = Flags::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                if flags.action.is_empty() {
                    flags.action = arg;
                    continue;
                }
                return Err(FlagError::UnexpectedArgument(arg));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            let boolean = |inline: Option<String>| -> Result<bool, FlagError> {
                match inline.as_deref() {
                    None | Some("true") | Some("1") => Ok(true),
                    Some("false") | Some("0") => Ok(false),
                    Some(other) => Err(FlagError::InvalidBoolean {
                        flag: name.to_string(),
                        value: other.to_string(),
                    }),
                }
            };
            match name {
                "debug" => flags.debug = boolean(inline)?,
                "v" | "version" => flags.version = boolean(inline)?,
                "info" => flags.info = boolean(inline)?,
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket"
                | "bootstrap" => {
                    let value = match inline {
                        Some(v) => v,
                        None => args
                            .next()
                            .ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
                    };
                    let slot = match name {
                        "namespace" => &mut flags.namespace,
                        "id" => &mut flags.id,
                        "address" => &mut flags.address,
                        "publish-binary" => &mut flags.publish_binary,
                        "bundle" => &mut flags.bundle,
                        "bootstrap" => &mut flags.bootstrap,
                        _ => &mut flags.socket,
                    };
                    *slot = value;
                }
                other => return Err(FlagError::Undefined(other.to_string())),
            }
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_start_invocation() {
        let f = Flags::parse([
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action, "start");
    }

    #[test]
    fn accepts_double_dash_and_inline_values() {
        let f = Flags::parse(["--id=x", "--bundle", "/b", "-debug=false", "delete"]).unwrap();
        assert_eq!(
            (f.id.as_str(), f.bundle.as_str(), f.debug),
            ("x", "/b", false)
        );
        assert_eq!(
            Flags::parse(["-bogus"]).unwrap_err().to_string(),
            "flag provided but not defined: -bogus"
        );
        assert_eq!(
            Flags::parse(["-id"]),
            Err(FlagError::MissingValue("id".into()))
        );
        assert!(Flags::parse(["-info"]).unwrap().info);
        assert!(Flags::parse(["-v"]).unwrap().version);
        assert_eq!(
            Flags::parse(["-bootstrap", "0a01"]).unwrap().bootstrap,
            "0a01"
        );
    }
}
