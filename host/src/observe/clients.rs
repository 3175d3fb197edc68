//! One engine connection per member, reused across reconciles and dropped when it breaks.

use crate::engine::{Client, Dialect, EngineError, HostPort};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::sync::Mutex;

/// Connections to members, keyed by address.
pub struct Clients {
    dialect: Dialect,
    password: Option<String>,
    pool: Mutex<HashMap<SocketAddr, Client>>,
}

impl Clients {
    pub fn new(dialect: Dialect, password: Option<String>) -> Clients {
        Clients {
            dialect,
            password,
            pool: Mutex::new(HashMap::new()),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A connected client for `addr`, connecting if there is none.
    pub async fn get(&self, addr: SocketAddr) -> Result<Client, EngineError> {
        if let Some(c) = self.pool.lock().await.get(&addr) {
            return Ok(c.clone());
        }
        let client =
            Client::connect(HostPort::from(addr), self.password.as_deref(), self.dialect).await?;
        self.pool.lock().await.insert(addr, client.clone());
        Ok(client)
    }

    /// Drops the connection to `addr` after `error`, if the error means it is broken.
    pub async fn forget_if_broken(&self, addr: SocketAddr, error: &EngineError) {
        if error.is_unreachable() {
            self.pool.lock().await.remove(&addr);
        }
    }

    /// Drops the connection to `addr` (the member was restarted).
    pub async fn forget(&self, addr: SocketAddr) {
        self.pool.lock().await.remove(&addr);
    }
}
