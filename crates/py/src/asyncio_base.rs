//! The C classes behind `asyncio.Future` and `asyncio.Task` (`_asyncio.Future`/`_asyncio.Task`)
//! as base types for ferroloop's Future and Task, so that `isinstance(f, asyncio.Future)` and
//! `isinstance(t, asyncio.Task)` hold for ferroloop's objects as for asyncio's own.
//!
//! ferroloop keeps its own state in the Rust part of each object and overrides every method and
//! attribute of the C classes; the C part stays as the base type's `tp_new` leaves it (zeroed),
//! apart from the instance `__dict__` and weak-reference list, which ferroloop's objects inherit.
//! On Python 3.11 the C layouts have fixed sizes, checked when the module loads; on 3.12+ the
//! layout is opaque (PEP 697), as PyO3 does for bases of unknown size.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// `sizeof(FutureObj)` in CPython 3.11's `_asynciomodule.c`.
#[cfg_attr(Py_3_12, allow(dead_code))]
const FUTURE_OBJ_SIZE: usize = 128;
/// `sizeof(TaskObj)` in CPython 3.11's `_asynciomodule.c`.
#[cfg_attr(Py_3_12, allow(dead_code))]
const TASK_OBJ_SIZE: usize = 176;

/// The memory of a `_asyncio.Future` object, opaque past the object header.
#[cfg_attr(Py_3_12, allow(dead_code))]
#[repr(C)]
pub struct FutureObjLayout {
    ob_base: ffi::PyObject,
    _c_fields: [usize; (FUTURE_OBJ_SIZE - std::mem::size_of::<ffi::PyObject>()) / 8],
}

/// The memory of a `_asyncio.Task` object, opaque past the object header.
#[cfg_attr(Py_3_12, allow(dead_code))]
#[repr(C)]
pub struct TaskObjLayout {
    ob_base: ffi::PyObject,
    _c_fields: [usize; (TASK_OBJ_SIZE - std::mem::size_of::<ffi::PyObject>()) / 8],
}

/// The object pointers of 3.11's `FutureObj` that its tp_traverse visits besides the instance
/// dict, as byte offsets: fut_loop, fut_callback0, fut_context0, fut_callbacks, fut_exception,
/// fut_exception_tb, fut_result, fut_source_tb, fut_cancel_msg, fut_cancelled_exc (the dict is
/// at 104, the weak-reference list at 112).
#[cfg_attr(Py_3_12, allow(dead_code))]
const FUTURE_POINTERS: [usize; 10] = [16, 24, 32, 40, 48, 56, 64, 72, 80, 120];
/// `TaskObj`'s: the Future's, then task_fut_waiter, task_coro, task_name, task_context.
#[cfg_attr(Py_3_12, allow(dead_code))]
const TASK_POINTERS: [usize; 14] = [16, 24, 32, 40, 48, 56, 64, 72, 80, 120, 128, 136, 144, 152];

/// Set once `check_layouts` has seen the pointers where `FUTURE_POINTERS` says they are.
static POINTERS_CHECKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The C Future's traversed pointers (see `capi::RawTraverse::base_pointer_offsets`), if the
/// running interpreter's layout was confirmed.
pub(crate) fn future_pointers() -> Option<&'static [usize]> {
    POINTERS_CHECKED
        .load(std::sync::atomic::Ordering::Relaxed)
        .then_some(&FUTURE_POINTERS[..])
}

/// The C Task's traversed pointers, likewise.
pub(crate) fn task_pointers() -> Option<&'static [usize]> {
    POINTERS_CHECKED
        .load(std::sync::atomic::Ordering::Relaxed)
        .then_some(&TASK_POINTERS[..])
}

/// `_asyncio.Future`, the type `asyncio.Future` names.
#[repr(transparent)]
pub struct PyAsyncioFuture(PyAny);

/// `_asyncio.Task`, the type `asyncio.Task` names.
#[repr(transparent)]
pub struct PyAsyncioTask(PyAny);

