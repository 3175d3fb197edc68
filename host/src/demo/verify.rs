//! Checks acknowledged writes against what a member holds.

use std::net::SocketAddr;
use std::time::Duration;

const BATCH: usize = 1000;

/// The sequence numbers in `acked` whose key `PREFIX:SEQ` is missing (or wrong) on `member`.
pub async fn missing(member: SocketAddr, prefix: &str, acked: &[u64]) -> Result<Vec<u64>, String> {
    let client =
        redis::Client::open(format!("redis://{member}/")).map_err(|e| format!("{member}: {e}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("{member}: connect: {e}"))?;
    let mut lost = Vec::new();
    for chunk in acked.chunks(BATCH) {
        let keys: Vec<String> = chunk.iter().map(|s| format!("{prefix}:{s}")).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{member}: MGET: {e}"))?;
        for (seq, value) in chunk.iter().zip(values) {
            if value.as_deref() != Some(seq.to_string().as_str()) {
                lost.push(*seq);
            }
        }
    }
    Ok(lost)
}
