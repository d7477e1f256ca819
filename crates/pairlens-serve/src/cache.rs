//! A small least-recently-used map bounded by the total weight of its entries (1 per entry for
//! explanations, bytes for images). Not synchronised: the server wraps it in a mutex that is
//! only held for a lookup or an insert, never while computing.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub struct Lru<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: u64,
    capacity: u64,
}

struct Entry<V> {
    value: V,
    weight: u64,
    tick: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    /// `capacity` ≥ 1: the largest total weight kept.
    pub fn new(capacity: u64) -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            weight: 0,
            capacity: capacity.max(1),
        }
    }

    /// The value for `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let e = self.entries.get_mut(key)?;
        self.order.remove(&e.tick);
        e.tick = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(e.value.clone())
    }

    /// Insert (or replace) and evict the least recently used entries until the total weight fits;
    /// an entry heavier than the capacity on its own is still kept, alone.
    pub fn insert(&mut self, key: K, value: V, weight: u64) {
        self.remove(&key);
        while self.weight + weight > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.weight -= e.weight;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                weight,
                tick: self.tick,
            },
        );
        self.weight += weight;
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let e = self.entries.remove(key)?;
        self.order.remove(&e.tick);
        self.weight -= e.weight;
        Some(e.value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_weight() {
        let mut c = Lru::new(3);
        c.insert("a", 1, 1);
        c.insert("b", 2, 1);
        c.insert("c", 3, 1);
        assert_eq!(c.get(&"a"), Some(1)); // b is now the oldest
        c.insert("d", 4, 1);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.len(), 3);
        c.insert("big", 5, 2); // evicts c and a
        assert_eq!(
            (c.get(&"c"), c.get(&"a"), c.get(&"d"), c.get(&"big")),
            (None, None, Some(4), Some(5))
        );
        c.insert("huge", 6, 10); // alone
        assert_eq!(c.len(), 1);
        c.insert("huge", 7, 1); // replacing keeps the weight right
        c.insert("x", 8, 2);
        assert_eq!(c.len(), 2);
    }
}
