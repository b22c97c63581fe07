//! The cleaner's key → latest offset map, in a fixed amount of memory.
//!
//! Each key is reduced to a 16-byte digest (the first half of its SHA-256)
//! and kept with its offset in one slot of an open-addressing table (linear
//! probing): 24 bytes a key, whatever the key's length. The table never
//! grows: once it is 90% full, [`OffsetMap::put`] refuses new keys and the
//! cleaner stops its pass at the last offset that fit, as Kafka's cleaner
//! does. Two keys are taken for one only if their SHA-256 digests share
//! their first 128 bits.

use ring::digest;

/// Bytes of one slot: a 16-byte digest and an offset.
pub const SLOT_BYTES: usize = 24;
/// Fewest slots a map has.
const MIN_SLOTS: usize = 1024;

/// Slot layout: digest as two u64 words, then offset + 1 (0: empty).
type Slot = [u64; 3];

/// A bounded map from key digests to the latest offset seen for them.
#[derive(Debug)]
pub struct OffsetMap {
    slots: Vec<Slot>,
    used: usize,
    max_used: usize,
    latest: i64,
}

impl OffsetMap {
    /// A map of at most `max_bytes` (at least [`MIN_SLOTS`] slots), sized
    /// for about `expected_keys` keys: the table is a power of two of
    /// slots, no larger than needed nor than the bound.
    pub fn new(max_bytes: usize, expected_keys: usize) -> Self {
        let cap_bound = (max_bytes / SLOT_BYTES).max(MIN_SLOTS);
        let mut cap = MIN_SLOTS;
        let want = expected_keys.saturating_mul(2);
        while cap < want && cap.saturating_mul(2) <= cap_bound {
            cap *= 2;
        }
        Self {
            // All-zero words: the allocator hands out zeroed pages lazily.
            slots: vec![[0u64; 3]; cap],
            used: 0,
            max_used: cap / 10 * 9,
            latest: -1,
        }
    }

    /// Bytes the table takes.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The largest offset put so far, -1 when none.
    pub fn latest_offset(&self) -> i64 {
        self.latest
    }

    fn digest(key: &[u8]) -> (u64, u64) {
        let d = digest::digest(&digest::SHA256, key);
        let b = d.as_ref();
        let mut w0 = [0u8; 8];
        let mut w1 = [0u8; 8];
        w0.copy_from_slice(&b[..8]);
        w1.copy_from_slice(&b[8..16]);
        (u64::from_le_bytes(w0), u64::from_le_bytes(w1))
    }

    /// The slot holding `(w0, w1)`, or the empty slot where it would go.
    fn find(&self, w0: u64, w1: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = (w0 as usize) & mask;
        loop {
            let s = &self.slots[i];
            if s[2] == 0 || (s[0] == w0 && s[1] == w1) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Records `offset` as the latest of `key`. Returns false (and changes
    /// nothing) when the key is new and the map is full.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let (w0, w1) = Self::digest(key);
        let i = self.find(w0, w1);
        if self.slots[i][2] == 0 {
            if self.used >= self.max_used {
                return false;
            }
            self.used += 1;
        }
        self.slots[i] = [w0, w1, (offset + 1) as u64];
        self.latest = self.latest.max(offset);
        true
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let (w0, w1) = Self::digest(key);
        let s = self.slots[self.find(w0, w1)];
        (s[2] != 0).then(|| s[2] as i64 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_per_key_and_refuses_new_keys_when_full() {
        let mut m = OffsetMap::new(0, 0);
        assert_eq!(m.memory_bytes(), MIN_SLOTS * SLOT_BYTES);
        assert!(m.put(b"a", 3));
        assert!(m.put(b"b", 4));
        assert!(m.put(b"a", 7));
        assert_eq!(m.get(b"a"), Some(7));
        assert_eq!(m.get(b"b"), Some(4));
        assert_eq!(m.get(b"c"), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.latest_offset(), 7);
        let mut n = 2;
        while m.put(format!("k{n}").as_bytes(), 100 + n as i64) {
            n += 1;
        }
        assert_eq!(m.len(), MIN_SLOTS / 10 * 9);
        // A known key still updates when full.
        assert!(m.put(b"a", 1000));
        assert_eq!(m.get(b"a"), Some(1000));
        assert_eq!(m.get(b"k5"), Some(105));
    }

    #[test]
    fn grows_to_the_expected_keys_within_the_bound() {
        let m = OffsetMap::new(1 << 20, 100_000);
        assert!(m.memory_bytes() <= 1 << 20);
        assert_eq!(m.memory_bytes(), 32768 * SLOT_BYTES);
        let m = OffsetMap::new(128 << 20, 10);
        assert_eq!(m.memory_bytes(), MIN_SLOTS * SLOT_BYTES);
    }
}
