//! The supervisor's listeners: the control socket (one JSON request per line, answered by the dispatcher) and one
//! sd_notify datagram socket per process.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixDatagram, UnixListener};
use tokio::sync::{mpsc, oneshot};

use crate::console::read_line_capped;
use crate::control::{Request, Response};

/// What the listeners hand to the dispatcher.
pub(crate) enum Msg {
    Notify { name: String, text: String, sender: Option<i32> },
    Control { request: Request, reply: oneshot::Sender<Response> },
}

/// The longest control request line; a longer one is answered with an error without being held.
const MAX_REQUEST: usize = 64 * 1024;

/// Answers control requests, one JSON line each, by handing them to the dispatcher.
pub(crate) async fn serve_control(listener: UnixListener, tx: mpsc::UnboundedSender<Msg>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: do not spin, try again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // The socket file is 0600 in a 0700 directory; the peer's uid is checked as well, so that a socket made
        // reachable by mistake (a loosened mode, a bind mount) still obeys only its own user.
        let own = nix::unistd::getuid().as_raw();
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == own => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "refused a control connection from another user");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a control connection whose peer is unknown");
                continue;
            }
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let mut line = Vec::new();
            while let Ok(Some(skipped)) = read_line_capped(&mut reader, &mut line, MAX_REQUEST).await {
                let decoded = match (skipped, std::str::from_utf8(&line)) {
                    (0, Ok(text)) => Request::decode(text),
                    (0, Err(_)) => Err("bad request: not UTF-8".to_owned()),
                    (_, _) => Err(format!("bad request: longer than {MAX_REQUEST} bytes")),
                };
                let response = match decoded {
                    Ok(request) => {
                        let (reply, answer) = oneshot::channel();
                        if tx.send(Msg::Control { request, reply }).is_err() {
                            break;
                        }
                        answer.await.unwrap_or_else(|_| Response::error("the supervisor is stopping"))
                    }
                    Err(e) => Response::error(e),
                };
                let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Forwards the sd_notify datagrams of process `name` to the dispatcher, each with its sender's pid (the kernel's
/// `SCM_CREDENTIALS`, which a sender cannot forge), so that only the process's own group is believed.
pub(crate) async fn read_notify(name: String, sock: UnixDatagram, tx: mpsc::UnboundedSender<Msg>) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt::PassCred};
    use std::os::fd::AsRawFd;
    if let Err(e) = setsockopt(&sock, PassCred, &true) {
        tracing::warn!(process = %name, error = %e, "no sender credentials on the notify socket: its messages are refused");
    }
    let mut buf = vec![0u8; 4096];
    loop {
        if sock.readable().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let received = sock.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(UnixCredentials);
            let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)
                .map_err(std::io::Error::from)?;
            let sender = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            });
            Ok((msg.bytes, sender))
        });
        match received {
            Ok((n, sender)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send(Msg::Notify { name: name.clone(), text, sender }).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
