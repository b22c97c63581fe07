//! A consumer group's durable state as one record: the group's epochs, its
//! members (epochs, subscriptions, current assignments, partitions being
//! revoked) and its target assignment. The record leads with a sequence
//! number, so that of two records written for one group the newer wins
//! whatever order they reach the store in.
//!
//! Layout (big-endian): `seq u64 | version u8 | epoch i32 |
//! assignment_epoch i32 | members u32 × member | metadata u32 × (topic,
//! partitions i32)`; a member is `id | instance? | rack? | client_id |
//! client_host | epoch i32 | previous_epoch i32 | state u8 |
//! rebalance_timeout i32 | topics u32 × str | regex? | assignor? |
//! assigned | revoking | target | classic`, `classic` being `0`, or `1 |
//! session_timeout i32 | u32 × (protocol name, u32 length | metadata)`
//! (version 1; a version 0 record has no such field); partitions are `u32 × (topic, u32 × i32)`;
//! strings are `u16 length | utf-8`, an absent one has length 0xffff.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::assign::Parts;
use super::group::{Classic, Group, Member, MemberState};

/// Version 1 adds a classic member's session timeout and protocols.
const VERSION: u8 = 1;

/// The sequence number a record leads with (0 if it is too short).
pub fn seq_of(record: &[u8]) -> u64 {
    record
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize - 1)];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

fn put_opt(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_u16(u16::MAX),
    }
}

fn put_parts(out: &mut BytesMut, parts: &Parts) {
    out.put_u32(parts.len() as u32);
    for (topic, ps) in parts {
        put_str(out, topic);
        out.put_u32(ps.len() as u32);
        for p in ps {
            out.put_i32(*p);
        }
    }
}

/// `group` as a record.
pub fn encode(group: &Group) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + group.members.len() * 128);
    out.put_u64(group.seq);
    out.put_u8(VERSION);
    out.put_i32(group.epoch);
    out.put_i32(group.assignment_epoch);
    out.put_u32(group.members.len() as u32);
    for m in group.members.values() {
        put_str(&mut out, &m.id);
        put_opt(&mut out, m.instance_id.as_deref());
        put_opt(&mut out, m.rack_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.put_i32(m.epoch);
        out.put_i32(m.previous_epoch);
        out.put_u8(m.state as u8);
        out.put_i32(m.rebalance_timeout_ms);
        out.put_u32(m.topics.len() as u32);
        for t in &m.topics {
            put_str(&mut out, t);
        }
        put_opt(&mut out, m.regex.as_deref());
        put_opt(&mut out, m.assignor.as_deref());
        put_parts(&mut out, &m.assigned);
        put_parts(&mut out, &m.revoking);
        put_parts(&mut out, group.target.get(&m.id).unwrap_or(&Parts::new()));
        match &m.classic {
            None => out.put_u8(0),
            Some(c) => {
                out.put_u8(1);
                out.put_i32(c.session_timeout_ms);
                out.put_u32(c.protocols.len() as u32);
                for (name, meta) in &c.protocols {
                    put_str(&mut out, name);
                    out.put_u32(meta.len() as u32);
                    out.put_slice(meta);
                }
            }
        }
    }
    out.put_u32(group.metadata.len() as u32);
    for (t, n) in &group.metadata {
        put_str(&mut out, t);
        out.put_i32(*n);
    }
    out.freeze()
}

struct Cur(Bytes);

impl Cur {
    fn u8(&mut self) -> Option<u8> {
        (self.0.remaining() >= 1).then(|| self.0.get_u8())
    }
    fn u32(&mut self) -> Option<u32> {
        (self.0.remaining() >= 4).then(|| self.0.get_u32())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn u64(&mut self) -> Option<u64> {
        (self.0.remaining() >= 8).then(|| self.0.get_u64())
    }
    fn opt(&mut self) -> Option<Option<String>> {
        if self.0.remaining() < 2 {
            return None;
        }
        let len = self.0.get_u16();
        if len == u16::MAX {
            return Some(None);
        }
        let len = usize::from(len);
        if self.0.remaining() < len {
            return None;
        }
        String::from_utf8(self.0.split_to(len).to_vec())
            .ok()
            .map(Some)
    }
    fn str(&mut self) -> Option<String> {
        self.opt()?
    }
    /// A count of items of at least `min` bytes each, refused when the
    /// rest of the record cannot hold them.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min) <= self.0.remaining()).then_some(n)
    }
    fn parts(&mut self) -> Option<Parts> {
        let mut out = Parts::new();
        for _ in 0..self.count(6)? {
            let topic = self.str()?;
            let ps = (0..self.count(4)?)
                .map(|_| self.i32())
                .collect::<Option<_>>()?;
            out.insert(topic, ps);
        }
        Some(out)
    }
}

/// The group a record holds, its members' sessions starting at `now`.
pub fn decode(id: &str, record: &Bytes, now: Instant) -> Option<Group> {
    let mut c = Cur(record.clone());
    let seq = c.u64()?;
    let version = c.u8()?;
    if version > VERSION {
        return None;
    }
    let mut g = Group::new(id);
    g.seq = seq;
    g.epoch = c.i32()?;
    g.assignment_epoch = c.i32()?;
    for _ in 0..c.count(32)? {
        let id = c.str()?;
        let instance_id = c.opt()?;
        let rack_id = c.opt()?;
        let client_id = c.str()?;
        let client_host = c.str()?;
        let epoch = c.i32()?;
        let previous_epoch = c.i32()?;
        let state = match c.u8()? {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => return None,
        };
        let rebalance_timeout_ms = c.i32()?;
        let topics = (0..c.count(2)?)
            .map(|_| c.str())
            .collect::<Option<Vec<_>>>()?;
        let regex = c.opt()?;
        let assignor = c.opt()?;
        let assigned = c.parts()?;
        let revoking = c.parts()?;
        let target = c.parts()?;
        let classic = if version >= 1 && c.u8()? == 1 {
            let session_timeout_ms = c.i32()?;
            let mut protocols = Vec::new();
            for _ in 0..c.count(6)? {
                let name = c.str()?;
                let len = c.count(1)?;
                protocols.push((name, c.0.split_to(len)));
            }
            Some(Classic {
                session_timeout_ms,
                protocols,
                rejoin_by: None,
            })
        } else {
            None
        };
        if let Some(inst) = &instance_id {
            g.statics.insert(inst.clone(), id.clone());
        }
        g.target.insert(id.clone(), target);
        let m = Member {
            id: id.clone(),
            instance_id,
            rack_id,
            client_id,
            client_host,
            epoch,
            previous_epoch,
            state,
            rebalance_timeout_ms,
            topics,
            matcher: regex.as_deref().and_then(|r| super::group::compile(r).ok()),
            regex,
            assignor,
            assigned,
            revoking,
            last_heartbeat: now,
            revoke_deadline: (state == MemberState::UnrevokedPartitions).then(|| {
                now + std::time::Duration::from_millis(rebalance_timeout_ms.max(0) as u64)
            }),
            classic,
        };
        g.members.insert(id, m);
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..c.count(6)? {
        let t = c.str()?;
        metadata.insert(t, c.i32()?);
    }
    g.metadata = metadata;
    if c.0.has_remaining() {
        return None;
    }
    g.rebuild_owners();
    Some(g)
}
