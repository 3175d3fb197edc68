//! Closing client connections one by one: `CLIENT LIST`, then `CLIENT KILL ID` for each
//! connection to close. Dragonfly (experimental) needs it: its `CLIENT KILL` takes only
//! `ip:port`, `ADDR`, `LADDR` or `ID` and answers the `TYPE normal SKIPME yes` filter with a
//! syntax error (`ClientKill` in src/server/server_family.cc, v1.27 to v1.40). `CLIENT ID`,
//! `CLIENT LIST` and `CLIENT KILL ID` are the same on Valkey and Redis, which is how this is
//! tested against real servers.

use super::info::ParseError;

/// One line of `CLIENT LIST`: the fields that decide whether a connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedClient {
    pub id: u64,
    pub name: String,
    pub flags: String,
}

/// Parses `CLIENT LIST` (one `key=value ...` line per connection). Fields other than `id`,
/// `name` and `flags` are ignored; a line without a numeric `id` is an error.
pub fn parse_client_list(text: &str) -> Result<Vec<ListedClient>, ParseError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut client = ListedClient {
                id: u64::MAX,
                name: String::new(),
                flags: String::new(),
            };
            let mut has_id = false;
            for (key, value) in line.split(' ').filter_map(|f| f.split_once('=')) {
                match key {
                    "id" => {
                        client.id = value.parse().map_err(|_| ParseError {
                            field: "CLIENT LIST id".into(),
                            problem: format!("not a number: {value:?}"),
                        })?;
                        has_id = true;
                    }
                    "name" => client.name = value.to_string(),
                    "flags" => client.flags = value.to_string(),
                    _ => {}
                }
            }
            if !has_id {
                return Err(ParseError {
                    field: "CLIENT LIST".into(),
                    problem: "a line without id=".into(),
                });
            }
            Ok(client)
        })
        .collect()
}

/// The connections to close among `listed`, as `CLIENT KILL TYPE normal SKIPME yes` would:
/// every one but the sender (`own_id`), the replication links, which Valkey/Redis flag `S` (a
/// replica's link to this primary) or `M` (this replica's link to its primary) and Dragonfly
/// names `repl_flow_<sync id>` and `repl_ctrl_<sync id>` (`DflyCmd::Flow`,
/// `ServerFamily::ReplConf`), and pub/sub subscribers (flag `P`), which write nothing. Closing a
/// replication link would break replication, and a Dragonfly takeover needs the target's
/// flows in stable sync.
pub fn to_close(listed: &[ListedClient], own_id: u64) -> Vec<u64> {
    listed
        .iter()
        .filter(|c| c.id != own_id)
        .filter(|c| !c.flags.contains(['S', 'M', 'P']))
        .filter(|c| !c.name.starts_with("repl_flow_") && !c.name.starts_with("repl_ctrl_"))
        .map(|c| c.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAGONFLY: &str = "\
id=1 addr=10.0.0.7:41000 laddr=10.0.0.5:6379 fd=20 name= irqmatch=0 age=5 idle=0 db=0 phase=process
id=2 addr=10.0.0.6:41100 laddr=10.0.0.5:6379 fd=21 name=repl_ctrl_1 irqmatch=0 age=9 idle=0 phase=readsock
id=3 addr=10.0.0.6:41102 laddr=10.0.0.5:6379 fd=22 name=repl_flow_1 irqmatch=0 age=9 idle=0 phase=readsock
id=4 addr=10.0.0.9:50000 laddr=10.0.0.5:6379 fd=23 name=kvpilot irqmatch=0 age=1 idle=0 phase=process
id=5 addr=10.0.0.8:50500 laddr=10.0.0.5:6379 fd=24 name=app irqmatch=1 age=3 idle=3 phase=readsock
";

    #[test]
    fn dragonfly_replication_flows_and_the_sender_are_kept() {
        let listed = parse_client_list(DRAGONFLY).unwrap();
        assert_eq!(listed.len(), 5);
        assert_eq!(listed[1].name, "repl_ctrl_1");
        assert_eq!(to_close(&listed, 4), [1, 5]);
    }

    #[test]
    fn valkey_replica_links_are_kept_by_their_flags() {
        let text = "id=7 addr=127.0.0.5:6000 laddr=127.0.0.4:7000 fd=9 name= age=1 idle=0 flags=N db=0\n\
                    id=8 addr=127.0.0.6:6001 laddr=127.0.0.4:7000 fd=10 name= age=9 idle=1 flags=S db=0\n\
                    id=9 addr=127.0.0.7:6002 laddr=127.0.0.4:7000 fd=11 name= age=9 idle=1 flags=P db=0\r\n";
        let listed = parse_client_list(text).unwrap();
        assert_eq!(to_close(&listed, 0), [7]);
        assert!(to_close(&listed, 7).is_empty());
    }

    #[test]
    fn a_line_without_an_id_is_an_error() {
        assert!(parse_client_list("addr=1.2.3.4:5 name=x\n").is_err());
        assert!(parse_client_list("id=x name=y\n").is_err());
        assert!(parse_client_list("").unwrap().is_empty());
    }
}
