//! The server-side assignors of the consumer group protocol (KIP-848):
//! `uniform`, which spreads every subscribed partition evenly over the
//! members and keeps each partition where it was whenever balance allows,
//! and `range`, which gives each member a contiguous range of every topic
//! it subscribes to (co-partitioned topics land together).
//!
//! Both are pure functions of the members' subscriptions, the topics'
//! partition counts and the previous target assignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Partitions by topic name.
pub type Parts = BTreeMap<String, BTreeSet<i32>>;

/// The assignors a member may ask for; the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// What an assignor sees of one member.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    /// The topics the member subscribes to that exist.
    pub topics: BTreeSet<&'a str>,
    /// Its partitions in the previous target assignment.
    pub previous: Option<&'a Parts>,
}

/// The target assignment of `assignor` for `members` over `topics`
/// (name → partition count). Unknown assignors fall back to the default.
pub fn assign(
    assignor: &str,
    members: &BTreeMap<&str, MemberSpec<'_>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Parts> {
    match assignor {
        "range" => range(members, topics),
        _ => uniform(members, topics),
    }
}

/// The members that subscribe to `topic`, in member-id order.
fn subscribers<'a>(members: &BTreeMap<&'a str, MemberSpec<'_>>, topic: &str) -> Vec<&'a str> {
    members
        .iter()
        .filter(|(_, s)| s.topics.contains(topic))
        .map(|(m, _)| *m)
        .collect()
}

/// Each topic's partitions split in contiguous ranges over the members that
/// subscribe to it, in member-id order; the first `n % k` members get one
/// more.
fn range(
    members: &BTreeMap<&str, MemberSpec<'_>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Parts> {
    let mut out: BTreeMap<String, Parts> = members
        .keys()
        .map(|m| ((*m).to_string(), Parts::new()))
        .collect();
    for (topic, &n) in topics {
        let subs = subscribers(members, topic);
        if subs.is_empty() || n <= 0 {
            continue;
        }
        let k = subs.len() as i32;
        let (each, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = each + i32::from((i as i32) < extra);
            if count == 0 {
                continue;
            }
            if let Some(parts) = out.get_mut(*m) {
                parts
                    .entry(topic.clone())
                    .or_default()
                    .extend(next..next + count);
            }
            next += count;
        }
    }
    out
}

