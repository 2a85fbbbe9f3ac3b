//! GilCell: state that only threads holding the GIL touch, borrowed without atomic operations.
//!
//! The loop's scheduling state (ready queue, timers, fd watches, the handle pool) and a
//! transport's state are read and written only by threads attached to the interpreter: the
//! loop's own thread, and other threads through call_soon_threadsafe and friends, which hold
//! the GIL too. On a GIL build the GIL already serializes them, so a `std::sync::Mutex` only
//! repeats that guarantee, at the price of two atomic read-modify-writes per use (22 ns a
//! lock/unlock pair measured on the bench machine, where a plain flag costs 2 ns; a call_soon
//! callback took eight of them).
//!
//! A GilCell asks for a `Python<'_>` token, the proof that the calling thread holds the GIL,
//! and keeps a plain borrow flag. The flag catches re-entrant use (a second `lock` while a
//! guard is alive, where a Mutex would deadlock): `lock` panics, `try_lock` returns None.
//! A guard is neither Send nor Sync, so it cannot be used inside `py.detach` (GIL released).
//!
//! GilRefCell is the same for state that is borrowed shared as well as exclusively (a
//! Future's or Task's, which PyO3 would otherwise guard with an atomic borrow flag: two locked
//! instructions per shared borrow, some forty per future round trip): a `RefCell`, whose
//! borrows panic on conflict as PyO3's do, reached only with a `Python` token.
//!
//! Free-threaded builds (`Py_GIL_DISABLED`) have no GIL to lean on: there a GilCell is a Mutex
//! and a GilRefCell an RwLock.

#[cfg(not(Py_GIL_DISABLED))]
mod imp {
    use std::cell::{Cell, Ref, RefCell, RefMut, UnsafeCell};
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};

    use pyo3::Python;

    pub struct GilCell<T> {
        borrowed: Cell<bool>,
        value: UnsafeCell<T>,
    }

    // SAFETY: the flag and the value are only reached through `lock`/`try_lock` (which take a
    // `Python` token, so the calling thread holds the GIL, and one thread at a time holds it)
    // or through `&mut self`. The GIL's release/acquire orders one holder's writes before the
    // next holder's reads. `T: Send` because the value is used by whichever thread holds the GIL.
    unsafe impl<T: Send> Sync for GilCell<T> {}

    pub struct GilGuard<'a, T> {
        cell: &'a GilCell<T>,
        /// Not Send or Sync: a guard stays on the thread that took it, with the GIL.
        _gil_bound: PhantomData<*const ()>,
    }

    impl<T> GilCell<T> {
        pub const fn new(value: T) -> Self {
            GilCell {
                borrowed: Cell::new(false),
                value: UnsafeCell::new(value),
            }
        }

        /// The value, through exclusive access to the cell (no GIL needed: e.g. in `Drop`).
        pub fn get_mut(&mut self) -> &mut T {
            self.value.get_mut()
        }

        /// Borrows the value. Panics if it is already borrowed (re-entrant use).
        #[track_caller]
        pub fn lock<'a>(&'a self, py: Python<'_>) -> GilGuard<'a, T> {
            match self.try_lock(py) {
                Some(guard) => guard,
                None => panic!("GilCell borrowed twice (re-entrant use of loop state)"),
            }
        }

        /// Borrows the value, or None if it is already borrowed.
        #[inline]
        pub fn try_lock<'a>(&'a self, _py: Python<'_>) -> Option<GilGuard<'a, T>> {
            if self.borrowed.get() {
                return None;
            }
            self.borrowed.set(true);
            Some(GilGuard {
                cell: self,
                _gil_bound: PhantomData,
            })
        }
    }

    impl<T> Deref for GilGuard<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            // SAFETY: this guard is the only borrow (the flag was clear when it was made and
            // stays set until it drops), and the GIL keeps other threads out.
            unsafe { &*self.cell.value.get() }
        }
    }

    impl<T> DerefMut for GilGuard<'_, T> {
        #[inline]
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as in `deref`; `&mut self` makes this the only reference made through it.
            unsafe { &mut *self.cell.value.get() }
        }
    }

    impl<T> Drop for GilGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            self.cell.borrowed.set(false);
        }
    }

    pub struct GilRefCell<T>(RefCell<T>);

    // SAFETY: as for GilCell: the RefCell (its flag and value) is only reached through methods
    // that take a `Python` token, so by the one thread holding the GIL, or through `&mut self`.
    // Its guards are neither Send nor Sync, so they stay on the thread that holds the GIL (they
    // cannot move into `py.detach`). `T: Send` because whichever thread holds the GIL uses it.
    unsafe impl<T: Send> Sync for GilRefCell<T> {}

    pub type GilRef<'a, T> = Ref<'a, T>;
    pub type GilRefMut<'a, T> = RefMut<'a, T>;

    impl<T> GilRefCell<T> {
        pub const fn new(value: T) -> Self {
            GilRefCell(RefCell::new(value))
        }

        /// A shared borrow. Panics if it is exclusively borrowed.
        #[inline]
        #[track_caller]
        pub fn borrow<'a>(&'a self, _py: Python<'_>) -> GilRef<'a, T> {
            self.0.borrow()
        }

        /// An exclusive borrow. Panics if it is borrowed.
        #[inline]
        #[track_caller]
        pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> GilRefMut<'a, T> {
            self.0.borrow_mut()
        }

        /// A shared borrow, or None if it is exclusively borrowed.
        #[inline]
        pub fn try_borrow<'a>(&'a self, _py: Python<'_>) -> Option<GilRef<'a, T>> {
            self.0.try_borrow().ok()
        }

        /// An exclusive borrow, or None if it is borrowed.
        #[inline]
        pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<GilRefMut<'a, T>> {
            self.0.try_borrow_mut().ok()
        }
    }
}

