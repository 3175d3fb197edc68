//! Cluster-mode commands (Valkey/Redis Cluster): building them per dialect (pure, unit-tested)
//! and sending them over a [`Client`] with the same bounded timeouts and errors as the rest of
//! the engine boundary.
//!
//! Dragonfly's cluster mode has no gossip bus: it answers `CLUSTER MYID/INFO/NODES/SHARDS`,
//! but its topology is pushed whole with `DFLYCLUSTER CONFIG` (see
//! [`super::dragonfly_cluster`]); the gossip commands here are [`EngineError::Unsupported`]
//! on it.

use std::time::Duration;

use redis::Value;
use tokio::time::{Instant, sleep};

use super::client::{
    Client, HANDOVER_CLIENT_MARGIN, HANDOVER_POLL_INTERVAL, HostPort, RESPONSE_TIMEOUT,
};
use super::cluster_nodes::{ClusterInfo, ClusterNodes, MAX_NODE_ID, quote};
use super::cluster_shards::{ShardRecord, parse_shards};
use super::dialect::{Dialect, EngineCommand};
use super::error::EngineError;
use super::info::{ParseError, reply_text};
use super::slots::{MAX_SLOT, SlotRange};

/// How long a replica's `CLUSTER FAILOVER` (without FORCE/TAKEOVER) may take before the server
/// aborts it (`CLUSTER_MF_TIMEOUT` in Valkey 8.0 and Redis 7.0; the old primary pauses its
/// clients for twice that at most).
pub const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Valkey 8 blocks `CLUSTER SETSLOT` on a primary with replicas until they have it
/// (`CLUSTER_OPERATION_TIMEOUT`); it answers `-NOREPLICAS` and does not apply the change when
/// they do not. Redis 7 answers at once.
pub const SETSLOT_SERVER_TIMEOUT: Duration = Duration::from_secs(2);

/// The flavour of `CLUSTER FAILOVER`, sent to the replica that is to become primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailoverMode {
    /// `CLUSTER FAILOVER`: the primary pauses its clients, the replica catches up to the
    /// primary's offset, then wins an election. No acknowledged write is lost. Needs the
    /// primary alive and a majority of primaries to vote.
    Graceful,
    /// `CLUSTER FAILOVER FORCE`: no handshake with the primary (it may be dead); still an
    /// election, so a majority of primaries must be reachable and vote.
    Force,
    /// `CLUSTER FAILOVER TAKEOVER`: no handshake and no election: the replica bumps the epoch
    /// by itself and claims the slots. For when no majority of primaries is reachable; it can
    /// collide with another epoch, so it is the last resort.
    Takeover,
}

/// What `CLUSTER SETSLOT` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetSlot<'a> {
    /// `IMPORTING id`: on the destination, accept `ASKING` commands for the slot from `id`.
    Importing(&'a str),
    /// `MIGRATING id`: on the source, redirect missing keys to `id` with `-ASK`.
    Migrating(&'a str),
    /// `NODE id`: the slot belongs to `id` (ends a migration; bumps the epoch on the new
    /// owner).
    Node(&'a str),
    /// `STABLE`: clear the importing/migrating state.
    Stable,
}

/// `CLUSTER RESET` flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMode {
    /// `SOFT`: forget the other nodes and slots, keep the node id and epochs.
    Soft,
    /// `HARD`: also a new node id and epochs reset to 0.
    Hard,
}

/// The answer to `CLUSTER BUMPEPOCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BumpEpoch {
    /// `BUMPED n`: the node took a new, unique config epoch `n`.
    Bumped(u64),
    /// `STILL n`: its config epoch `n` was already the highest.
    Still(u64),
}

/// The answer to `MIGRATE ... KEYS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateOutcome {
    /// `OK`: the keys that existed were moved.
    Moved,
    /// `NOKEY`: none of the keys existed on the source.
    NoKey,
}

impl Dialect {
    /// Whether the dialect has the Valkey/Redis gossip bus (`CLUSTER MEET`, `SETSLOT`, ...).
    pub fn has_cluster_bus(self) -> bool {
        matches!(self, Self::Valkey | Self::Redis)
    }

