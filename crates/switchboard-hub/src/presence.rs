//! One topic's presence in memory ([`crate::MemoryEngine`]): the connections present, kept
//! lean for the common case of a few (a `/ws` client on a topic of its own costs one entry).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::engine::{PresenceEntry, PresenceStats};

/// Up to this many entries are a list (searched in order); past it, a set by client.
const FEW: usize = 32;

/// The connections present in one topic, by client.
#[derive(Debug)]
pub(crate) enum Present {
    /// Few: a list, allocated only once someone is present, one entry at first.
    Few(Vec<PresenceEntry>),
    /// Many: a set by client.
    #[expect(
        clippy::box_collection,
        reason = "boxed, every topic's presence is the size of a list (24 bytes), not of a set (48)"
    )]
    Many(Box<HashSet<ByClient>>),
}

/// An entry known by its client: equal, hashed and looked up by it alone (a set of these is
/// a map by client that does not hold the client twice).
#[derive(Debug)]
pub(crate) struct ByClient(PresenceEntry);

impl PartialEq for ByClient {
    fn eq(&self, other: &Self) -> bool {
        self.0.client == other.0.client
    }
}

impl Eq for ByClient {}

impl Hash for ByClient {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the `str` hashes, for lookups through `Borrow<str>`.
        (*self.0.client).hash(state);
    }
}

impl Borrow<str> for ByClient {
    fn borrow(&self) -> &str {
        &self.0.client
    }
}

impl Default for Present {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Present {
    /// Adds `entry`, or replaces the one of the same client.
    pub(crate) fn add(&mut self, entry: PresenceEntry) {
        match self {
            Self::Few(list) => {
                if let Some(e) = list.iter_mut().find(|e| e.client == entry.client) {
                    *e = entry;
                } else if list.len() < FEW {
                    if list.capacity() == 0 {
                        // Most topics have one or two present: not room for four at once.
                        list.reserve_exact(1);
                    }
                    list.push(entry);
                } else {
                    let mut set: HashSet<_> = list.drain(..).map(ByClient).collect();
                    set.insert(ByClient(entry));
                    *self = Self::Many(Box::new(set));
                }
            }
            Self::Many(set) => {
                set.replace(ByClient(entry));
            }
        }
    }

    /// Removes `client`'s entry; whether there was one.
    pub(crate) fn remove(&mut self, client: &str) -> bool {
        match self {
            Self::Few(list) => {
                let Some(i) = list.iter().position(|e| &*e.client == client) else {
                    return false;
                };
                list.swap_remove(i);
                if list.is_empty() {
                    *list = Vec::new();
                }
                true
            }
            Self::Many(set) => {
                let removed = set.remove(client);
                if set.len() <= FEW / 2 {
                    *self = Self::Few(set.drain().map(|e| e.0).collect());
                }
                removed
            }
        }
    }

    /// Whether nobody is present.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Few(list) => list.is_empty(),
            Self::Many(set) => set.is_empty(),
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> Vec<PresenceEntry> {
        match self {
            Self::Few(list) => list.clone(),
            Self::Many(set) => set.iter().map(|e| e.0.clone()).collect(),
        }
    }

    /// How many are present.
    pub(crate) fn stats(&self) -> PresenceStats {
        match self {
            Self::Few(list) => stats(list.iter()),
            Self::Many(set) => stats(set.iter().map(|e| &e.0)),
        }
    }
}

/// Connections and distinct users among `entries`: each anonymous connection (empty user)
/// counts as one user.
fn stats<'a>(entries: impl Iterator<Item = &'a PresenceEntry>) -> PresenceStats {
    let mut named = HashSet::new();
    let (mut clients, mut anonymous) = (0, 0);
    for e in entries {
        clients += 1;
        if e.user.is_empty() {
            anonymous += 1;
        } else {
            named.insert(&*e.user);
        }
    }
    PresenceStats {
        clients,
        users: named.len() + anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: &str, user: &str) -> PresenceEntry {
        PresenceEntry {
            client: client.into(),
            user: user.into(),
            name: format!("name of {client}").into(),
            info: "".into(),
        }
    }

    fn clients(p: &Present) -> Vec<String> {
        let mut v: Vec<_> = p.entries().iter().map(|e| e.client.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_few_are_a_list_many_a_map_and_back() {
        let mut p = Present::default();
        assert!(p.is_empty());
        p.add(entry("a", ""));
        assert!(matches!(&p, Present::Few(l) if l.capacity() == 1));
        p.add(entry("a", "u1"));
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: 1,
                users: 1
            }
        );
        assert_eq!(&*p.entries()[0].user, "u1", "an add replaces");
        for i in 0..FEW {
            p.add(entry(
                &format!("c{i:02}"),
                if i % 2 == 0 { "u1" } else { "" },
            ));
        }
        assert!(matches!(p, Present::Many(_)));
        // u1 (a and the even ones) plus one per anonymous (the odd ones).
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: FEW + 1,
                users: 1 + FEW / 2
            }
        );
        assert!(p.remove("a"));
        assert!(!p.remove("a"), "twice");
        for i in 0..FEW / 2 {
            assert!(p.remove(&format!("c{i:02}")));
        }
        assert!(matches!(p, Present::Few(_)), "back to a list");
        let want: Vec<_> = (FEW / 2..FEW).map(|i| format!("c{i:02}")).collect();
        assert_eq!(clients(&p), want);
        for c in want {
            assert!(p.remove(&c));
        }
        assert!(p.is_empty());
        assert!(matches!(&p, Present::Few(l) if l.capacity() == 0), "freed");
    }
}
