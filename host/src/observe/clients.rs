//! One engine connection per member, reused across reconciles and dropped when it breaks or
//! when the way members are reached ([`Access`]) changes.
//!
//! Credentials change while members run (a rotated password Secret, auth turned on): a member
//! keeps the password it was started with until someone changes it, so each member is moved
//! to the new ones over a connection that still works (see [`Clients::apply_credentials`], the
//! Kubernetes apply step), and its pool entry is replaced by one authenticated with the new
//! ones. The credentials members may still have are kept ([`Clients::remember`]; on
//! Kubernetes also in an operator-owned Secret, so they survive a restart) until every member
//! has moved: a member that was unreachable during the change is moved when it answers again,
//! and until then [`Clients::get`] (observe, act), which never moves anything, reaches it with
//! the credentials it still accepts.

use crate::engine::{
    Client, ConnectOptions, Credentials, Dialect, EngineError, HostPort, TlsConfig,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::sync::Mutex;

/// How the operator reaches a cluster's members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Sent as `AUTH` on every connection; `None` connects as `default` without a password.
    pub credentials: Option<Credentials>,
    /// The credentials belong to a user of the members' ACL file rather than to `requirepass`:
    /// moving a member to new credentials adds the password to that ACL user (and sets
    /// `masteruser`/`masterauth`) instead of setting `requirepass`.
    pub acl: bool,
    /// TLS to every member; `None` is plain TCP.
    pub tls: Option<TlsConfig>,
    /// The name each member's certificate is verified against (only used with `tls`).
    pub server_names: ServerNames,
}

/// The name a member's TLS certificate must be valid for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerNames {
    /// The address that is dialed (an IP SAN): the local platform and tests.
    #[default]
    Address,
    /// `<member>.<domain>`: a pod's DNS name through the headless Service, e.g.
    /// `cache-s0-1.cache-headless.shop.svc`, while the pod IP is dialed (pod IPs change with
    /// every restart, so certificates name the DNS names instead).
    MemberDns(String),
}

impl ServerNames {
    fn for_member(&self, member: &str) -> Option<String> {
        match self {
            ServerNames::Address => None,
            ServerNames::MemberDns(domain) => Some(format!("{member}.{domain}")),
        }
    }
}

/// The most earlier credentials kept (rotations that overlap before every member moved).
pub const MAX_PREVIOUS: usize = 3;

struct Settings {
    dialect: Dialect,
    access: Access,
    /// Credentials members may still have, newest first, never the current ones: what the
    /// credentials were before each change, and what [`Clients::remember`] was given.
    previous: Vec<Option<Credentials>>,
    /// Bumped on every change of `dialect` or `access`; a pooled connection made under an
    /// older generation is replaced on its next use.
    generation: u64,
}

#[derive(Clone)]
struct Pooled {
    client: Client,
    member: String,
    generation: u64,
    credentials: Option<Credentials>,
}

/// Connections to members, keyed by address.
pub struct Clients {
    settings: std::sync::Mutex<Settings>,
    pool: Mutex<HashMap<SocketAddr, Pooled>>,
    /// What was changed on members (credential moves), for the caller to report.
    notes: std::sync::Mutex<Vec<String>>,
}

impl Clients {
    /// Plain TCP, authenticating as `default` with `password` when one is given.
    pub fn new(dialect: Dialect, password: Option<String>) -> Clients {
        Clients::with_access(
            dialect,
            Access {
                credentials: password.map(Credentials::password),
                ..Access::default()
            },
        )
    }