#[cfg(Py_GIL_DISABLED)]
mod imp {
    use pyo3::Python;
    use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

    pub struct GilCell<T>(Mutex<T>);
    pub type GilGuard<'a, T> = MutexGuard<'a, T>;

    impl<T> GilCell<T> {
        pub const fn new(value: T) -> Self {
            GilCell(Mutex::new(value))
        }

        pub fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(|e| e.into_inner())
        }

        pub fn lock<'a>(&'a self, _py: Python<'_>) -> GilGuard<'a, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn try_lock<'a>(&'a self, _py: Python<'_>) -> Option<GilGuard<'a, T>> {
            self.0.try_lock().ok()
        }
    }

    /// An RwLock: re-entrant exclusive use blocks here where the GIL build's RefCell panics.
    pub struct GilRefCell<T>(RwLock<T>);
    pub type GilRef<'a, T> = RwLockReadGuard<'a, T>;
    pub type GilRefMut<'a, T> = RwLockWriteGuard<'a, T>;

    impl<T> GilRefCell<T> {
        pub const fn new(value: T) -> Self {
            GilRefCell(RwLock::new(value))
        }

        pub fn borrow<'a>(&'a self, _py: Python<'_>) -> GilRef<'a, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }

        pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> GilRefMut<'a, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }

        pub fn try_borrow<'a>(&'a self, _py: Python<'_>) -> Option<GilRef<'a, T>> {
            self.0.try_read().ok()
        }

        pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<GilRefMut<'a, T>> {
            self.0.try_write().ok()
        }
    }
}

pub use imp::{GilCell, GilGuard, GilRef, GilRefCell, GilRefMut};

/// A frozen `#[pyclass]` whose mutable state is one [`GilRefCell`], borrowed from a bound
/// object through [`StateCell`] (`slf.st()`, `slf.st_mut()`), as PyO3's `borrow()` would be.
pub(crate) trait HasStateCell:
    pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync
{
    type State;
    fn state_cell(&self) -> &GilRefCell<Self::State>;
}

/// Borrows of a bound object's [`HasStateCell`] state.
pub(crate) trait StateCell<T: HasStateCell> {
    fn st(&self) -> GilRef<'_, T::State>;
    fn st_mut(&self) -> GilRefMut<'_, T::State>;
}

impl<T: HasStateCell> StateCell<T> for pyo3::Bound<'_, T> {
    #[track_caller]
    fn st(&self) -> GilRef<'_, T::State> {
        self.get().state_cell().borrow(self.py())
    }

    #[track_caller]
    fn st_mut(&self) -> GilRefMut<'_, T::State> {
        self.get().state_cell().borrow_mut(self.py())
    }
}

impl<T> GilRefCell<T> {
    /// For `tp_traverse`: the state, or None while it is exclusively borrowed (the collector
    /// started from an allocation made then); its references then go unvisited, which can only
    /// keep them alive longer, never free them early.
    pub fn for_traverse(&self) -> Option<GilRef<'_, T>> {
        crate::capi::in_traverse(|py| self.try_borrow(py))
    }

    /// For `tp_clear`: moves out what `take` takes (nothing while the state is borrowed) and
    /// drops it once the cell is released, since a drop can run Python code that reaches the
    /// object.
    pub fn clear_with<R>(&self, take: impl FnOnce(&mut T) -> R) {
        pyo3::Python::attach(|py| {
            let taken = self.try_borrow_mut(py).map(|mut state| take(&mut state));
            drop(taken);
        });
    }
}