fn c_type(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> *mut ffi::PyTypeObject {
    cell.get_or_init(py, || {
        py.import("_asyncio")
            .and_then(|m| m.getattr(name))
            .and_then(|t| Ok(t.cast_into::<PyType>()?.unbind()))
            .expect("the _asyncio module provides Future and Task")
    })
    .bind(py)
    .as_type_ptr()
}

fn future_type(py: Python<'_>) -> *mut ffi::PyTypeObject {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    c_type(py, &TYPE, "Future")
}

fn task_type(py: Python<'_>) -> *mut ffi::PyTypeObject {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    c_type(py, &TYPE, "Task")
}

pyo3::pyobject_native_type_core!(PyAsyncioFuture, future_type, "asyncio", "Future");
pyo3::pyobject_native_type_core!(PyAsyncioTask, task_type, "asyncio", "Task");

/// Implements PyO3's base-type trait for one of the C classes: a sized layout on 3.11, an
/// opaque one on 3.12+. (The mutability and layout kinds are those of PyO3's own native bases,
/// named through `dict`'s, which has the same kind.)
macro_rules! asyncio_base_type {
    ($name:ty, $layout:ty) => {
        #[cfg(not(Py_3_12))]
        // SAFETY: `$layout` is the size of the C object (checked by `check_layouts` before any
        // ferroloop type is created), with the object header first.
        unsafe impl pyo3::type_object::PyLayout<$name> for $layout {}
        #[cfg(not(Py_3_12))]
        impl pyo3::type_object::PySizedLayout<$name> for $layout {}
        #[cfg(not(Py_3_12))]
        impl pyo3::impl_::pyclass::PyClassBaseType for $name {
            type LayoutAsBase = pyo3::impl_::pycell::PyClassObjectBase<$layout>;
            type BaseNativeType = $name;
            type Initializer = pyo3::impl_::pyclass_init::PyNativeTypeInitializer<Self>;
            type PyClassMutability =
                <pyo3::types::PyDict as pyo3::impl_::pyclass::PyClassBaseType>::PyClassMutability;
            type Layout<T: pyo3::impl_::pyclass::PyClassImpl> =
                pyo3::impl_::pycell::PyStaticClassObject<T>;
        }
        #[cfg(Py_3_12)]
        impl pyo3::impl_::pyclass::PyClassBaseType for $name {
            type LayoutAsBase = pyo3::impl_::pycell::PyVariableClassObjectBase;
            type BaseNativeType = $name;
            type Initializer = pyo3::impl_::pyclass_init::PyNativeTypeInitializer<Self>;
            type PyClassMutability =
                <pyo3::types::PyDict as pyo3::impl_::pyclass::PyClassBaseType>::PyClassMutability;
            type Layout<T: pyo3::impl_::pyclass::PyClassImpl> =
                pyo3::impl_::pycell::PyVariableClassObject<T>;
        }
    };
}

asyncio_base_type!(PyAsyncioFuture, FutureObjLayout);
asyncio_base_type!(PyAsyncioTask, TaskObjLayout);

/// Refuses to load when the running interpreter's C layouts are not the ones this build assumes.
pub(crate) fn check_layouts(py: Python<'_>) -> PyResult<()> {
    #[cfg(not(Py_3_12))]
    {
        use pyo3::exceptions::PyImportError;
        use pyo3::PyTypeInfo;
        let sizes = [
            (
                PyAsyncioFuture::type_object(py),
                std::mem::size_of::<FutureObjLayout>(),
            ),
            (
                PyAsyncioTask::type_object(py),
                std::mem::size_of::<TaskObjLayout>(),
            ),
        ];
        for (ty, expected) in sizes {
            let actual: usize = ty.getattr("__basicsize__")?.extract()?;
            if actual != expected {
                return Err(PyImportError::new_err(format!(
                    "ferroloop was built for {} objects of {expected} bytes, this Python has {actual}",
                    ty.name()?
                )));
            }
        }
    }
    #[cfg(not(Py_3_12))]
    check_pointer_offsets(py)?;
    let _ = py;
    Ok(())
}

/// Confirms two of the offsets `FUTURE_POINTERS` assumes on a C Future (its loop at 16, its
/// result at 64) and the dict offset (104); on a mismatch the raw traverse keeps calling the
/// base's (nothing is skipped).
#[cfg(not(Py_3_12))]
fn check_pointer_offsets(py: Python<'_>) -> PyResult<()> {
    use crate::capi::object_word;
    use pyo3::types::IntoPyDict;
    use pyo3::PyTypeInfo;
    let fake_loop = py.import("types")?.getattr("SimpleNamespace")?.call(
        (),
        Some(&[("get_debug", py.eval(c"lambda: False", None, None)?)].into_py_dict(py)?),
    )?;
    let fut = PyAsyncioFuture::type_object(py)
        .call((), Some(&[("loop", &fake_loop)].into_py_dict(py)?))?;
    let result = pyo3::types::PyList::empty(py);
    fut.call_method1("set_result", (&result,))?;
    let dict_offset = dict_offset(&PyAsyncioFuture::type_object(py));
    let confirmed = object_word(&fut, 16) == Some(fake_loop.as_ptr() as usize)
        && object_word(&fut, 64) == Some(result.as_ptr() as usize)
        && dict_offset == 104
        && FUTURE_POINTERS.iter().all(|&o| o + 8 <= FUTURE_OBJ_SIZE)
        && TASK_POINTERS.iter().all(|&o| o + 8 <= TASK_OBJ_SIZE);
    POINTERS_CHECKED.store(confirmed, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// A type's `__dictoffset__`.
#[cfg(not(Py_3_12))]
fn dict_offset(ty: &Bound<'_, PyType>) -> isize {
    ty.getattr("__dictoffset__")
        .and_then(|o| o.extract())
        .unwrap_or(-1)
}
