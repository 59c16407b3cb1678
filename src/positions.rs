//! Positions in a list, found by a key each entry carries. The keys are read from the list
//! rather than copied into the table: at 10,000 entries a `HashMap<Box<str>, usize>` holds
//! about 530 KB, this about 150 KB.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// A hash table of positions. Every call passes `key_of`, which gives the key of the entry at
/// a position; it must be the same for the life of the table (the list it reads from does not
/// change).
#[derive(Debug, Clone, Default)]
pub(crate) struct Positions(HashTable<usize>);

impl Positions {
    /// Adds position `at` under its key, unless a position with an equal key is there already:
    /// the first one stays. Returns whether it was added.
    pub(crate) fn insert_first<K: Hash + Eq>(
        &mut self,
        at: usize,
        key_of: impl Fn(usize) -> K,
    ) -> bool {
        let key = key_of(at);
        let hash = FxBuildHasher.hash_one(&key);
        match self.0.entry(
            hash,
            |&i| key_of(i) == key,
            |&i| FxBuildHasher.hash_one(key_of(i)),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(at);
                true
            }
        }
    }

    /// The position whose key equals `key`.
    pub(crate) fn get<K: Hash + Eq>(&self, key: K, key_of: impl Fn(usize) -> K) -> Option<usize> {
        let hash = FxBuildHasher.hash_one(&key);
        self.0.find(hash, |&i| key_of(i) == key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_position_of_each_key_and_nothing_else() {
        let names = ["b", "a", "b", "c", "a"];
        let key_of = |i: usize| names[i];
        let mut positions = Positions::default();
        let added: Vec<bool> = (0..names.len())
            .map(|i| positions.insert_first(i, key_of))
            .collect();
        assert_eq!(added, [true, true, false, true, false]);
        assert_eq!(positions.get("a", key_of), Some(1));
        assert_eq!(positions.get("b", key_of), Some(0));
        assert_eq!(positions.get("c", key_of), Some(3));
        assert_eq!(positions.get("d", key_of), None);
        assert_eq!(positions.get("", key_of), None);
    }

    #[test]
    fn keys_may_be_pairs() {
        let routes = [(None, "/a"), (Some("h"), "/a"), (Some("h"), "/b")];
        let key_of = |i: usize| routes[i];
        let mut positions = Positions::default();
        for i in 0..routes.len() {
            assert!(positions.insert_first(i, key_of));
        }
        assert_eq!(positions.get((Some("h"), "/a"), key_of), Some(1));
        assert_eq!(positions.get((None, "/a"), key_of), Some(0));
        assert_eq!(positions.get((None, "/b"), key_of), None);
    }
}
