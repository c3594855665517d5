//! A decompression bomb against a real thumbnail process: a PNG of a few hundred KB that
//! decodes to 144 megapixels, asked for eight times at once, must be refused from its header
//! while the process stays small; images under the limits, eight at once, still fit.
//! Needs the examples built (`cargo build --examples`, which `./scripts/test` runs).
//!
//! Prints the figures it asserts (statuses, peak RSS) for RELIABILITY.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use svckit::balancer::{HttpClient, Limits};
use svckit_testing::process::{spawn_example as spawn, terminate};

use svckit_testing::{free_port, Etcd};
use tokio::process::Child;

/// Peak RSS the thumbnail process must stay under, in MiB.
const PEAK_RSS_LIMIT_MIB: u64 = 100;

async fn sigterm_and_wait(child: &mut Child) -> Option<i32> {
    terminate(child, Duration::from_secs(20)).await
}

/// GET `url`: status and body, or `None` while nothing answers.
async fn get(url: &str) -> Option<(u16, String)> {
    let limits = Limits::new(Duration::from_secs(120), 64 << 20);
    let resp = HttpClient::new().get(url, limits).await.ok()?;
    Some((
        resp.status().as_u16(),
        String::from_utf8_lossy(resp.body()).into_owned(),
    ))
}

async fn wait_for_health(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("{base}/health")).await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "{base} never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs all `paths` at once; their statuses and bodies in order.
async fn get_all(base: &str, paths: &[String]) -> Vec<(u16, String)> {
    let calls: Vec<_> = paths
        .iter()
        .map(|p| {
            let url = format!("{base}{p}");
            tokio::spawn(async move { get(&url).await.expect("thumbnail answers") })
        })
        .collect();
    let all = async {
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("all answers within 120 s")
}

/// The process's peak resident set size (VmHWM) in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb / 1024
}

/// Resets the process's peak RSS to its current RSS (`clear_refs` 5, Linux 4.0+), so that
/// each phase's peak is its own.
fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

/// Appends bits to a deflate stream, least significant bit first.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    len: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.len;
        self.len += count;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    /// A Huffman code goes most significant bit first.
    fn code(&mut self, code: u32, count: u32) {
        self.put(code.reverse_bits() >> (32 - count), count);
    }

    /// The bytes, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A PNG of `width`x`height` black pixels of `channels` 8-bit samples (1 grey, 3 RGB, 4 RGBA),