    fn bus_only(self, args: Vec<String>) -> Option<EngineCommand> {
        self.has_cluster_bus().then(|| EngineCommand::new(args))
    }

    /// `CLUSTER MEET ip port [bus-port]`. `ip` must be an IP literal (the server does not
    /// resolve names). Without `bus_port` the server assumes `port + 10000`.
    pub fn cluster_meet(self, ip: &str, port: u16, bus_port: Option<u16>) -> Option<EngineCommand> {
        let mut args = vec!["CLUSTER".into(), "MEET".into(), ip.into(), port.to_string()];
        args.extend(bus_port.map(|p| p.to_string()));
        self.bus_only(args)
    }

    /// `CLUSTER ADDSLOTSRANGE start end [start end ...]`; `None` for no ranges.
    pub fn cluster_addslotsrange(self, ranges: &[SlotRange]) -> Option<EngineCommand> {
        if ranges.is_empty() {
            return None;
        }
        let mut args = vec!["CLUSTER".to_owned(), "ADDSLOTSRANGE".to_owned()];
        for r in ranges {
            args.push(r.start.to_string());
            args.push(r.end.to_string());
        }
        self.bus_only(args)
    }

    /// `CLUSTER REPLICATE node-id`.
    pub fn cluster_replicate(self, node_id: &str) -> Option<EngineCommand> {
        self.bus_only(vec!["CLUSTER".into(), "REPLICATE".into(), node_id.into()])
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]`.
    pub fn cluster_failover(self, mode: FailoverMode) -> Option<EngineCommand> {
        let mut args = vec!["CLUSTER".to_owned(), "FAILOVER".to_owned()];
        match mode {
            FailoverMode::Graceful => {}
            FailoverMode::Force => args.push("FORCE".into()),
            FailoverMode::Takeover => args.push("TAKEOVER".into()),
        }
        self.bus_only(args)
    }

    /// `CLUSTER FORGET node-id`.
    pub fn cluster_forget(self, node_id: &str) -> Option<EngineCommand> {
        self.bus_only(vec!["CLUSTER".into(), "FORGET".into(), node_id.into()])
    }

    /// `CLUSTER RESET SOFT|HARD`.
    pub fn cluster_reset(self, mode: ResetMode) -> Option<EngineCommand> {
        let how = match mode {
            ResetMode::Soft => "SOFT",
            ResetMode::Hard => "HARD",
        };
        self.bus_only(vec!["CLUSTER".into(), "RESET".into(), how.into()])
    }

    /// `CLUSTER BUMPEPOCH`.
    pub fn cluster_bumpepoch(self) -> Option<EngineCommand> {
        self.bus_only(vec!["CLUSTER".into(), "BUMPEPOCH".into()])
    }

    /// `CLUSTER COUNTKEYSINSLOT slot`.
    pub fn cluster_countkeysinslot(self, slot: u16) -> Option<EngineCommand> {
        self.bus_only(vec![
            "CLUSTER".into(),
            "COUNTKEYSINSLOT".into(),
            slot.to_string(),
        ])
    }

    /// `CLUSTER GETKEYSINSLOT slot count`.
    pub fn cluster_getkeysinslot(self, slot: u16, count: u32) -> Option<EngineCommand> {
        self.bus_only(vec![
            "CLUSTER".into(),
            "GETKEYSINSLOT".into(),
            slot.to_string(),
            count.to_string(),
        ])
    }

    /// `CLUSTER SETSLOT slot IMPORTING id | MIGRATING id | NODE id | STABLE`.
    pub fn cluster_setslot(self, slot: u16, state: SetSlot<'_>) -> Option<EngineCommand> {
        let mut args = vec!["CLUSTER".to_owned(), "SETSLOT".to_owned(), slot.to_string()];
        match state {
            SetSlot::Importing(id) => args.extend(["IMPORTING".to_owned(), id.to_owned()]),
            SetSlot::Migrating(id) => args.extend(["MIGRATING".to_owned(), id.to_owned()]),
            SetSlot::Node(id) => args.extend(["NODE".to_owned(), id.to_owned()]),
            SetSlot::Stable => args.push("STABLE".to_owned()),
        }
        self.bus_only(args)
    }

    /// `MIGRATE host port "" 0 timeout-ms [AUTH password | AUTH2 user password] KEYS k...` as
    /// a command to send (keys are bytes) and a label for errors that names how many keys,
    /// not which (keys are user data). `None` on Dragonfly or for no keys.
    pub fn migrate_keys(
        self,
        target: &HostPort,
        keys: &[Vec<u8>],
        timeout: Duration,
        auth: Option<&super::Credentials>,
    ) -> Option<(redis::Cmd, EngineCommand)> {
        if !self.has_cluster_bus() || keys.is_empty() {
            return None;
        }
        let mut head = vec![
            "MIGRATE".to_owned(),
            target.host.clone(),
            target.port.to_string(),
            String::new(),
            "0".to_owned(),
            timeout.as_millis().max(1).to_string(),
        ];
        match auth {
            None => {}
            Some(c) => match &c.username {
                None => head.extend(["AUTH".to_owned(), c.password.clone()]),
                Some(user) => head.extend(["AUTH2".to_owned(), user.clone(), c.password.clone()]),
            },
        }
        head.push("KEYS".to_owned());
        let mut cmd = EngineCommand::new(head.clone()).to_cmd();
        for key in keys {
            cmd.arg(key.as_slice());
        }
        head.push(format!("<{} keys>", keys.len()));
        Some((cmd, EngineCommand::new(head)))
    }
}

impl Client {
    fn unsupported(&self, command: &str) -> EngineError {
        EngineError::Unsupported {
            addr: self.addr().to_string(),
            command: command.to_owned(),
            dialect: self.dialect().name(),
        }
    }

    async fn run_bus(
        &self,
        built: Option<EngineCommand>,
        name: &str,
        limit: Duration,
    ) -> Result<Value, EngineError> {
        let command = built.ok_or_else(|| self.unsupported(name))?;
        self.run(&command, limit).await
    }

    async fn text_of(&self, command: EngineCommand) -> Result<String, EngineError> {
        let value = self.run(&command, RESPONSE_TIMEOUT).await?;
        reply_text(&value, &command.args().join(" ")).map_err(|e| self.reply_error(&command, e))
    }

    /// `CLUSTER MYID`: this member's node id.
    pub async fn cluster_myid(&self) -> Result<String, EngineError> {
        let command = EngineCommand::new(["CLUSTER", "MYID"]);
        let id = self.text_of(command.clone()).await?;
        if id.is_empty() || id.len() > MAX_NODE_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.reply_error(
                &command,
                ParseError {
                    field: "CLUSTER MYID".into(),
                    problem: format!("not a node id: {:?}", quote(&id)),
                },
            ));
        }
        Ok(id)
    }

    /// `CLUSTER INFO`.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, EngineError> {
        let command = EngineCommand::new(["CLUSTER", "INFO"]);
        let text = self.text_of(command.clone()).await?;
        ClusterInfo::parse(&text).map_err(|e| self.reply_error(&command, e))
    }

    /// `CLUSTER NODES`: the member's view of every node.
    pub async fn cluster_nodes(&self) -> Result<ClusterNodes, EngineError> {
        let command = EngineCommand::new(["CLUSTER", "NODES"]);
        let text = self.text_of(command.clone()).await?;
        ClusterNodes::parse(&text).map_err(|e| self.reply_error(&command, e))
    }

    /// `CLUSTER SHARDS`.
    pub async fn cluster_shards(&self) -> Result<Vec<ShardRecord>, EngineError> {
        let command = EngineCommand::new(["CLUSTER", "SHARDS"]);
        let value = self.run(&command, RESPONSE_TIMEOUT).await?;
        parse_shards(&value).map_err(|e| self.reply_error(&command, e))
    }

    /// `CLUSTER KEYSLOT key` (the server's answer, to check [`super::slots::key_slot`]).
    pub async fn cluster_keyslot(&self, key: &[u8]) -> Result<u16, EngineError> {
        let label = EngineCommand::new(["CLUSTER", "KEYSLOT", "<key>"]);
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("KEYSLOT").arg(key);
        match self.run_cmd(&label, cmd, RESPONSE_TIMEOUT).await? {
            Value::Int(n) => u16::try_from(n)
                .ok()
                .filter(|&s| s <= MAX_SLOT)
                .ok_or_else(|| self.not_a(&label, "slot", &Value::Int(n))),
            other => Err(self.not_a(&label, "slot", &other)),
        }
    }

    fn not_a(&self, command: &EngineCommand, what: &str, value: &Value) -> EngineError {
        self.reply_error(
            command,
            ParseError {
                field: command.args()[..2.min(command.args().len())].join(" "),
                problem: format!("not a {what}: {}", quote(&format!("{value:?}"))),
            },
        )
    }

    /// `CLUSTER MEET ip port [bus-port]`: starts a handshake with that member (answers at
    /// once; the member joins when the handshake completes).
    pub async fn cluster_meet(
        &self,
        ip: &str,
        port: u16,
        bus_port: Option<u16>,
    ) -> Result<(), EngineError> {
        let built = self.dialect().cluster_meet(ip, port, bus_port);
        self.run_bus(built, "CLUSTER MEET", RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER ADDSLOTSRANGE`: this member (a primary) takes `ranges`. Nothing is sent for
    /// no ranges.
    pub async fn cluster_addslotsrange(&self, ranges: &[SlotRange]) -> Result<(), EngineError> {
        if ranges.is_empty() {
            return Ok(());
        }
        let built = self.dialect().cluster_addslotsrange(ranges);
        self.run_bus(built, "CLUSTER ADDSLOTSRANGE", RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER REPLICATE node-id`: this member (which must own no slots) follows that
    /// primary. It drops its dataset and full-syncs.
    pub async fn cluster_replicate(&self, node_id: &str) -> Result<(), EngineError> {
        let built = self.dialect().cluster_replicate(node_id);
        self.run_bus(built, "CLUSTER REPLICATE", RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]` on this member (a replica). Answers at once; the
    /// promotion happens in the background. See [`Client::cluster_failover_and_wait`].
    pub async fn cluster_failover(&self, mode: FailoverMode) -> Result<(), EngineError> {
        let built = self.dialect().cluster_failover(mode);
        self.run_bus(built, "CLUSTER FAILOVER", RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]`, then polls this member's own `CLUSTER NODES` line
    /// every [`HANDOVER_POLL_INTERVAL`] until it is a primary that owns slots. Returns its new
    /// config epoch. Gives up after `limit` + [`HANDOVER_CLIENT_MARGIN`] with
    /// [`EngineError::HandoverFailed`]; for [`FailoverMode::Graceful`] pass at least
    /// [`MANUAL_FAILOVER_TIMEOUT`], after which the server gives up by itself (rule 3: the
    /// client waits longer than the server).
    pub async fn cluster_failover_and_wait(
        &self,
        mode: FailoverMode,
        limit: Duration,
    ) -> Result<u64, EngineError> {
        let command = self
            .dialect()
            .cluster_failover(mode)
            .ok_or_else(|| self.unsupported("CLUSTER FAILOVER"))?;
        self.run(&command, RESPONSE_TIMEOUT).await?;
        let started = Instant::now();
        let deadline = started + limit + HANDOVER_CLIENT_MARGIN;
        loop {
            sleep(HANDOVER_POLL_INTERVAL).await;
            let last_seen = match self.cluster_nodes().await {
                Ok(nodes) => match nodes.myself() {
                    Some(me) if me.flags.primary && !me.slots.is_empty() => {
                        return Ok(me.config_epoch);
                    }
                    Some(me) => format!(
                        "still {} (config epoch {})",
                        if me.flags.primary {
                            "a primary without slots"
                        } else {
                            "a replica"
                        },
                        me.config_epoch
                    ),
                    None => "no `myself` line".to_owned(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(EngineError::HandoverFailed {
                    addr: self.addr().to_string(),
                    command: command.to_string(),
                    target: self.addr().to_string(),
                    detail: format!("not primary after {:?}: {last_seen}", started.elapsed())
                        .into(),
                });
            }
        }
    }

    /// `CLUSTER FORGET node-id`: drop that node from this member's table (and ban it from
    /// being re-added by gossip for `cluster-blacklist-ttl`, 60 s by default).
    pub async fn cluster_forget(&self, node_id: &str) -> Result<(), EngineError> {
        let built = self.dialect().cluster_forget(node_id);
        self.run_bus(built, "CLUSTER FORGET", RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER RESET SOFT|HARD` (refused by a primary that holds keys).
    pub async fn cluster_reset(&self, mode: ResetMode) -> Result<(), EngineError> {
        let built = self.dialect().cluster_reset(mode);
        self.run_bus(built, "CLUSTER RESET", RESPONSE_TIMEOUT)
            .await
            .map(drop)
    }

    /// `CLUSTER BUMPEPOCH`.
    pub async fn cluster_bumpepoch(&self) -> Result<BumpEpoch, EngineError> {
        let command = self
            .dialect()
            .cluster_bumpepoch()
            .ok_or_else(|| self.unsupported("CLUSTER BUMPEPOCH"))?;
        let value = self.run(&command, RESPONSE_TIMEOUT).await?;
        let text =
            reply_text(&value, "CLUSTER BUMPEPOCH").map_err(|e| self.reply_error(&command, e))?;
        parse_bumpepoch(&text).map_err(|e| self.reply_error(&command, e))
    }

    /// `CLUSTER COUNTKEYSINSLOT slot`.
    pub async fn cluster_countkeysinslot(&self, slot: u16) -> Result<u64, EngineError> {
        let command = self
            .dialect()
            .cluster_countkeysinslot(slot)
            .ok_or_else(|| self.unsupported("CLUSTER COUNTKEYSINSLOT"))?;
        match self.run(&command, RESPONSE_TIMEOUT).await? {
            Value::Int(n) if n >= 0 => Ok(n.unsigned_abs()),
            other => Err(self.not_a(&command, "count", &other)),
        }
    }

    /// `CLUSTER GETKEYSINSLOT slot count`: up to `count` keys of the slot (as bytes).
    pub async fn cluster_getkeysinslot(
        &self,
        slot: u16,
        count: u32,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let command = self
            .dialect()
            .cluster_getkeysinslot(slot, count)
            .ok_or_else(|| self.unsupported("CLUSTER GETKEYSINSLOT"))?;
        match self.run(&command, RESPONSE_TIMEOUT).await? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::BulkString(key) => Ok(key),
                    other => Err(self.not_a(&command, "key", &other)),
                })
                .collect(),
            other => Err(self.not_a(&command, "list of keys", &other)),
        }
    }

