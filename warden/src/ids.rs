//! Request ids: 26 characters of Crockford base32 over a 48-bit millisecond timestamp and
//! 80 random bits, so ids sort by creation time and never collide in practice. Within one
//! millisecond the generator increments the random part, so ids from one warden are
//! strictly increasing.

use std::fs::File;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_MASK: u128 = (1u128 << 80) - 1;
const TIME_MASK: u64 = (1u64 << 48) - 1;

/// Length of a request id.
pub const ID_LEN: usize = 26;

/// Hands out request ids; share one per warden.
#[derive(Debug)]
pub struct IdGenerator {
    urandom: File,
    last: Mutex<(u64, u128)>,
}

impl IdGenerator {
    /// Opens the kernel's random source.
    pub fn new() -> io::Result<IdGenerator> {
        let urandom = File::open("/dev/urandom").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open /dev/urandom for request ids: {e}"),
            )
        })?;
        Ok(IdGenerator {
            urandom,
            last: Mutex::new((0, 0)),
        })
    }

    /// A new id for a call that arrives at `now`.
    pub fn next_id(&self, now: SystemTime) -> io::Result<String> {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            & TIME_MASK;
        let mut bytes = [0u8; 16];
        (&self.urandom).read_exact(&mut bytes[6..])?;
        let fresh = u128::from_be_bytes(bytes) & RANDOM_MASK;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (ms, random) = if ms <= last.0 && last.1 < RANDOM_MASK {
            // Same (or an earlier, after a clock step) millisecond: stay monotonic.
            (last.0, last.1 + 1)
        } else if ms <= last.0 {
            (last.0 + 1, fresh)
        } else {
            (ms, fresh)
        };
        *last = (ms, random);
        Ok(encode((u128::from(ms) << 80) | random))
    }
}

/// Crockford base32 of a 128-bit value, 26 characters, most significant first.
pub fn encode(value: u128) -> String {
    let mut out = [0u8; ID_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (ID_LEN - 1 - i);
        *slot = CROCKFORD[((value >> shift) & 0x1f) as usize];
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn encode_is_26_crockford_chars_of_the_value() {
        assert_eq!(encode(0), "00000000000000000000000000");
        assert_eq!(encode(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(encode(32), "00000000000000000000000010");
    }

    #[test]
    fn id_starts_with_the_timestamp() {
        let ids = IdGenerator::new().unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_469_918_176_385);
        let id = ids.next_id(at).unwrap();
        assert_eq!(id.len(), ID_LEN);
        // The ULID spec's example timestamp encodes to 01ARYZ6S41.
        assert_eq!(&id[..10], "01ARYZ6S41");
        assert!(id.bytes().all(|b| CROCKFORD.contains(&b)));
    }

    #[test]
    fn ids_are_unique_and_increase_within_one_millisecond() {
        let ids = IdGenerator::new().unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let all: Vec<String> = (0..1000).map(|_| ids.next_id(at).unwrap()).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, all);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 1000);
    }

    #[test]
    fn later_time_sorts_after_earlier_time() {
        let ids = IdGenerator::new().unwrap();
        let a = ids
            .next_id(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
            .unwrap();
        let b = ids
            .next_id(UNIX_EPOCH + Duration::from_millis(1_700_000_000_001))
            .unwrap();
        assert!(a < b, "{a} !< {b}");
        assert_ne!(a[..10], b[..10]);
    }

    #[test]
    fn clock_stepping_back_keeps_ids_increasing() {
        let ids = IdGenerator::new().unwrap();
        let a = ids
            .next_id(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
            .unwrap();
        let b = ids
            .next_id(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
            .unwrap();
        assert!(a < b);
    }
}
