//! The one module with raw CPython C-API calls, each behind a safe wrapper.
//!
//! Everything else in the crate uses PyO3's safe API and these functions.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// `contextvars.copy_context()`.
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: called with the GIL held (we have `py`); returns a new reference or NULL with an
    // exception set, which `from_owned_ptr_or_err` turns into a PyErr.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

/// `context.run(callable, *args)`: enters `context`, calls, and leaves it again, without building
/// an argument tuple for `Context.run`. Entering a context that is already entered raises
/// RuntimeError, as `Context.run` does.
pub fn run_in_context<'py>(
    context: &Bound<'py, PyAny>,
    callable: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = context.py();
    // SAFETY: `context` is a live object (borrowed for the call); with the GIL held,
    // PyContext_Enter either enters it or fails with an exception set (e.g. not a Context).
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = callable.call1(args);
    // SAFETY: we entered `context` above on this thread, so exiting it is valid; the pending
    // result (or exception) of the call is kept in `result`, and PyContext_Exit does not touch
    // the error indicator when it succeeds.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// Runs Python signal handlers now (what the interpreter does between bytecodes). Returns the
/// handler's exception, e.g. KeyboardInterrupt from the default SIGINT handler.
pub fn check_signals(py: Python<'_>) -> PyResult<()> {
    // SAFETY: GIL held; PyErr_CheckSignals returns -1 with an exception set on failure.
    if unsafe { ffi::PyErr_CheckSignals() } < 0 {
        Err(PyErr::fetch(py))
    } else {
        Ok(())
    }
}

/// Most arguments [`call_with_kwnames`] passes.
pub const MAX_VECTORCALL_ARGS: usize = 8;

/// Calls `callable(*args, **dict(zip(kwnames, kwvalues)))` through vectorcall, with no dict
/// built. `args` holds the positional values followed by the keyword values; `kwnames` is a
/// tuple of interned names, one per keyword value.
pub fn call_with_kwnames<'py>(
    callable: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    kwnames: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let nkw = kwnames.len();
    debug_assert!(nkw <= args.len());
    let mut ptrs = [std::ptr::null_mut::<ffi::PyObject>(); MAX_VECTORCALL_ARGS];
    if args.len() > MAX_VECTORCALL_ARGS {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "ferroloop: too many vectorcall arguments",
        ));
    }
    for (slot, a) in ptrs.iter_mut().zip(args) {
        *slot = a.as_ptr();
    }
    let npos = args.len() - nkw;
    // SAFETY: `ptrs` holds `args.len()` borrowed pointers, alive for the call since `args`
    // borrows them; `kwnames` is a tuple of str of length `nkw` and names the trailing `nkw`
    // pointers, as the vectorcall protocol requires. The result is a new reference or NULL
    // with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(
                callable.as_ptr(),
                ptrs.as_ptr(),
                npos,
                if nkw == 0 {
                    std::ptr::null_mut()
                } else {
                    kwnames.as_ptr()
                },
            ),
        )
    }
}

/// The calling thread's identity as `threading.get_ident()` reports it.
pub fn thread_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions. CPython's PyThread_get_thread_ident returns
    // the same value converted to unsigned long.
    unsafe { libc::pthread_self() as u64 }
}