    /// `CLUSTER SETSLOT slot ...`. On Valkey 8 a primary with replicas first replicates it and
    /// waits for them ([`SETSLOT_SERVER_TIMEOUT`]); the client waits longer than that.
    pub async fn cluster_setslot(&self, slot: u16, state: SetSlot<'_>) -> Result<(), EngineError> {
        let built = self.dialect().cluster_setslot(slot, state);
        let value = self
            .run_bus(
                built.clone(),
                "CLUSTER SETSLOT",
                SETSLOT_SERVER_TIMEOUT + HANDOVER_CLIENT_MARGIN,
            )
            .await?;
        match value {
            Value::Okay => Ok(()),
            Value::SimpleString(s) if s == "OK" => Ok(()),
            other => Err(self.not_a(
                &built.unwrap_or_else(|| EngineCommand::new(["CLUSTER", "SETSLOT"])),
                "confirmation",
                &other,
            )),
        }
    }

    /// `MIGRATE target "" 0 timeout [AUTH...] KEYS k...`: moves `keys` (which must all be in
    /// one slot this member owns) to `target` atomically per key. The client waits `timeout`
    /// plus [`HANDOVER_CLIENT_MARGIN`].
    pub async fn migrate_keys(
        &self,
        target: &HostPort,
        keys: &[Vec<u8>],
        timeout: Duration,
        auth: Option<&super::Credentials>,
    ) -> Result<MigrateOutcome, EngineError> {
        if keys.is_empty() {
            return Ok(MigrateOutcome::NoKey);
        }
        let (cmd, label) = self
            .dialect()
            .migrate_keys(target, keys, timeout, auth)
            .ok_or_else(|| self.unsupported("MIGRATE"))?;
        match self
            .run_cmd(&label, cmd, timeout + HANDOVER_CLIENT_MARGIN)
            .await?
        {
            Value::Okay => Ok(MigrateOutcome::Moved),
            Value::SimpleString(s) if s == "OK" => Ok(MigrateOutcome::Moved),
            Value::SimpleString(s) if s == "NOKEY" => Ok(MigrateOutcome::NoKey),
            other => Err(self.not_a(&label, "MIGRATE answer", &other)),
        }
    }

