//! The control protocol on `.mesh/mesh.sock`: one JSON request per line, one JSON response per line. Used by
//! `mesh status`, `kill`, `restart` and `down` while the supervisor runs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::StateFile;

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The current state of every process.
    Status,
    /// Crash injection: send a signal to a process group (recorded as `killed`, cause `chaos`).
    Kill {
        /// The process, or `None` with `random` for a random running one.
        name: Option<String>,
        /// Pick a random running process.
        #[serde(default)]
        random: bool,
        /// Signal name (`KILL`, `TERM`, `STOP`, `CONT`...).
        signal: String,
        /// With `STOP`: send `CONT` after this many seconds.
        pause_secs: Option<f64>,
        /// Do not restart it after it exits.
        #[serde(default)]
        no_restart: bool,
    },
    /// Start a FAILED or STOPPED process again, forgetting its restart history.
    Restart {
        /// The process.
        name: String,
    },
    /// Stop everything in reverse dependency order and exit.
    Down {
        /// Per-process grace before SIGKILL, overriding the deployment's.
        timeout_secs: Option<f64>,
    },
}

/// The longest wait a request may ask for (a pause, a grace period): one day. Longer is a typo or an attack, and
/// a wait past what `Instant` can hold would panic the supervisor.
pub const MAX_SECONDS: f64 = 86_400.0;

/// `secs` as a duration, if it is a number of seconds a request may carry: finite, from 0 to [`MAX_SECONDS`].
/// The error names the field and the range.
pub fn seconds(field: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{field} must be a number of seconds from 0 to {MAX_SECONDS}, not {secs}"))
    }
}

impl Request {
    /// Decodes one request line and checks every number in it, so that no request can make the supervisor panic
    /// (it is the parent of every process: its panic would take the whole deployment down).
    pub fn decode(line: &str) -> Result<Request, String> {
        let request: Request = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
        match &request {
            Request::Kill { pause_secs: Some(secs), .. } => seconds("pause_secs", *secs).map(drop)?,
            Request::Down { timeout_secs: Some(secs) } => seconds("timeout_secs", *secs).map(drop)?,
            _ => {}
        }
        Ok(request)
    }
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What went wrong, if not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateFile>,
    /// For `kill`: the process that got the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Response {
    /// Success with the state.
    pub fn ok(state: StateFile) -> Self {
        Self { ok: true, error: None, state: Some(state), target: None }
    }
    /// Failure with a reason.
    pub fn error(reason: impl Into<String>) -> Self {
        Self { ok: false, error: Some(reason.into()), state: None, target: None }
    }
}

/// Why talking to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No supervisor listens on the socket.
    #[error("no supervisor is running (no answer on {0})")]
    NotRunning(String),
    /// The exchange failed.
    #[error("talking to the supervisor failed: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not understood.
    #[error("the supervisor's answer is not understood: {0}")]
    Protocol(String),
}

/// Sends one request and waits for the answer (up to `timeout`).
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let mut stream = UnixStream::connect(socket).map_err(|_| ControlError::NotRunning(socket.display().to_string()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(format!("{e}: {answer:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let r = Request::Kill {
            name: Some("agent-sales".into()),
            random: false,
            signal: "KILL".into(),
            pause_secs: None,
            no_restart: false,
        };
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.starts_with(r#"{"cmd":"kill","name":"agent-sales""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).expect("status"), Request::Status);
    }

    #[test]
    fn waits_that_no_duration_can_hold_are_refused_by_name() {
        for (line, field) in [
            (r#"{"cmd":"kill","name":"agent-sales","signal":"STOP","pause_secs":1e20}"#, "pause_secs"),
            (r#"{"cmd":"kill","name":"agent-sales","signal":"STOP","pause_secs":-1}"#, "pause_secs"),
            (r#"{"cmd":"down","timeout_secs":-1}"#, "timeout_secs"),
            (r#"{"cmd":"down","timeout_secs":86400.5}"#, "timeout_secs"),
        ] {
            let error = Request::decode(line).expect_err(line);
            assert!(error.contains(field) && error.contains("from 0 to 86400"), "{line}: {error}");
        }
        assert_eq!(
            Request::decode(r#"{"cmd":"down","timeout_secs":2.5}"#),
            Ok(Request::Down { timeout_secs: Some(2.5) })
        );
    }

    proptest::proptest! {
        /// Whatever arrives on the socket, decoding answers instead of panicking, and a request it accepts carries
        /// only waits the supervisor can turn into an `Instant`.
        #[test]
        fn no_request_line_panics_the_decoder(
            line in proptest::prelude::any::<String>(),
            secs in proptest::prelude::any::<f64>(),
            cmd in proptest::sample::select(vec!["kill", "down", "status", "restart"]),
        ) {
            let _ = Request::decode(&line);
            let built = format!(r#"{{"cmd":"{cmd}","name":"a","signal":"STOP","pause_secs":{secs},"timeout_secs":{secs}}}"#);
            if let Ok(request) = Request::decode(&built) {
                let waits = match request {
                    Request::Kill { pause_secs, .. } => pause_secs,
                    Request::Down { timeout_secs } => timeout_secs,
                    _ => None,
                };
                if let Some(w) = waits {
                    let _ = std::time::Instant::now() + seconds("wait", w).expect("accepted waits are durations");
                }
            }
        }
    }
}
