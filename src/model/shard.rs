//! Shards: `--shard INDEX/COUNT` gives each of COUNT processes a contiguous range of the
//! 16,384 hash slots, on one Redis as on a Cluster (a key's slot is the CRC16 of its name, or
//! of its `{hash tag}`). A shard claims only keys in its slots and recovers only the journals
//! whose range starts in its slots; its batch ids say its range, so that whoever owns that
//! first slot later (a shard of another COUNT, or a run without shards) finds them.

use std::ops::Range;

/// Redis Cluster's hash slots.
pub const SLOTS: u16 = 16384;

/// The hash slot of a key, with Redis Cluster's hash-tag rule: the part between the first
/// `{` and the next `}`, if that part is not empty.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// One shard of COUNT: slots `[index × 16384 / count, (index + 1) × 16384 / count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u16,
    pub count: u16,
}

impl Shard {
    /// Every slot: a run without `--shard`.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `INDEX/COUNT`, INDEX from 0.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not INDEX/COUNT (e.g. 0/3: the first of three)"))?;
        let count: u16 = n
            .trim()
            .parse()
            .ok()
            .filter(|&n| (1..=SLOTS).contains(&n))
            .ok_or_else(|| format!("COUNT {n:?} is not a number from 1 to {SLOTS}"))?;
        Shard::of(i.trim(), count)
    }

    /// Shard `index` (text, as a variable gives it) of `count`.
    pub fn of(index: &str, count: u16) -> Result<Shard, String> {
        let index: u16 = index.parse().ok().filter(|&i| i < count).ok_or_else(|| {
            format!(
                "INDEX {index:?} is not a number from 0 to {} (COUNT {count})",
                count - 1
            )
        })?;
        Ok(Shard { index, count })
    }

    /// Its slots.
    pub fn slots(&self) -> Range<u16> {
        let at = |i: u32| (i * u32::from(SLOTS) / u32::from(self.count)) as u16;
        at(u32::from(self.index))..at(u32::from(self.index) + 1)
    }

    pub fn is_all(&self) -> bool {
        self.count == 1
    }

    /// Whether slot `s` is one of its (any slot, without shards).
    pub fn owns_slot(&self, s: u16) -> bool {
        self.is_all() || self.slots().contains(&s)
    }

    /// What a run id of this shard ends with: `~<first slot>-<end slot>`; nothing without
    /// shards (such an id's range is every slot).
    pub fn id_suffix(&self) -> String {
        if self.is_all() {
            return String::new();
        }
        let r = self.slots();
        format!("~{}-{}", r.start, r.end)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.slots();
        write!(
            f,
            "shard {}/{} (slots {}-{})",
            self.index,
            self.count,
            r.start,
            r.end - 1
        )
    }
}

/// The slots a run with batch (or run) id `id` owned: what its `~<first>-<end>` says, or
/// every slot (an id without one, or one this version cannot read).
pub fn scope_of(id: &str) -> Range<u16> {
    let parsed = id.split_once('~').and_then(|(_, rest)| {
        let mut parts = rest.split('-');
        let first: u16 = parts.next()?.parse().ok()?;
        let end: u16 = parts.next()?.parse().ok()?;
        (first < end && end <= SLOTS).then_some(first..end)
    });
    parsed.unwrap_or(0..SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_slot_once_for_any_count() {
        for count in [1u16, 2, 3, 4, 7, 8, 1000, SLOTS] {
            let mut next = 0;
            for index in 0..count {
                let r = Shard { index, count }.slots();
                assert_eq!(r.start, next, "{index}/{count}");
                assert!(r.end > r.start, "{index}/{count} owns no slot");
                next = r.end;
            }
            assert_eq!(next, SLOTS, "count {count}");
        }
        assert_eq!(Shard::parse("1/3").unwrap().slots(), 5461..10922);
    }

    #[test]
    fn a_shard_is_parsed_or_refused_with_why() {
        assert_eq!(Shard::parse(" 2/4 ").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["3", "3/3", "-1/3", "0/0", "0/16385", "a/2", "1/b", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_id_says_its_range_and_an_old_id_means_every_slot() {
        let s = Shard { index: 1, count: 3 };
        let batch = format!("3d432aa5.1a23b6-cafe0001{}-17", s.id_suffix());
        assert_eq!(scope_of(&batch), 5461..10922);
        assert_eq!(scope_of("3d432aa5.1a23b6-cafe0001-17"), 0..SLOTS);
        assert_eq!(scope_of("3d432aa5.1a23b6-cafe0001~9-x-1"), 0..SLOTS);
        assert_eq!(Shard::ALL.id_suffix(), "");
    }

    #[test]
    fn slots_follow_redis_cluster() {
        // CLUSTER KEYSLOT foo is 12182; a hash tag is hashed alone; `{}` is no tag.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_ne!(slot(b"a{}b"), slot(b""));
        assert!(Shard { index: 2, count: 3 }.owns_slot(slot(b"foo")));
        assert!(!Shard { index: 0, count: 3 }.owns_slot(slot(b"foo")));
    }
}
