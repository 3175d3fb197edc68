//! The primary endpoint of the local platform: a TCP forwarder on a fixed address that follows
//! the current primary (it plays the part of the `-primary` Service in Kubernetes).
//!
//! It behaves as a Kubernetes Service does under kube-proxy, not more kindly: each accepted
//! connection is piped to the target current at accept time and **stays with that member**
//! when the target changes (including to "none"); only new connections go to the new target.
//! Moving the endpoint therefore fences nothing: clients that hold a connection to a demoted
//! primary keep talking to it until the member itself closes them or refuses their writes,
//! which is the operator's job (safety rule 7 in `docs/architecture.md`: the demoted member is
//! fenced on the member, whatever the endpoint does). No connection ever spans two members.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a new connection waits for a target when there is none, before it is closed.
pub const NO_TARGET_WAIT: Duration = Duration::from_secs(2);
/// Limit for connecting to the target.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Failure to set up the forwarder.
#[derive(Debug, thiserror::Error)]
#[error("primary endpoint {addr}: cannot listen: {source}")]
pub struct ForwarderError {
    /// The address it was asked to listen on.
    pub addr: SocketAddr,
    /// OS error.
    #[source]
    pub source: io::Error,
}

/// A running forwarder. Dropping it (or [`Forwarder::shutdown`]) stops accepting and closes
/// every forwarded connection (the tasks notice within one scheduling round).
#[derive(Debug)]
pub struct Forwarder {
    local_addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    accept_task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `listen` (port 0 picks a free port; see [`Forwarder::local_addr`]) with no
    /// target yet. Must be called inside a tokio runtime.
    pub async fn bind(listen: SocketAddr) -> Result<Forwarder, ForwarderError> {
        let error = |source| ForwarderError {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(error)?;
        let local_addr = listener.local_addr().map_err(error)?;
        let (target, target_rx) = watch::channel(None);
        let accept_task = tokio::spawn(accept_loop(listener, target_rx));
        Ok(Forwarder {
            local_addr,
            target,
            accept_task,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where new connections go now.
    pub fn target(&self) -> Option<SocketAddr> {
        *self.target.borrow()
    }

    /// Points the endpoint at `target` (the new primary) or at nothing. Only connections
    /// accepted from now on go there: open connections stay with the member they reached, as
    /// they do behind a Kubernetes Service.
    pub fn set_target(&self, target: Option<SocketAddr>) {
        self.target.send_if_modified(|current| {
            if *current == target {
                return false;
            }
            *current = target;
            true
        });
    }

    /// Stops accepting, closes every forwarded connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let Forwarder {
            target,
            accept_task,
            ..
        } = self;
        // Dropping the sender is the shutdown signal for every task.
        drop(target);
        let _ = accept_task.await;
    }
}

async fn accept_loop(listener: TcpListener, mut target: watch::Receiver<Option<SocketAddr>>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(forward(client, target.clone()));
                }
                // An accept error (e.g. too many open files) concerns one connection only.
            }
            // The sender is gone: the forwarder was shut down or dropped.
            changed = target.changed() => if changed.is_err() { return },
        }
    }
}

/// Pipes one client connection to the target current at accept time until either side
/// closes or the forwarder shuts down. A later change of the target does not touch it.
async fn forward(mut client: TcpStream, mut target: watch::Receiver<Option<SocketAddr>>) {
    let addr = match timeout(NO_TARGET_WAIT, target.wait_for(Option::is_some)).await {
        Ok(Ok(t)) => *t,
        // No target in time, or shut down: closing the client is the answer.
        _ => return,
    };
    let Some(addr) = addr else { return };
    let Ok(Ok(mut upstream)) = timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(addr)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut upstream) => {}
        // Only the forwarder's shutdown closes it from this side.
        () = shut_down(&mut target) => {}
    }
}

/// Resolves once the forwarder is shut down or dropped (the sender is gone); target changes
/// are ignored.
async fn shut_down(target: &mut watch::Receiver<Option<SocketAddr>>) {
    while target.changed().await.is_ok() {}
}
