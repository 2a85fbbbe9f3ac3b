//! `CallbackList`: a future's done callbacks in registration order, a single one stored inline.
//! Most futures get exactly one callback (the wake-up of the Task awaiting them), which then
//! costs no heap allocation; the C Future keeps its first callback in separate fields for the
//! same reason (`fut_callback0` in `_asynciomodule.c`). The list is one word larger than a
//! `Vec` (32 bytes for a 24-byte callback), not a `Vec` plus an inline slot.

/// No callbacks, one (inline), or several (on the heap), in registration order.
#[derive(Default)]
pub enum CallbackList<T> {
    #[default]
    Empty,
    One(T),
    /// Two or more.
    Many(Vec<T>),
}

impl<T> CallbackList<T> {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn push(&mut self, item: T) {
        *self = match std::mem::take(self) {
            CallbackList::Empty => CallbackList::One(item),
            CallbackList::One(first) => CallbackList::Many(vec![first, item]),
            CallbackList::Many(mut items) => {
                items.push(item);
                CallbackList::Many(items)
            }
        };
    }

    pub fn as_slice(&self) -> &[T] {
        match self {
            CallbackList::Empty => &[],
            CallbackList::One(item) => std::slice::from_ref(item),
            CallbackList::Many(items) => items,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            CallbackList::Empty => &mut [],
            CallbackList::One(item) => std::slice::from_mut(item),
            CallbackList::Many(items) => items,
        }
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.as_mut_slice().iter_mut()
    }

    pub fn clear(&mut self) {
        *self = CallbackList::Empty;
    }
}

impl<T> Extend<T> for CallbackList<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push(item);
        }
    }
}

/// The owning iterator of a [`CallbackList`].
pub enum IntoIter<T> {
    One(Option<T>),
    Many(std::vec::IntoIter<T>),
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            IntoIter::One(item) => item.take(),
            IntoIter::Many(items) => items.next(),
        }
    }
}

impl<T> IntoIterator for CallbackList<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        match self {
            CallbackList::Empty => IntoIter::One(None),
            CallbackList::One(item) => IntoIter::One(Some(item)),
            CallbackList::Many(items) => IntoIter::Many(items.into_iter()),
        }
    }
}

impl<'a, T> IntoIterator for &'a CallbackList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
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
    fn one_callback_stays_inline() {
        let mut list = CallbackList::default();
        list.push("only");
        assert!(matches!(list, CallbackList::One("only")));
        assert_eq!(list.len(), 1);
        assert_eq!((&list).into_iter().collect::<Vec<_>>(), [&"only"]);
        assert_eq!(list.into_iter().collect::<Vec<_>>(), ["only"]);
    }

    #[test]
    fn iter_mut_reaches_every_callback_in_each_shape() {
        for n in 0..4 {
            let mut list = CallbackList::default();
            for i in 0..n {
                list.push(i);
            }
            for item in list.iter_mut() {
                *item *= 10;
            }
            assert_eq!(
                list.iter().copied().collect::<Vec<_>>(),
                (0..n).map(|i| i * 10).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn clear_empties_both_parts() {
        let mut list = CallbackList::default();
        list.push("a");
        list.push("b");
        list.clear();
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
        assert_eq!(list.into_iter().count(), 0);
        let mut list = CallbackList::default();
        list.push("c");
        assert_eq!(list.into_iter().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn at_most_one_word_larger_than_a_vec() {
        // A stand-in for the PyO3 layer's callback: a tagged pair of pointers.
        #[allow(dead_code)]
        enum Callback {
            Python(Box<u8>, Box<u8>),
            Task(Box<u8>),
        }
        assert!(
            std::mem::size_of::<CallbackList<Callback>>()
                <= std::mem::size_of::<Vec<Callback>>() + std::mem::size_of::<usize>()
        );
    }
}
