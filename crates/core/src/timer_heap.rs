//! The timer heap: items ordered by deadline, equal deadlines in the order they were scheduled.
//!
//! Cancelled timers are not removed at once (that would cost a search); the owner counts them and
//! calls [`TimerHeap::retain`] when they are a large share of the heap, as asyncio's
//! `BaseEventLoop._run_once` does.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Entry<T> {
    when: f64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    /// Reversed, so that std's max-heap pops the earliest deadline (then the lowest sequence).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A min-heap of items keyed by deadline (seconds on the loop clock).
pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerHeap<T> {
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    pub fn push(&mut self, when: f64, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, item });
    }

    /// The earliest deadline and its item.
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.heap.peek().map(|e| (e.when, &e.item))
    }

    pub fn pop(&mut self) -> Option<(f64, T)> {
        self.heap.pop().map(|e| (e.when, e.item))
    }

    /// Pops the earliest item if its deadline is before `limit`.
    pub fn pop_before(&mut self, limit: f64) -> Option<T> {
        match self.heap.peek() {
            Some(e) if e.when < limit => self.heap.pop().map(|e| e.item),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keeps only the items for which `keep` is true; the removed items are returned.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let entries = std::mem::take(&mut self.heap).into_vec();
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            if keep(&e.item) {
                kept.push(e);
            } else {
                removed.push(e.item);
            }
        }
        self.heap = BinaryHeap::from(kept);
        removed
    }

    /// Removes everything, handing the items back.
    pub fn take_all(&mut self) -> Vec<T> {
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| e.item)
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (f64, &T)> {
        self.heap.iter().map(|e| (e.when, &e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_ties_in_order() {
        let mut h = TimerHeap::new();
        h.push(3.0, "c");
        h.push(1.0, "a1");
        h.push(2.0, "b");
        h.push(1.0, "a2");
        h.push(1.0, "a3");
        let order: Vec<_> = std::iter::from_fn(|| h.pop().map(|(_, x)| x)).collect();
        assert_eq!(order, ["a1", "a2", "a3", "b", "c"]);
    }

    #[test]
    fn pop_before_limit() {
        let mut h = TimerHeap::new();
        h.push(1.0, 1);
        h.push(2.0, 2);
        assert_eq!(h.pop_before(1.0), None);
        assert_eq!(h.pop_before(1.5), Some(1));
        assert_eq!(h.pop_before(1.5), None);
        assert_eq!(h.peek().map(|(w, _)| w), Some(2.0));
    }

    #[test]
    fn retain_removes_and_keeps_order() {
        let mut h = TimerHeap::new();
        for i in 0..100 {
            h.push((i % 10) as f64, i);
        }
        let removed = h.retain(|x| x % 2 == 0);
        assert_eq!(removed.len(), 50);
        let mut last = (f64::MIN, -1);
        while let Some((w, x)) = h.pop() {
            assert!(x % 2 == 0);
            assert!(w > last.0 || (w == last.0 && x > last.1));
            last = (w, x);
        }
    }

    #[test]
    fn many_random_deadlines_sorted() {
        let mut h = TimerHeap::new();
        let mut x: u64 = 12345;
        for i in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.push((x >> 40) as f64, i);
        }
        let mut last = f64::MIN;
        while let Some((w, _)) = h.pop() {
            assert!(w >= last);
            last = w;
        }
    }
}
