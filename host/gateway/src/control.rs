//! The control protocol: JSON lines over a unix stream socket.
//!
//! The client writes one [`Request`] line; the daemon answers with one
//! [`Response`] line and closes. `up` answers only when the IKE SA and its first
//! Child SA are established or the negotiation failed (or the client's timeout).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Up { name: String, timeout_secs: Option<u64> },
    Down { name: String },
    Rekey { name: String, ike: bool, child: Option<String> },
    Status,
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok { message: String },
    Status { status: Box<Status> },
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the wisp daemon at {path}: {source} (is `wisp run` running? use --control PATH)")]
    Connect { path: String, source: std::io::Error },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer from the daemon: {0}")]
    Malformed(String),
}

/// Send one request and wait for the answer.
pub fn call(path: &Path, req: &Request, timeout: Option<Duration>) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| ClientError::Connect { path: path.display().to_string(), source: e })?;
    s.set_read_timeout(timeout)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Malformed(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(ClientError::Malformed("daemon closed the connection without an answer".into()));
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::Malformed(format!("{e}: {answer}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r = Request::Up { name: "b".into(), timeout_secs: Some(5) };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"cmd":"up","name":"b","timeout_secs":5}"#);
        let back: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(back, Request::Status);
        let e = Response::Error { message: "AUTHENTICATION_FAILED".into() };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), e);
    }
}
