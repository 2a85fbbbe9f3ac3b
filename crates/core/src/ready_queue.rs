//! The ready queue: callbacks due to run, first in, first out.
//!
//! A loop turn runs exactly the items that were queued when the turn began (as asyncio's
//! `BaseEventLoop._run_once` does with `ntodo = len(self._ready)`); items added while the turn
//! runs wait for the next turn.

use std::collections::VecDeque;

/// A FIFO of ready items.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    items: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ReadyQueue<T> {
    pub fn new() -> Self {
        Self {
            items: VecDeque::with_capacity(64),
        }
    }

    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes every item and hands them back (so the caller can drop them outside any lock).
    pub fn take_all(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.items)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order() {
        let mut q = ReadyQueue::new();
        for i in 0..10 {
            q.push(i);
        }
        assert_eq!(q.len(), 10);
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn take_all_empties() {
        let mut q = ReadyQueue::new();
        q.push("a");
        q.push("b");
        let all = q.take_all();
        assert_eq!(all.len(), 2);
        assert!(q.is_empty());
    }
}
