//! asyncio's registry of live tasks, filled natively for ferroloop's Tasks.
//!
//! `asyncio.all_tasks()` reads `asyncio.tasks._all_tasks`, a `weakref.WeakSet` (on 3.11 the one
//! the `_asyncio` C module made). asyncio's `_register_task` adds a task with `WeakSet.add`, and
//! the weak reference's callback (`WeakSet.__init__`'s `_remove`) takes it out when the task
//! dies: two Python frames per task, about a fifth of a short task's cost. ferroloop does the
//! same two steps without them: it puts a weak reference to the task (one without a callback) in
//! the set's `data`, keeps it in the Task, and takes it out of `data` when the Task is
//! deallocated, or queues it on `_pending_removals` while the set is being iterated, as `_remove`
//! does. The set's contents, its `len()` and `all_tasks()` are what asyncio's own registration
//! gives.
//!
//! Only where the registry is exactly that (a plain `WeakSet` whose `data`, `_pending_removals`
//! and `_iterating` are a set, a list and a set, and `asyncio.tasks._register_task` is still the
//! C function, Python 3.11) is it done natively; otherwise `asyncio.tasks._register_task` is
//! called, as before.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PySet, PyWeakrefReference};

use crate::stdlib;

/// The parts of asyncio's task WeakSet that registration touches.
struct WeakSetParts {
    weak_set: Py<PyAny>,
    data: Py<PySet>,
    pending_removals: Py<PyList>,
    iterating: Py<PySet>,
}

/// The native registry, or None where asyncio's `_register_task` must be called instead.
fn native_registry(py: Python<'_>) -> Option<&WeakSetParts> {
    static CELL: PyOnceLock<Option<WeakSetParts>> = PyOnceLock::new();
    CELL.get_or_init(py, || find_weak_set(py).ok().flatten())
        .as_ref()
}

#[cfg(not(Py_3_12))]
fn find_weak_set(py: Python<'_>) -> PyResult<Option<WeakSetParts>> {
    let c_module = py.import("_asyncio")?;
    // Only when asyncio registers tasks with the C function over the C module's set.
    if !stdlib::register_task(py)?.is(&c_module.getattr("_register_task")?) {
        return Ok(None);
    }
    let weak_set = c_module.getattr("_all_tasks")?;
    let weak_set_class = py.import("weakref")?.getattr("WeakSet")?;
    if !weak_set.get_type().is(&weak_set_class) {
        return Ok(None);
    }
    let (Ok(data), Ok(pending_removals), Ok(iterating)) = (
        weak_set.getattr("data")?.cast_into_exact::<PySet>(),
        weak_set
            .getattr("_pending_removals")?
            .cast_into_exact::<PyList>(),
        weak_set.getattr("_iterating")?.cast_into_exact::<PySet>(),
    ) else {
        return Ok(None);
    };
    // The set holds only weak references: ours have no callback and hold nothing; those
    // `WeakSet.add` makes hold only its `_remove` function, which reaches the set through a
    // weak reference. So the set can never be part of a cycle, and off the collector's lists
    // it is not walked entry by entry in each full collection (about 9 instructions per live
    // task each time).
    crate::capi::gc_untrack(data.as_any());
    Ok(Some(WeakSetParts {
        weak_set: weak_set.unbind(),
        data: data.unbind(),
        pending_removals: pending_removals.unbind(),
        iterating: iterating.unbind(),
    }))
}

/// Python 3.12 keeps scheduled and eager tasks apart (`_scheduled_tasks`, `_eager_tasks`):
/// asyncio's `_register_task` is called there.
#[cfg(Py_3_12)]
fn find_weak_set(_py: Python<'_>) -> PyResult<Option<WeakSetParts>> {
    Ok(None)
}

/// `asyncio.tasks._register_task(task)`. Returns the weak reference to hand to [`unregister`]
/// when the task is deallocated, or None when asyncio's own function did the registering.
pub(crate) fn register(task: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let py = task.py();
    let Some(parts) = native_registry(py) else {
        stdlib::register_task(py)?.call1((task,))?;
        return Ok(None);
    };
    // `WeakSet.add`: commit the removals queued while the set was iterated, then add.
    if !parts.pending_removals.bind(py).is_empty() {
        parts
            .weak_set
            .bind(py)
            .call_method0(pyo3::intern!(py, "_commit_removals"))?;
    }
    let weak = PyWeakrefReference::new(task)?.into_any();
    // A weak reference without a callback holds no strong reference (its traverse visits
    // only the callback), so it can never be part of a cycle: off the collector's lists it
    // costs no collection anything (one object in five of a pending task, else).
    crate::capi::gc_untrack(&weak);
    parts.data.bind(py).add(&weak)?;
    Ok(Some(weak.unbind()))
}

/// What the `_remove` callback of `WeakSet.__init__` does when the registered task dies: take
/// its weak reference out of the set, or queue it while the set is being iterated. Called from
/// the Task's dealloc, where nothing may allocate a garbage-collected object: neither step does.
pub(crate) fn unregister(py: Python<'_>, weak: Py<PyAny>) {
    let Some(parts) = native_registry(py) else {
        return;
    };
    let weak = weak.bind(py);
    let result = if parts.iterating.bind(py).is_empty() {
        parts.data.bind(py).discard(weak).map(drop)
    } else {
        parts.pending_removals.bind(py).append(weak)
    };
    if let Err(err) = result {
        err.write_unraisable(py, Some(weak));
    }
}