    /// Members reached as `access` says.
    pub fn with_access(dialect: Dialect, access: Access) -> Clients {
        Clients {
            settings: std::sync::Mutex::new(Settings {
                dialect,
                access,
                previous: Vec::new(),
                generation: 0,
            }),
            pool: Mutex::new(HashMap::new()),
            notes: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        // Plain data replaced as a whole: a poisoned lock still holds a consistent value.
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dialect(&self) -> Dialect {
        self.settings().dialect
    }

    /// The access members are reached with now.
    pub fn access(&self) -> Access {
        self.settings().access.clone()
    }

    /// Uses `dialect` and `access` from now on (the caller reads them fresh every reconcile).
    /// Nothing happens when they are unchanged. Otherwise every pooled connection is replaced
    /// on its next use, and when the credentials changed, members are moved to the new ones
    /// (see [`Clients::get`]). Returns whether anything changed.
    pub fn configure(&self, dialect: Dialect, access: Access) -> bool {
        let mut settings = self.settings();
        if settings.dialect == dialect && settings.access == access {
            return false;
        }
        if settings.access.credentials != access.credentials {
            let before = settings.access.credentials.clone();
            settings.previous.insert(0, before);
            let current = access.credentials.clone();
            settings.previous = merged(settings.previous.clone(), &current);
        }
        settings.dialect = dialect;
        settings.access = access;
        settings.generation += 1;
        true
    }

    /// Adds `previous` (credentials members may still have, newest first, e.g. read back from
    /// where an earlier operator recorded them) to the ones tried when a member refuses the
    /// current credentials. Changes no connection.
    pub fn remember(&self, previous: Vec<Option<Credentials>>) {
        let mut settings = self.settings();
        let current = settings.access.credentials.clone();
        let mut all = previous;
        all.extend(settings.previous.iter().cloned());
        settings.previous = merged(all, &current);
    }

    /// Forgets every earlier credential: every member has the current ones.
    pub fn forget_previous(&self) {
        self.settings().previous.clear();
    }

    /// The earlier credentials still tried, newest first.
    pub fn previous(&self) -> Vec<Option<Credentials>> {
        self.settings().previous.clone()
    }

    /// What was changed on members since the last call (one line per member moved to new
    /// credentials), for events.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn note(&self, line: String) {
        tracing::info!(note = %line, "credentials");
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// A connected, authenticated client for `member` at `addr`, connecting if there is none
    /// made with the current access. It never changes anything on the member (observe uses
    /// it): a member that refuses the current credentials is reached with the earlier ones it
    /// still accepts (see [`Clients::remember`]) until [`Clients::apply_credentials`] has
    /// moved it; one that accepts none of them is an [`EngineError::AuthRefused`].
    pub async fn get(&self, member: &str, addr: SocketAddr) -> Result<Client, EngineError> {
        self.reach(member, addr, false).await
    }

    /// [`Clients::get`], moving the member to the current credentials first when it is still
    /// on others: the apply step of a reconcile, run when the credentials changed.
    ///
    /// When the credentials changed since a pooled connection was made, that connection (still
    /// authenticated with the old ones) first moves the member to the new credentials. A member
    /// that refuses the current credentials but accepts earlier ones (newest first), or none
    /// at all (auth was just turned on), is moved the same way. `Ok` means the member accepts
    /// the current credentials now. Moving means, with a password:
    /// `CONFIG SET masterauth` then `CONFIG SET requirepass`; with an ACL user: `ACL SETUSER
    /// user >new` (and `<old`, the password it replaces), then `CONFIG SET masteruser` and
    /// `masterauth`. Existing sessions stay authenticated; a restarted member gets the new
    /// credentials from its Secret anyway.
    pub async fn apply_credentials(
        &self,
        member: &str,
        addr: SocketAddr,
    ) -> Result<Client, EngineError> {
        self.reach(member, addr, true).await
    }

    async fn reach(
        &self,
        member: &str,
        addr: SocketAddr,
        move_credentials: bool,
    ) -> Result<Client, EngineError> {
        let (dialect, access, previous, generation) = {
            let s = self.settings();
            (
                s.dialect,
                s.access.clone(),
                s.previous.clone(),
                s.generation,
            )
        };
        let pooled = self.pool.lock().await.get(&addr).cloned();
        if let Some(p) = pooled {
            // A connection made with earlier credentials serves observe and act (the session
            // stays authenticated), but the apply step moves the member first.
            let current = p.credentials == access.credentials;
            if p.generation == generation && p.member == member && (current || !move_credentials) {
                return Ok(p.client);
            }
            self.pool.lock().await.remove(&addr);
            if move_credentials && p.member == member && !current {
                // This session authenticated with the old credentials; the member may still
                // require them.
                self.move_member(member, &p.client, p.credentials.as_ref(), &access)
                    .await?;
            }
        }
        let current = options(member, &access, access.credentials.clone());
        let (client, used) = match connect(addr, &current, dialect).await {
            Ok(client) => (client, access.credentials.clone()),
            Err(e) if e.is_auth_refused() => {
                // The member may still have earlier credentials, or none (auth was just
                // turned on).
                let mut candidates = previous;
                if access.credentials.is_some() && !candidates.contains(&None) {
                    candidates.push(None);
                }
                let mut reached = None;
                for old in candidates {
                    let Ok(old_client) =
                        connect(addr, &options(member, &access, old.clone()), dialect).await
                    else {
                        continue;
                    };
                    reached = Some(if move_credentials {
                        self.move_member(member, &old_client, old.as_ref(), &access)
                            .await?;
                        (
                            connect(addr, &current, dialect).await?,
                            access.credentials.clone(),
                        )
                    } else {
                        (old_client, old)
                    });
                    break;
                }
                match reached {
                    Some(reached) => reached,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.pool.lock().await.insert(
            addr,
            Pooled {
                client: client.clone(),
                member: member.to_string(),
                generation,
                credentials: used,
            },
        );
        Ok(client)
    }

    /// Moves `member` from credentials `from` to `access.credentials`, over `client`
    /// (authenticated with `from`).
    async fn move_member(
        &self,
        member: &str,
        client: &Client,
        from: Option<&Credentials>,
        access: &Access,
    ) -> Result<(), EngineError> {
        let to = access.credentials.as_ref();
        let password = to.map(|c| c.password.as_str()).unwrap_or("");
        if access.acl
            && let Some(to) = to
        {
            let user = to.user_name();
            // Only a user the ACL file defined is changed: ACL SETUSER would otherwise create
            // a new (disabled, powerless) one.
            let same_user = from.is_some_and(|f| f.user_name() == user);
            if same_user {
                client.acl_setuser(user, &[&format!(">{password}")]).await?;
                if let Some(old) = from.filter(|f| f.password != to.password) {
                    client
                        .acl_setuser(user, &[&format!("<{}", old.password)])
                        .await?;
                }
            }
            client.config_set("masteruser", user).await?;
            client.config_set("masterauth", password).await?;
            self.note(format!(
                "{member}: replicas now authenticate as `{user}` with the new password{}",
                if same_user {
                    ", which replaced the old one of that ACL user"
                } else {
                    " (the ACL file must define that user and password)"
                }
            ));
        } else {
            // masterauth first: a replica whose link drops in between reconnects with the
            // password its primary is about to get.
            client.config_set("masterauth", password).await?;
            client.config_set("requirepass", password).await?;
            self.note(format!(
                "{member}: {}",
                if to.is_some() {
                    "now requires the new password (requirepass, masterauth)"
                } else {
                    "no longer requires a password"
                }
            ));
        }
        Ok(())
    }

    /// Drops the connection to `addr` after `error`, if the error means it is broken.
    pub async fn forget_if_broken(&self, addr: SocketAddr, error: &EngineError) {
        if error.is_unreachable() || error.is_auth_refused() {
            self.pool.lock().await.remove(&addr);
        }
    }

    /// Drops the connection to `addr` (the member was restarted).
    pub async fn forget(&self, addr: SocketAddr) {
        self.pool.lock().await.remove(&addr);
    }
}

/// `list` without duplicates and without `current`, newest first, at most [`MAX_PREVIOUS`].
fn merged(
    list: Vec<Option<Credentials>>,
    current: &Option<Credentials>,
) -> Vec<Option<Credentials>> {
    let mut out: Vec<Option<Credentials>> = Vec::new();
    for c in list {
        if c != *current && !out.contains(&c) {
            out.push(c);
        }
    }
    out.truncate(MAX_PREVIOUS);
    out
}

fn options(member: &str, access: &Access, credentials: Option<Credentials>) -> ConnectOptions {
    ConnectOptions {
        credentials,
        tls: access.tls.clone(),
        server_name: access
            .tls
            .as_ref()
            .and_then(|_| access.server_names.for_member(member)),
    }
}

/// Connects and proves the session may run commands: without credentials a member that
/// requires a password accepts the connection and answers every command `-NOAUTH`, which
/// [`EngineError::is_auth_refused`] recognises.
async fn connect(
    addr: SocketAddr,
    options: &ConnectOptions,
    dialect: Dialect,
) -> Result<Client, EngineError> {
    let client = Client::connect_with(HostPort::from(addr), options, dialect).await?;
    if options.credentials.is_none() {
        match client.ping().await {
            Ok(()) => {}
            Err(e) if e.is_loading() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(client)
}