/// Every partition to a member that subscribes to its topic, balanced by
/// count; a partition stays with its previous owner while that owner is
/// not above its share.
fn uniform(
    members: &BTreeMap<&str, MemberSpec<'_>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Parts> {
    let mut owner: HashMap<(&str, i32), &str> = HashMap::new();
    let mut held: BTreeMap<&str, Vec<(&str, i32)>> =
        members.keys().map(|m| (*m, Vec::new())).collect();
    // 1. Stickiness: what each member held and may still hold.
    for (m, spec) in members {
        let Some(prev) = spec.previous else { continue };
        for (topic, parts) in prev {
            let Some((name, &n)) = topics.get_key_value(topic.as_str()) else {
                continue;
            };
            if !spec.topics.contains(name.as_str()) {
                continue;
            }
            for &p in parts.iter().filter(|&&p| p >= 0 && p < n) {
                if owner.insert((name.as_str(), p), m).is_none() {
                    if let Some(h) = held.get_mut(m) {
                        h.push((name.as_str(), p));
                    }
                }
            }
        }
    }
    // 2. With one subscription shared by all, each member's share is known:
    //    floor or ceil of the total; whoever holds more gives the rest up.
    let homogeneous = {
        let mut specs = members.values().map(|s| &s.topics);
        specs.next().is_none_or(|first| specs.all(|t| t == first))
    };
    if homogeneous && !members.is_empty() {
        let total: i64 = members
            .values()
            .next()
            .map(|s| {
                s.topics
                    .iter()
                    .map(|t| i64::from(*topics.get(*t).unwrap_or(&0)))
                    .sum()
            })
            .unwrap_or(0);
        let k = members.len() as i64;
        let (floor, mut extra) = ((total / k) as usize, (total % k) as usize);
        let mut order: Vec<&str> = held.keys().copied().collect();
        order.sort_by_key(|m| std::cmp::Reverse(held[m].len()));
        for m in order {
            let cap = if extra > 0 && held[m].len() > floor {
                extra -= 1;
                floor + 1
            } else {
                floor
            };
            if let Some(h) = held.get_mut(m) {
                h.sort_unstable();
                for tp in h.drain(cap.min(h.len())..) {
                    owner.remove(&tp);
                }
            }
        }
    }
    // 3. Every partition nobody holds goes to the least loaded member that
    //    subscribes to its topic.
    for (topic, &n) in topics {
        let subs = subscribers(members, topic);
        if subs.is_empty() {
            continue;
        }
        for p in 0..n.max(0) {
            if owner.contains_key(&(topic.as_str(), p)) {
                continue;
            }
            let Some(m) = subs.iter().copied().min_by_key(|m| (held[m].len(), *m)) else {
                continue;
            };
            owner.insert((topic.as_str(), p), m);
            if let Some(h) = held.get_mut(m) {
                h.push((topic.as_str(), p));
            }
        }
    }
    // 4. Different subscriptions: move partitions from the most to the least
    //    loaded member that may take them, while that narrows the gap.
    if !homogeneous {
        let total: usize = held.values().map(Vec::len).sum();
        for _ in 0..total {
            let mut moved = false;
            let mut by_load: Vec<&str> = held.keys().copied().collect();
            by_load.sort_by_key(|m| std::cmp::Reverse((held[m].len(), *m)));
            'from: for from in &by_load {
                for to in by_load.iter().rev() {
                    if held[to].len() + 1 >= held[from].len() {
                        break;
                    }
                    let spec = &members[to];
                    if let Some(i) = held[from]
                        .iter()
                        .rposition(|(t, _)| spec.topics.contains(t))
                    {
                        let tp = held.get_mut(from).map(|h| h.remove(i));
                        if let (Some(tp), Some(h)) = (tp, held.get_mut(to)) {
                            h.push(tp);
                            moved = true;
                            break 'from;
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    held.into_iter()
        .map(|(m, tps)| {
            let mut parts = Parts::new();
            for (t, p) in tps {
                parts.entry(t.to_string()).or_default().insert(p);
            }
            (m.to_string(), parts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn specs<'a>(
        subs: &'a [(String, BTreeSet<&'a str>)],
        prev: &'a BTreeMap<String, Parts>,
    ) -> BTreeMap<&'a str, MemberSpec<'a>> {
        subs.iter()
            .map(|(m, t)| {
                (
                    m.as_str(),
                    MemberSpec {
                        topics: t.clone(),
                        previous: prev.get(m),
                    },
                )
            })
            .collect()
    }

    fn count(p: &Parts) -> usize {
        p.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn range_gives_contiguous_ranges_and_the_extras_first() {
        let subs = vec![
            ("a".to_string(), BTreeSet::from(["t"])),
            ("b".to_string(), BTreeSet::from(["t"])),
        ];
        let prev = BTreeMap::new();
        let topics = BTreeMap::from([("t".to_string(), 5)]);
        let out = assign("range", &specs(&subs, &prev), &topics);
        assert_eq!(out["a"]["t"], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"]["t"], BTreeSet::from([3, 4]));
    }

    #[test]
    fn uniform_keeps_partitions_where_they_were_when_a_member_joins() {
        let topics = BTreeMap::from([("t".to_string(), 6)]);
        let two = vec![
            ("a".to_string(), BTreeSet::from(["t"])),
            ("b".to_string(), BTreeSet::from(["t"])),
        ];
        let first = assign("uniform", &specs(&two, &BTreeMap::new()), &topics);
        let three = vec![
            ("a".to_string(), BTreeSet::from(["t"])),
            ("b".to_string(), BTreeSet::from(["t"])),
            ("c".to_string(), BTreeSet::from(["t"])),
        ];
        let second = assign("uniform", &specs(&three, &first), &topics);
        for m in ["a", "b", "c"] {
            assert_eq!(count(&second[m]), 2, "{second:?}");
        }
        for m in ["a", "b"] {
            assert!(
                second[m]["t"].is_subset(&first[m]["t"]),
                "{first:?} → {second:?}"
            );
        }
    }

    proptest! {
        /// Whatever the subscriptions and the previous assignment: every
        /// subscribed partition has exactly one owner, who subscribes to its
        /// topic; with one shared subscription counts differ by at most one,
        /// and a member keeps what it had up to its share.
        #[test]
        fn every_partition_once_balanced_and_sticky(
            counts in proptest::collection::vec(0i32..12, 1..5),
            members in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 4), 1..7),
            shared in any::<bool>(),
            assignor in 0usize..2,
        ) {
            let topics: BTreeMap<String, i32> =
                counts.iter().enumerate().map(|(i, n)| (format!("t{i}"), *n)).collect();
            let names: Vec<String> = topics.keys().cloned().collect();
            let subs: Vec<(String, BTreeSet<&str>)> = members
                .iter()
                .enumerate()
                .map(|(i, pick)| {
                    let t = names
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| shared || pick[*j % pick.len()])
                        .map(|(_, n)| n.as_str())
                        .collect();
                    (format!("m{i}"), t)
                })
                .collect();
            let name = ASSIGNORS[assignor];
            let first = assign(name, &specs(&subs, &BTreeMap::new()), &topics);
            // One member leaves; the rest are assigned again from `first`.
            let rest: Vec<_> = subs.iter().skip(1).cloned().collect();
            let second = assign(name, &specs(&rest, &first), &topics);
            for (subs, out) in [(&subs, &first), (&rest, &second)] {
                let mut seen = BTreeSet::new();
                for (m, parts) in out.iter() {
                    let mine = &subs.iter().find(|(n, _)| n == m).unwrap().1;
                    for (t, ps) in parts {
                        prop_assert!(mine.contains(t.as_str()));
                        for p in ps {
                            prop_assert!(seen.insert((t.clone(), *p)), "{t}-{p} twice");
                        }
                    }
                }
                let wanted: usize = topics
                    .iter()
                    .filter(|(t, _)| subs.iter().any(|(_, s)| s.contains(t.as_str())))
                    .map(|(_, n)| *n as usize)
                    .sum();
                prop_assert_eq!(seen.len(), wanted);
                if shared && !subs.is_empty() {
                    let loads: Vec<usize> = out.values().map(count).collect();
                    let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
                    if name == "uniform" {
                        prop_assert!(hi - lo <= 1, "{out:?}");
                    }
                }
            }
            if shared && name == "uniform" && !rest.is_empty() {
                let share = wanted_total(&topics) as usize / rest.len();
                for (m, _) in &rest {
                    let kept = first[m]
                        .iter()
                        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                        .filter(|(t, p)| second[m].get(t).is_some_and(|s| s.contains(p)))
                        .count();
                    prop_assert!(kept >= count(&first[m]).min(share), "{m} kept {kept}");
                }
            }
        }
    }

    fn wanted_total(topics: &BTreeMap<String, i32>) -> i32 {
        topics.values().sum()
    }
}
