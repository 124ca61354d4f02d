//! The hidden `bench-sign` and `bench-chain` commands that bench/ runs.

use crate::clock::UnixTime;
use crate::config::Config;
use crate::keys::open_configured;

use super::{CliError, base_url, open_store};

/// `bench-sign`: the raw signing rate of a realm's active key, in-process.
pub(super) async fn sign(
    config: Config,
    realm: String,
    seconds: u64,
    threads: usize,
    now: UnixTime,
) -> Result<i32, CliError> {
    let store = open_store(&config).await?;
    let (kek, _) = open_configured(&config, store.as_ref()).await?;
    let dir = crate::directory::Directory::new(store, kek, base_url(&config), 0);
    let live = dir
        .realm(&realm, now)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?
        .ok_or_else(|| CliError::Other(format!("realm {realm} not found")))?;
    let rate = crate::oauth::token::bench_sign_rate(&live, seconds, threads);
    println!("raw_signs_per_sec {rate:.0}");
    Ok(0)
}

/// `bench-chain`: how fast concurrent appenders grow the audit chain.
pub(super) async fn chain(
    config: Config,
    writers: usize,
    batch: usize,
    seconds: u64,
    now: UnixTime,
) -> Result<i32, CliError> {
    let store = open_store(&config).await?;
    let r = crate::audit::bench::bench_chain(
        store,
        writers.clamp(1, 256),
        batch.clamp(1, 1000),
        seconds,
        now,
    )
    .await?;
    println!(
        "writers {writers} batch {batch} records_per_sec {:.0} batches_per_sec {:.0} \
         batch_ms {:.2} head_wait_ms {:.2} wait_share {:.2}",
        r.records_per_sec, r.batches_per_sec, r.batch_ms, r.head_wait_ms, r.wait_share
    );
    Ok(0)
}