/// written without ever holding its pixels: the filtered rows are nothing but zero bytes, so
/// the zlib stream is one literal zero and then copies of 258 bytes at distance 1 (fixed
/// Huffman codes, RFC 1951 3.2.6), 13 bits per 258 pixels' bytes.
fn black_png(width: u32, height: u32, channels: u8) -> Vec<u8> {
    let color_type = match channels {
        1 => 0,
        3 => 2,
        4 => 6,
        _ => panic!("{channels} channels"),
    };
    let raw = u64::from(height) * (1 + u64::from(width) * u64::from(channels));
    let mut bits = Bits {
        out: vec![0x78, 0x01], // zlib: deflate, 32 KiB window, no dictionary
        acc: 0,
        len: 0,
    };
    bits.put(1, 1); // last block
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    for _ in 0..(raw - 1) / 258 {
        bits.code(0xC5, 8); // length 258 (symbol 285)
        bits.code(0, 5); // distance 1
    }
    for _ in 0..(raw - 1) % 258 {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block (symbol 256)
    let mut zlib = bits.finish();
    // Adler-32 of zeros: a stays 1, b adds 1 per byte.
    let adler = (((raw % 65521) as u32) << 16) | 1;
    zlib.extend_from_slice(&adler.to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &zlib[..]),
        (b"IEND", &[][..]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32fast::hash(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

#[test]
fn black_png_decodes() {
    for channels in [1, 3, 4] {
        let img = image::load_from_memory(&black_png(301, 7, channels)).unwrap();
        assert_eq!((img.width(), img.height()), (301, 7));
        assert_eq!(img.color().channel_count(), channels);
        assert!(img.as_bytes().iter().all(|&b| b == 0));
    }
}

/// Removes a directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_bombs_at_once_are_refused_and_the_process_stays_small() {
    let etcd = Etcd::start();
    let dir = std::env::temp_dir().join(format!("svckit-bomb-origin-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let bomb = black_png(12_000, 12_000, 1);
    // 4000x3000 RGBA: 12 megapixels, 46 MiB decoded, under the default limits.
    let large = black_png(4_000, 3_000, 4);
    write(&dir, "bomb.png", &bomb);
    write(&dir, "large.png", &large);
    println!(
        "image_bomb: bomb.png is 12000x12000 grey in {} KB; large.png is 4000x3000 RGBA in {} KB",
        bomb.len() / 1000,
        large.len() / 1000
    );

    let origin = format!("127.0.0.1:{}", free_port());
    let mut origin_child = spawn(
        "origin",
        &["--listen", &origin, "--dir", dir.to_str().unwrap()],
    );
    let origin_url = format!("http://{origin}");
    let thumb = format!("127.0.0.1:{}", free_port());
    let mut thumb_child = spawn(
        "thumbnail",
        &[
            "--listen",
            &thumb,
            "--origin",
            &origin_url,
            "--etcd",
            &etcd.endpoint(),
        ],
    );
    let pid = thumb_child.id().expect("thumbnail running");
    let base = format!("http://{thumb}");
    wait_for_health(&base).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("{origin_url}/_stats")).await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the origin never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = peak_rss_mib(pid);
    reset_peak_rss(pid);

    // Distinct sizes: eight keys, so neither the cache nor singleflight merges them.
    let bombs: Vec<String> = (0..8)
        .map(|i| format!("/v1/image/{0}x{0}/bomb.png", 100 + i))
        .collect();
    let started = Instant::now();
    let bomb_answers = get_all(&base, &bombs).await;
    let bomb_time = started.elapsed();
    let after_bombs = peak_rss_mib(pid);
    reset_peak_rss(pid);

    let larges: Vec<String> = (0..8)
        .map(|i| format!("/v1/image/{0}x{0}/large.png", 100 + i))
        .collect();
    let started = Instant::now();
    let large_answers = get_all(&base, &larges).await;
    let large_time = started.elapsed();
    let after_large = peak_rss_mib(pid);

    let normal = get(&format!("{base}/v1/image/100x100/sample.png"))
        .await
        .expect("thumbnail answers");

    let statuses = |answers: &[(u16, String)]| answers.iter().map(|a| a.0).collect::<Vec<_>>();
    println!("image_bomb: thumbnail peak RSS when idle: {idle} MiB");
    let first = match &bomb_answers[0] {
        (200, _) => "an image",
        (_, body) => body.trim(),
    };
    println!(
        "image_bomb: 8 bombs at once: statuses {:?} in {bomb_time:.2?}; peak RSS {after_bombs} MiB; first answer: {first}",
        statuses(&bomb_answers),
    );
    println!(
        "image_bomb: 8 large images at once: statuses {:?} in {large_time:.2?}; peak RSS {after_large} MiB",
        statuses(&large_answers)
    );
    println!("image_bomb: sample.png afterwards: {}", normal.0);

    for (path, (status, body)) in bombs.iter().zip(&bomb_answers) {
        assert_eq!(*status, 422, "{path}: {}", body.get(..200).unwrap_or(body));
        assert!(
            body.contains("12000x12000") && body.contains("over the limit of"),
            "{path}: the answer names the size and the limit: {body}"
        );
    }
    assert!(
        after_bombs < PEAK_RSS_LIMIT_MIB,
        "peak RSS {after_bombs} MiB after the bombs, limit {PEAK_RSS_LIMIT_MIB} MiB"
    );
    for (path, (status, body)) in larges.iter().zip(&large_answers) {
        assert_eq!(*status, 200, "{path}: {body}");
    }
    assert!(
        after_large < PEAK_RSS_LIMIT_MIB,
        "peak RSS {after_large} MiB after the large images, limit {PEAK_RSS_LIMIT_MIB} MiB"
    );
    assert_eq!(normal.0, 200, "sample.png: {}", normal.1);

    assert_eq!(sigterm_and_wait(&mut thumb_child).await, Some(0));
    assert_eq!(sigterm_and_wait(&mut origin_child).await, Some(0));
}
