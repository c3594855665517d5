//! A small, fast, seeded hasher for the in-process tables (shard choice and LRU maps).
//!
//! Nothing another process must agree on is hashed here: ownership of keys uses crc32 IEEE on
//! the ring (see [`crate::ring`]). The seed is random per cache so hostile keys cannot be
//! chosen to collide in advance.

use std::hash::{BuildHasher, Hasher};

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn read8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn read4(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Builds [`FastHasher`]s sharing one seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastState {
    s0: u64,
    s1: u64,
}

impl FastState {
    /// A state with a random seed.
    pub(crate) fn random() -> Self {
        Self {
            s0: rand::random::<u64>() | 1,
            s1: rand::random::<u64>(),
        }
    }

    /// The hash of one string.
    #[inline]
    pub(crate) fn hash_str(&self, s: &str) -> u64 {
        let mut h = self.build_hasher();
        h.write(s.as_bytes());
        h.finish()
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            acc: self.s0,
            seed: self.s1,
        }
    }
}

/// A folded-multiply hasher in the style of foldhash / wyhash.
#[derive(Debug)]
pub(crate) struct FastHasher {
    acc: u64,
    seed: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        let mut acc = self.acc.wrapping_add(len as u64).rotate_left(23);
        let mut i = 0;
        while len - i > 16 {
            acc = fold(read8(bytes, i) ^ acc, read8(bytes, i + 8) ^ self.seed ^ K1);
            i += 16;
        }
        let rest = &bytes[i..];
        let (a, b) = match rest.len() {
            0 => (0, 0),
            1..=3 => {
                let n = rest.len();
                let v = u64::from(rest[0])
                    | (u64::from(rest[n / 2]) << 8)
                    | (u64::from(rest[n - 1]) << 16);
                (v, 0)
            }
            4..=7 => (read4(rest, 0), read4(rest, rest.len() - 4)),
            _ => (read8(rest, 0), read8(rest, rest.len() - 8)),
        };
        self.acc = fold(a ^ acc ^ K0, b ^ self.seed ^ K1);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.acc = fold(self.acc ^ u64::from(i) ^ K0, self.seed ^ K1);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.acc, self.seed ^ K0).rotate_left(17) ^ self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_hash_equal_and_different_ones_mostly_differ() {
        let s = FastState::random();
        assert_eq!(s.hash_str("abc"), s.hash_str("abc"));
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            seen.insert(s.hash_str(&format!("key-{i}")));
        }
        assert_eq!(seen.len(), 10_000);
        // Low bits choose shards: they must spread too.
        let mut buckets = [0u32; 16];
        for i in 0..16_000 {
            buckets[(s.hash_str(&format!("k{i}")) & 15) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 700), "{buckets:?}");
    }
}
