//! The memory test of the byte budget: a group of 64 MiB filled with 3,000,000 values of
//! 10 bytes under 12-byte keys through the public API. The process may grow by at most the
//! budget plus 10 %: the budget counts what an entry really costs, not only its key and
//! value. Prints the growth of the resident set (`VmRSS` in `/proc/self/status`), the
//! group's own count and the cost per entry, and fails if the growth is over the limit.
//!
//! Run with: `cargo bench -p svckit-cache --bench memory`

use bytes::Bytes;
use svckit_cache::{getter_fn, BoxError, Cache};

const BUDGET: usize = 64 << 20;
const KEYS: u64 = 3_000_000;

/// The resident set of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
    let group = cache
        .new_group(
            "memory",
            BUDGET,
            getter_fn(|key: String| async move {
                // 10 bytes, allocated exactly (a `Vec` whose capacity is its length).
                Ok::<_, BoxError>(Bytes::copy_from_slice(&key.as_bytes()[2..]))
            }),
        )
        .build()
        .unwrap();
    let before = rss();
    rt.block_on(async {
        for i in 0..KEYS {
            let key = format!("{i:012}");
            let value = group.get(&key).await.unwrap();
            assert_eq!(value.len(), 10);
        }
    });
    let after = rss();
    let st = group.stats();
    let growth = after.saturating_sub(before);
    let items = st.main_cache.items.max(1);
    let limit = BUDGET as u64 + BUDGET as u64 / 10;
    println!(
        "cache/memory: {KEYS} gets of 10-byte values under 12-byte keys into a {} MiB group: \
         RSS grew {:.1} MiB (limit {:.1} MiB); the group holds {} entries, counts {:.1} MiB \
         ({:.0} bytes per entry), evicted {}; RSS per held entry {:.0} bytes",
        BUDGET >> 20,
        growth as f64 / (1 << 20) as f64,
        limit as f64 / (1 << 20) as f64,
        st.main_cache.items,
        st.main_cache.bytes as f64 / (1 << 20) as f64,
        st.main_cache.bytes as f64 / items as f64,
        st.main_cache.evictions,
        growth as f64 / items as f64,
    );
    assert!(
        growth <= limit,
        "the process grew by {growth} bytes, over the budget plus 10 % ({limit})"
    );
}