    /// `DFLYCLUSTER CONFIG json` (Dragonfly only, experimental; on its admin port): installs
    /// the whole cluster topology built by [`super::dragonfly_cluster::config_json`].
    pub async fn dragonfly_cluster_config(&self, json: &str) -> Result<(), EngineError> {
        if self.dialect() != Dialect::Dragonfly {
            return Err(self.unsupported("DFLYCLUSTER CONFIG"));
        }
        let label = EngineCommand::new(["DFLYCLUSTER", "CONFIG", "<json>"]);
        let mut cmd = redis::cmd("DFLYCLUSTER");
        cmd.arg("CONFIG").arg(json);
        self.run_cmd(&label, cmd, RESPONSE_TIMEOUT).await.map(drop)
    }
}

/// `BUMPED n` or `STILL n`.
fn parse_bumpepoch(text: &str) -> Result<BumpEpoch, ParseError> {
    let bad = || ParseError {
        field: "CLUSTER BUMPEPOCH".into(),
        problem: format!("not `BUMPED n` or `STILL n`: {:?}", quote(text)),
    };
    let (word, n) = text.trim().split_once(' ').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    match word {
        "BUMPED" => Ok(BumpEpoch::Bumped(n)),
        "STILL" => Ok(BumpEpoch::Still(n)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &EngineCommand) -> Vec<&str> {
        c.args().iter().map(String::as_str).collect()
    }

    #[test]
    fn gossip_commands_for_valkey_and_redis() {
        let id = "ea250747f0bf70ced337bee62bc7cb1fdda7dfb6";
        for d in [Dialect::Valkey, Dialect::Redis] {
            assert_eq!(
                args(&d.cluster_meet("127.0.0.2", 7000, Some(7001)).unwrap()),
                ["CLUSTER", "MEET", "127.0.0.2", "7000", "7001"]
            );
            assert_eq!(
                args(&d.cluster_meet("127.0.0.2", 7000, None).unwrap()),
                ["CLUSTER", "MEET", "127.0.0.2", "7000"]
            );
            let ranges = [
                SlotRange::new(0, 99).unwrap(),
                SlotRange::single(200).unwrap(),
            ];
            assert_eq!(
                args(&d.cluster_addslotsrange(&ranges).unwrap()),
                ["CLUSTER", "ADDSLOTSRANGE", "0", "99", "200", "200"]
            );
            assert_eq!(d.cluster_addslotsrange(&[]), None);
            assert_eq!(
                args(&d.cluster_replicate(id).unwrap()),
                ["CLUSTER", "REPLICATE", id]
            );
            assert_eq!(
                args(&d.cluster_failover(FailoverMode::Graceful).unwrap()),
                ["CLUSTER", "FAILOVER"]
            );
            assert_eq!(
                args(&d.cluster_failover(FailoverMode::Force).unwrap()),
                ["CLUSTER", "FAILOVER", "FORCE"]
            );
            assert_eq!(
                args(&d.cluster_failover(FailoverMode::Takeover).unwrap()),
                ["CLUSTER", "FAILOVER", "TAKEOVER"]
            );
            assert_eq!(
                args(&d.cluster_forget(id).unwrap()),
                ["CLUSTER", "FORGET", id]
            );
            assert_eq!(
                args(&d.cluster_reset(ResetMode::Hard).unwrap()),
                ["CLUSTER", "RESET", "HARD"]
            );
            assert_eq!(
                args(&d.cluster_bumpepoch().unwrap()),
                ["CLUSTER", "BUMPEPOCH"]
            );
            assert_eq!(
                args(&d.cluster_countkeysinslot(16383).unwrap()),
                ["CLUSTER", "COUNTKEYSINSLOT", "16383"]
            );
            assert_eq!(
                args(&d.cluster_getkeysinslot(7, 100).unwrap()),
                ["CLUSTER", "GETKEYSINSLOT", "7", "100"]
            );
            assert_eq!(
                args(&d.cluster_setslot(7, SetSlot::Importing(id)).unwrap()),
                ["CLUSTER", "SETSLOT", "7", "IMPORTING", id]
            );
            assert_eq!(
                args(&d.cluster_setslot(7, SetSlot::Migrating(id)).unwrap()),
                ["CLUSTER", "SETSLOT", "7", "MIGRATING", id]
            );
            assert_eq!(
                args(&d.cluster_setslot(7, SetSlot::Node(id)).unwrap()),
                ["CLUSTER", "SETSLOT", "7", "NODE", id]
            );
            assert_eq!(
                args(&d.cluster_setslot(7, SetSlot::Stable).unwrap()),
                ["CLUSTER", "SETSLOT", "7", "STABLE"]
            );
        }
    }

    #[test]
    fn dragonfly_has_no_gossip_commands() {
        let d = Dialect::Dragonfly;
        assert!(!d.has_cluster_bus());
        assert_eq!(d.cluster_meet("1.2.3.4", 1, None), None);
        assert_eq!(d.cluster_failover(FailoverMode::Force), None);
        assert_eq!(d.cluster_setslot(1, SetSlot::Stable), None);
        let target = HostPort::new("1.2.3.4", 7000);
        assert!(
            d.migrate_keys(&target, &[b"k".to_vec()], Duration::from_secs(1), None)
                .is_none()
        );
    }

    #[test]
    fn migrate_sends_binary_keys_and_labels_without_keys_or_secrets() {
        let target = HostPort::new("127.0.0.3", 7002);
        let keys = vec![b"user:{42}:a".to_vec(), vec![0xff, 0x00, b'k']];
        let (cmd, label) = Dialect::Valkey
            .migrate_keys(&target, &keys, Duration::from_millis(5000), None)
            .unwrap();
        let packed = String::from_utf8_lossy(&cmd.get_packed_command()).into_owned();
        assert!(packed.contains("$7\r\nMIGRATE\r\n$9\r\n127.0.0.3\r\n$4\r\n7002\r\n$0\r\n\r\n$1\r\n0\r\n$4\r\n5000\r\n$4\r\nKEYS\r\n$11\r\nuser:{42}:a\r\n"), "{packed:?}");
        assert!(cmd.get_packed_command().ends_with(b"$3\r\n\xff\x00k\r\n"));
        assert_eq!(
            label.to_string(),
            "MIGRATE 127.0.0.3 7002  0 5000 KEYS <2 keys>"
        );
        let secret = super::super::Credentials::password("s3cret");
        let (cmd, label) = Dialect::Redis
            .migrate_keys(&target, &keys, Duration::from_millis(1), Some(&secret))
            .unwrap();
        assert!(
            String::from_utf8_lossy(&cmd.get_packed_command()).contains("AUTH\r\n$6\r\ns3cret")
        );
        assert_eq!(
            label.to_string(),
            "MIGRATE 127.0.0.3 7002  0 1 AUTH <redacted> KEYS <2 keys>"
        );
        let user = super::super::Credentials::user("ops", "s3cret");
        let (_, label) = Dialect::Redis
            .migrate_keys(&target, &keys, Duration::from_millis(1), Some(&user))
            .unwrap();
        assert_eq!(
            label.to_string(),
            "MIGRATE 127.0.0.3 7002  0 1 AUTH2 ops <redacted> KEYS <2 keys>"
        );
        assert!(
            Dialect::Valkey
                .migrate_keys(&target, &[], Duration::from_secs(1), None)
                .is_none()
        );
    }

    #[test]
    fn bumpepoch_answers() {
        assert_eq!(parse_bumpepoch("BUMPED 7"), Ok(BumpEpoch::Bumped(7)));
        assert_eq!(parse_bumpepoch("STILL 3"), Ok(BumpEpoch::Still(3)));
        assert!(parse_bumpepoch("BUMPED").is_err());
        assert!(parse_bumpepoch("MAYBE 3").is_err());
        assert!(parse_bumpepoch("STILL -1").is_err());
    }
}
