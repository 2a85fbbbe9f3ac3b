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
    let _ = py;
    Ok(())
}
