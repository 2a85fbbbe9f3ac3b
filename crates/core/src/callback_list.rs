//! `CallbackList`: a future's done callbacks in registration order, the first one stored inline.
//! Most futures get exactly one callback (the wake-up of the Task awaiting them), which then
//! costs no heap allocation; the C Future keeps its first callback in separate fields for the
//! same reason (`fut_callback0` in `_asynciomodule.c`).

/// A list that holds its first element inline and the others in a `Vec`.
pub struct CallbackList<T> {
    /// Invariant: `None` only when `rest` is empty too.
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for CallbackList<T> {
    fn default() -> Self {
        CallbackList {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T> CallbackList<T> {
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push(item);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.into_iter()
    }

    pub fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

impl<T> Extend<T> for CallbackList<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push(item);
        }
    }
}

impl<T> IntoIterator for CallbackList<T> {
    type Item = T;
    type IntoIter = std::iter::Chain<std::option::IntoIter<T>, std::vec::IntoIter<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

impl<'a, T> IntoIterator for &'a CallbackList<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Chain<std::option::Iter<'a, T>, std::slice::Iter<'a, T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.iter().chain(self.rest.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::CallbackList;

    #[test]
    fn keeps_registration_order_across_inline_and_heap() {
        let mut list = CallbackList::default();
        assert!(list.is_empty());
        for i in 0..4 {
            list.push(i);
        }
        assert_eq!(list.len(), 4);
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
        let mut other = CallbackList::default();
        other.push(9);
        other.extend(list);
        assert_eq!(other.into_iter().collect::<Vec<_>>(), [9, 0, 1, 2, 3]);
    }

    #[test]
    fn clear_empties_both_parts() {
        let mut list = CallbackList::default();
        list.push("a");
        list.push("b");
        list.clear();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        list.push("c");
        assert_eq!(list.into_iter().collect::<Vec<_>>(), ["c"]);
    }
}
