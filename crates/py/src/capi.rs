//! The one module with raw CPython C-API calls, each behind a safe wrapper.
//!
//! Everything else in the crate uses PyO3's safe API and these functions.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// `contextvars.copy_context()`.
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: called with the GIL held (we have `py`); returns a new reference or NULL with an
    // exception set, which `from_owned_ptr_or_err` turns into a PyErr.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()).map(Bound::unbind) }
}

/// The object layout of a `contextvars.Context` (CPython's `PyContext`, the same from 3.7 to
/// 3.14): read only after [`check_context_layout`] has confirmed it on this interpreter.
#[repr(C)]
struct ContextLayout {
    ob_base: ffi::PyObject,
    ctx_prev: *mut ffi::PyObject,
    ctx_vars: *mut ffi::PyObject,
    ctx_weakreflist: *mut ffi::PyObject,
    ctx_entered: std::ffi::c_int,
}

/// Where a thread state keeps its current context (`PyThreadState.context`), in bytes, on the
/// builds whose layout [`check_context_layout`] probes: CPython 3.11 on 64-bit targets.
#[cfg(all(
    Py_3_11,
    not(Py_3_12),
    not(Py_GIL_DISABLED),
    target_pointer_width = "64"
))]
const TSTATE_CONTEXT_OFFSET: Option<usize> = Some(224);
#[cfg(not(all(
    Py_3_11,
    not(Py_3_12),
    not(Py_GIL_DISABLED),
    target_pointer_width = "64"
)))]
const TSTATE_CONTEXT_OFFSET: Option<usize> = None;

/// Whether [`ContextLayout`] was confirmed on this interpreter (set once, at module init).
static CONTEXT_LAYOUT_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether `PyThreadState.context` was found at [`TSTATE_CONTEXT_OFFSET`] (set at init).
static TSTATE_CONTEXT_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the context machinery keeps between calls: the empty variables (a pooled Context is
/// reset to them) and one Context, unseen by anyone, ready to run the next snapshot in.
struct ContextPool {
    empty_vars: Option<Py<PyAny>>,
    spare: Option<Py<PyAny>>,
}

static CONTEXT_POOL: crate::gil_cell::GilCell<ContextPool> =
    crate::gil_cell::GilCell::new(ContextPool {
        empty_vars: None,
        spare: None,
    });

/// The variables of the Context `ctx`.
///
/// # Safety
/// `ctx` is a live, exact Context and [`CONTEXT_LAYOUT_OK`] is set.
unsafe fn vars_of(ctx: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: per the caller's guarantee, the layout holds for `ctx`.
    unsafe { (*ctx.cast::<ContextLayout>()).ctx_vars }
}

/// The calling thread's current context (`PyThreadState.context`, borrowed; null if the
/// thread has none yet), or None where its place is not known.
fn tstate_context(_py: Python<'_>) -> Option<*mut ffi::PyObject> {
    let offset = TSTATE_CONTEXT_OFFSET?;
    if !TSTATE_CONTEXT_OK.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    // SAFETY: called with the GIL held (the `Python` token), so the thread state is live;
    // the offset was confirmed at init to hold the context pointer, inside the struct.
    unsafe {
        let ts = ffi::PyThreadState_Get();
        Some(*ts.cast::<u8>().add(offset).cast::<*mut ffi::PyObject>())
    }
}

/// Confirms [`ContextLayout`] on this interpreter (a fresh copy of the current context is not
/// entered, has no weak references and shares its `hamt` of variables with a second copy),
/// and where the thread state keeps its current context (entering a Context puts it at
/// [`TSTATE_CONTEXT_OFFSET`], leaving puts the previous one back). What is not confirmed is
/// not used: [`snapshot_context`] then copies the context as asyncio does.
pub fn check_context_layout(py: Python<'_>) -> PyResult<()> {
    let a = copy_context(py)?;
    let b = copy_context(py)?;
    // SAFETY: `a` and `b` are live Context objects (PyContext_CopyCurrent returns exact
    // Contexts); the reads stay inside the object's allocation (tp_basicsize is checked first)
    // and a pointer read is only dereferenced (for its type name) if it is non-null.
    let layout_ok = unsafe {
        let (pa, pb) = (
            a.as_ptr().cast::<ContextLayout>(),
            b.as_ptr().cast::<ContextLayout>(),
        );
        let tp = ffi::Py_TYPE(a.as_ptr());
        (*tp).tp_basicsize as usize >= std::mem::size_of::<ContextLayout>()
            && ffi::PyContext_CheckExact(a.as_ptr()) != 0
            && (*pa).ctx_entered == 0
            && (*pa).ctx_weakreflist.is_null()
            && !(*pa).ctx_vars.is_null()
            && (*pa).ctx_vars == (*pb).ctx_vars
            && std::ffi::CStr::from_ptr((*ffi::Py_TYPE((*pa).ctx_vars)).tp_name).to_bytes()
                == b"hamt"
    };
    if !layout_ok {
        return Ok(());
    }
    let empty = new_context(py)?;
    // SAFETY: `empty` is a new, exact Context (PyContext_New) and the layout is confirmed.
    let empty_vars = unsafe { Bound::from_borrowed_ptr(py, vars_of(empty.as_ptr())).unbind() };
    CONTEXT_POOL.lock(py).empty_vars = Some(empty_vars);
    CONTEXT_LAYOUT_OK.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(offset) = TSTATE_CONTEXT_OFFSET {
        let read = || -> *mut ffi::PyObject {
            // SAFETY: GIL held; on the builds TSTATE_CONTEXT_OFFSET is set for, the offset is
            // that of `PyThreadState.context`, a pointer field inside the struct.
            unsafe {
                *ffi::PyThreadState_Get()
                    .cast::<u8>()
                    .add(offset)
                    .cast::<*mut ffi::PyObject>()
            }
        };
        let before = read();
        // SAFETY: `empty` is a live Context not entered anywhere; entering then exiting it on
        // this thread restores the previous current context.
        let inside = unsafe {
            if ffi::PyContext_Enter(empty.as_ptr()) < 0 {
                return Err(PyErr::fetch(py));
            }
            let inside = read();
            if ffi::PyContext_Exit(empty.as_ptr()) < 0 {
                return Err(PyErr::fetch(py));
            }
            inside
        };
        let ok = inside == empty.as_ptr() && read() == before;
        TSTATE_CONTEXT_OK.store(ok, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// What a callback scheduled without `context=` runs in: `contextvars.copy_context()` as the
/// caller saw it.
pub enum ContextSnapshot {
    /// A Context object (given, or copied where the variables cannot be taken alone).
    Context(Py<PyAny>),
    /// The current context's variables (its immutable `hamt` mapping), taken without making a
    /// Context: [`ContextSnapshot::into_context`] makes the copy when the callback runs.
    ///
    /// A pending callback then holds no Context, so scheduling many costs the garbage
    /// collector nothing: a Context is a tracked, counted object, and tens of thousands of
    /// queued ones start collections that traverse them all. (Holding the variables is what a
    /// copy holds: the copy would be made of exactly them.)
    Vars(Py<PyAny>),
}

impl ContextSnapshot {
    /// `context=` as call_soon and its siblings take it: a Context to run in, or None (absent,
    /// or Python's None) for a snapshot of the caller's context.
    pub fn given(context: Option<&Bound<'_, PyAny>>) -> Option<ContextSnapshot> {
        context
            .filter(|c| !c.is_none())
            .map(|c| ContextSnapshot::Context(c.clone().unbind()))
    }

    /// The object held (a Context, or the variables): for the garbage collector's visits.
    pub fn held(&self) -> &Py<PyAny> {
        match self {
            ContextSnapshot::Context(c) | ContextSnapshot::Vars(c) => c,
        }
    }

    /// Lets go of the object held, as a bound reference (a plain decref: dropping a `Py`
    /// first asks a thread-local whether the GIL is held).
    pub fn release(self, py: Python<'_>) {
        match self {
            ContextSnapshot::Context(c) | ContextSnapshot::Vars(c) => drop(c.into_bound(py)),
        }
    }

    /// The Context to run in, made now from the variables if need be (reusing the spare
    /// Context when there is one: see [`recycle_context`]).
    pub fn into_context(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            ContextSnapshot::Context(c) => Ok(c),
            ContextSnapshot::Vars(v) => context_from_vars(py, v),
        }
    }

    /// The Context to run in (a new reference), made from the variables the first time and
    /// kept from then on, so that every look at it sees the same object.
    pub fn context(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let ContextSnapshot::Vars(v) = self {
            let ctx = context_from_vars(py, v.clone_ref(py))?;
            *self = ContextSnapshot::Context(ctx);
        }
        Ok(self.held().clone_ref(py))
    }
}

/// `contextvars.copy_context()`, taken as the variables where the layouts are known.
pub fn snapshot_context(py: Python<'_>) -> PyResult<ContextSnapshot> {
    if let Some(current) = tstate_context(py) {
        if !current.is_null() {
            // SAFETY: the thread state's current context is a live, exact Context (only
            // Contexts are entered) and the layout was confirmed; its variables are non-null.
            // We take a new reference to them.
            return Ok(ContextSnapshot::Vars(unsafe {
                Bound::from_borrowed_ptr(py, vars_of(current)).unbind()
            }));
        }
    }
    let ctx = copy_context(py)?;
    if !CONTEXT_LAYOUT_OK.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(ContextSnapshot::Context(ctx));
    }
    // SAFETY: `ctx` is a fresh, exact Context and the layout was confirmed; we take a new
    // reference to its variables before `ctx` is released.
    let vars = unsafe { Bound::from_borrowed_ptr(py, vars_of(ctx.as_ptr())).unbind() };
    drop(ctx);
    Ok(ContextSnapshot::Vars(vars))
}

/// A new, empty Context (`contextvars.Context()`).
fn new_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: GIL held; PyContext_New returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_New()) }
}

/// Swaps the variables of the Context `ctx` for `vars` (whose reference it takes over) and
/// returns the old ones, for the caller to release when no borrow of ours is held (releasing
/// them may run finalizers).
///
/// # Safety
/// `ctx` is a live, exact Context that is not entered and nobody else references (new, or the
/// spare), and [`CONTEXT_LAYOUT_OK`] is set.
unsafe fn set_vars<'py>(ctx: &Bound<'py, PyAny>, vars: Py<PyAny>) -> Bound<'py, PyAny> {
    // SAFETY: per the caller's guarantee, the field is the Context's variables, never null;
    // the Context owned a reference to the old ones, which passes to the returned Bound.
    unsafe {
        let layout = ctx.as_ptr().cast::<ContextLayout>();
        let old = (*layout).ctx_vars;
        (*layout).ctx_vars = vars.into_ptr();
        Bound::from_owned_ptr(ctx.py(), old)
    }
}

/// A Context holding `vars` (from [`ContextSnapshot::Vars`]): what `copy_context()` would have
/// returned when the snapshot was taken. The spare Context is used if there is one.
pub fn context_from_vars(py: Python<'_>, vars: Py<PyAny>) -> PyResult<Py<PyAny>> {
    let spare = CONTEXT_POOL.lock(py).spare.take();
    let ctx = match spare {
        Some(c) => c.into_bound(py),
        None => new_context(py)?,
    };
    // SAFETY: `ctx` is the spare (referenced only by the pool, not entered: see
    // recycle_context) or new; a Vars snapshot only exists once the layout is confirmed.
    let old = unsafe { set_vars(&ctx, vars) };
    drop(old);
    Ok(ctx.unbind())
}

/// Whether `ctx` is a Context only its maker has seen: exact, with the confirmed layout, not
/// entered, without weak references, and referenced exactly `holders` times (the maker's own
/// references).
fn unseen_context(ctx: &Bound<'_, PyAny>, holders: isize) -> bool {
    if !CONTEXT_LAYOUT_OK.load(std::sync::atomic::Ordering::Relaxed)
        || refcount(ctx) != holders
        || !is_exact_context(ctx)
    {
        return false;
    }
    // SAFETY: an exact Context with the confirmed layout.
    unsafe {
        let layout = ctx.as_ptr().cast::<ContextLayout>();
        (*layout).ctx_entered == 0 && (*layout).ctx_weakreflist.is_null()
    }
}

/// Takes back a Context made by [`context_from_vars`] if nobody but its maker saw it: `lent` is
/// an exact Context, not entered, without weak references, referenced exactly `holders` times
/// (the maker's own references). Its variables are then moved out and returned, and it is
/// emptied and kept as the spare (if there is none). The caller drops its other references to
/// it next, without running Python code in between. Otherwise None: someone else took the
/// Context, whose identity then matters.
pub fn take_back_context(lent: Bound<'_, PyAny>, holders: isize) -> Option<Py<PyAny>> {
    let py = lent.py();
    if !unseen_context(&lent, holders) {
        return None;
    }
    let mut pool = CONTEXT_POOL.lock(py);
    let empty = pool.empty_vars.as_ref()?.clone_ref(py);
    // SAFETY: referenced only by its maker (checked above), not entered, an exact Context with
    // the confirmed layout. The old variables' reference passes to the caller.
    let vars = unsafe { set_vars(&lent, empty) };
    if pool.spare.is_none() {
        pool.spare = Some(lent.unbind());
    }
    Some(vars.unbind())
}

/// Takes back a Context made by [`ContextSnapshot::into_context`] once its callback has run:
/// if nothing else references it (no reference, no weak reference) and it is not entered, it
/// is emptied and kept as the spare for the next snapshot. Nobody can tell it was reused.
pub fn recycle_context(ctx: Bound<'_, PyAny>) {
    let py = ctx.py();
    if !unseen_context(&ctx, 1) {
        return;
    }
    let old = {
        let mut pool = CONTEXT_POOL.lock(py);
        if pool.spare.is_some() {
            return;
        }
        let Some(empty) = pool.empty_vars.as_ref().map(|e| e.clone_ref(py)) else {
            return;
        };
        // SAFETY: referenced only by `ctx` (refcount 1), not entered, an exact Context with
        // the confirmed layout.
        let old = unsafe { set_vars(&ctx, empty) };
        pool.spare = Some(ctx.unbind());
        old
    };
    // Its variables are released now, not when it is next used, and after the pool is let go
    // (releasing them may run a finalizer, which may schedule and run callbacks).
    drop(old);
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
    if !is_exact_context(context) {
        // Not a Context: do what asyncio's Handle._run does, `context.run(callable, *args)`,
        // so the error (or a duck-typed context's behaviour) is asyncio's.
        let mut call_args = Vec::with_capacity(args.len() + 1);
        call_args.push(callable.clone());
        call_args.extend(args.iter());
        return context.call_method1(pyo3::intern!(py, "run"), PyTuple::new(py, call_args)?);
    }
    // SAFETY: `context` is a live object (borrowed for the call); with the GIL held,
    // PyContext_Enter either enters it or fails with an exception set (e.g. not a Context).
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = call_with_tuple(callable, args);
    // SAFETY: we entered `context` above on this thread, so exiting it is valid; the pending
    // result (or exception) of the call is kept in `result`, and PyContext_Exit does not touch
    // the error indicator when it succeeds.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// `callable(*args)` through vectorcall, the tuple's items passed in place: what
/// `PyObject_Call(callable, args, NULL)` ends in for a vectorcall callable (a Python function, a
/// bound method, a builtin), without `_PyObject_Call`'s dispatch and `_PyVectorcall_Call`'s
/// unpacking on the way (PyO3's `call1` with a tuple goes through `PyObject_Call`).
#[inline]
pub fn call_with_tuple<'py>(
    callable: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `args` is a live tuple borrowed for the call, so its item array (`ob_item`, of
    // PyTuple_GET_SIZE borrowed pointers) stays valid while the callee runs; vectorcall does
    // not keep the array. The result is a new reference or NULL with an exception set.
    unsafe {
        let tuple = args.as_ptr();
        let items = (*tuple.cast::<ffi::PyTupleObject>()).ob_item.as_ptr();
        Bound::from_owned_ptr_or_err(
            callable.py(),
            ffi::PyObject_Vectorcall(
                callable.as_ptr(),
                items,
                ffi::PyTuple_GET_SIZE(tuple) as usize,
                std::ptr::null_mut(),
            ),
        )
    }
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

/// Takes `obj` out of the cyclic garbage collector's lists (`PyObject_GC_UnTrack`): it will not
/// be traversed by collections. Only for objects that can never be part of a reference cycle,
/// or that the caller keeps alive and tracks again ([`gc_track`]) before letting go of them.
pub fn gc_untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live object of a GC type (every #[pyclass] is); untracking a tracked
    // object is allowed at any time, and CPython's untrack ignores objects already untracked.
    unsafe {
        if ffi::PyType_IS_GC(ffi::Py_TYPE(obj.as_ptr())) != 0 {
            ffi::PyObject_GC_UnTrack(obj.as_ptr().cast());
        }
    }
}

/// Takes a new argument tuple that a timer handle will own alone off the collector's lists
/// (see `handle::HandleState::args`); the shared empty tuple is left as it is. The partner of
/// `handle::share_args`.
pub fn untrack_new_args(args: &Bound<'_, PyTuple>) {
    if !args.is_empty() {
        gc_untrack(args.as_any());
    }
}

/// Whether the cyclic garbage collector tracks `obj` (`gc.is_tracked`).
pub fn is_gc_tracked(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is a live object; the tracked bit is only read for a GC type.
    unsafe {
        let p = obj.as_ptr();
        ffi::PyType_IS_GC(ffi::Py_TYPE(p)) != 0 && ffi::PyObject_GC_IsTracked(p) != 0
    }
}

/// Puts `obj` (back) into the cyclic garbage collector's lists if it is not there: for an
/// object allocated untracked (`install_uncounted_alloc`).
pub fn gc_track(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live, fully initialised object; tracking is only done for a GC type
    // and only when the object is not tracked already (tracking twice is an error).
    unsafe {
        let p = obj.as_ptr();
        if ffi::PyType_IS_GC(ffi::Py_TYPE(p)) != 0 && ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
    }
}

/// Runs `f` with a Python token inside a `__traverse__` implementation, where PyO3 hands out
/// none although the collecting thread holds the GIL. `f` may only read Rust-side state
/// (borrow flags, reference counts, stored pointers): no Python API call, no allocation of
/// Python objects.
pub fn in_traverse<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    // SAFETY: tp_traverse is only called by CPython's garbage collector, which runs on a thread
    // attached to the interpreter; the token is used only for borrow and refcount reads.
    let py = unsafe { Python::assume_attached() };
    f(py)
}

/// True if `obj` is exactly a `contextvars.Context`.
pub fn is_exact_context(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is a live object; PyContext_CheckExact only compares its type pointer.
    unsafe { ffi::PyContext_CheckExact(obj.as_ptr()) != 0 }
}

/// The error `PyErr_SetObject(type(exc), exc)` raises, as C code raises an exception instance:
/// when it reaches Python it is chained to the exception being handled there (`__context__`),
/// as asyncio's C Future's errors are. (`PyErr::from_value` would restore it unchained.)
pub fn raise_instance(exc: Bound<'_, PyAny>) -> PyErr {
    PyErr::from_type(exc.get_type(), exc.unbind())
}

/// What `raise exc from cause` does while `cause` is being handled: `exc.__cause__` and
/// `exc.__context__` become `cause` (and `__suppress_context__` True). PyO3 raises errors with
/// `PyErr_Restore`, which chains no context, so native code sets it.
pub fn set_cause_and_context(exc: &Bound<'_, PyAny>, cause: &Bound<'_, PyAny>) -> PyResult<()> {
    if !cause.is_none() && !cause.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "exception causes must derive from BaseException",
        ));
    }
    // SAFETY: `exc` is a live exception instance (checked by the caller's construction) and
    // `cause` a live exception or None. PyException_SetCause/SetContext steal a reference each
    // (NULL clears); the cause setter also sets __suppress_context__.
    unsafe {
        if cause.is_none() {
            ffi::PyException_SetCause(exc.as_ptr(), std::ptr::null_mut());
        } else {
            ffi::PyException_SetCause(exc.as_ptr(), cause.clone().into_ptr());
            ffi::PyException_SetContext(exc.as_ptr(), cause.clone().into_ptr());
        }
    }
    Ok(())
}

/// `obj`'s reference count (`Py_REFCNT`).
pub fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `obj` is a live object; Py_REFCNT reads its reference count field.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// The collector's header in front of every GC object (`PyGC_Head`: two words on 3.11).
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
const GC_HEAD_SIZE: usize = 2 * std::mem::size_of::<usize>();

/// Gives `T`'s type (a `#[pyclass]`, so a GC type) an allocator whose instances do not count
/// toward the collector's generation-0 threshold, as objects from CPython's own free lists do
/// not: a handle or await iterator per callback, or a Task per task, would otherwise start a
/// collection every few hundred of them. The objects are still GC objects; only the count that
/// triggers collections skips them, both when they are made and when they are freed. With
/// `TRACKED` they start tracked, as `PyType_GenericAlloc`'s do; without, untracked (the code
/// tracks those that need it). Exact instances of `T` only: subclasses allocate as usual.
/// Python 3.11 only (where `PyType_GenericAlloc`'s layout is the one mirrored here); other
/// versions keep PyO3's allocation.
pub fn install_uncounted_alloc<T: pyo3::PyTypeInfo, const TRACKED: bool>(py: Python<'_>) {
    #[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
    // SAFETY: the type object is PyO3's heap type for T, not instantiated yet; replacing its
    // tp_alloc/tp_free pair together (then PyType_Modified) keeps every object freed by the
    // function that matches its allocation. Types with a managed dict (an extra pre-header)
    // or items are left alone.
    unsafe {
        let tp = T::type_object_raw(py);
        if (*tp).tp_flags & ffi::Py_TPFLAGS_MANAGED_DICT == 0 && (*tp).tp_itemsize == 0 {
            (*tp).tp_alloc = Some(uncounted_alloc::<T, TRACKED>);
            (*tp).tp_free = Some(uncounted_free::<T>);
            ffi::PyType_Modified(tp);
        }
    }
    #[cfg(any(Py_3_12, Py_GIL_DISABLED))]
    let _ = py;
}

/// The garbage collector's visit function and its argument, as a `tp_traverse` receives them.
#[derive(Clone, Copy)]
pub struct GcVisit {
    visit: ffi::visitproc,
    arg: *mut std::ffi::c_void,
}

/// What a traverse reports references to: the collector's raw visit ([`GcVisit`]) or PyO3's
/// `PyVisit`, so one field list serves both kinds of `tp_traverse`.
pub trait Visitor {
    type Error;
    /// Visits `obj` (nothing for None).
    fn visit<T>(&self, obj: Option<&Py<T>>) -> Result<(), Self::Error>;
}

impl Visitor for pyo3::PyVisit<'_> {
    type Error = pyo3::PyTraverseError;
    #[inline]
    fn visit<T>(&self, obj: Option<&Py<T>>) -> Result<(), Self::Error> {
        self.call(obj)
    }
}

impl Visitor for GcVisit {
    type Error = std::ffi::c_int;
    /// An error is the visit function's non-zero result.
    #[inline]
    fn visit<T>(&self, obj: Option<&Py<T>>) -> Result<(), std::ffi::c_int> {
        let Some(obj) = obj else {
            return Ok(());
        };
        // SAFETY: the collector called our tp_traverse with this visit function and argument,
        // and `obj` is a live object the traversed object holds a reference to.
        let r = unsafe { (self.visit)(obj.as_ptr(), self.arg) };
        if r == 0 {
            Ok(())
        } else {
            Err(r)
        }
    }
}

/// Visits a handle's argument tuple. A tuple the collector does not track (given untracked,
/// `FastArgs::untracked_tuple_from`, or untracked by the collector itself) would hide its items'
/// references from the collector, so while the holder owns it alone its items are reported as
/// the holder's own references; one shared with anyone else is not visited (what it holds then
/// looks referenced from outside: kept, never freed early).
pub fn visit_args<V: Visitor>(
    py: Python<'_>,
    tuple: Option<&Py<PyTuple>>,
    visit: &V,
) -> Result<(), V::Error> {
    let Some(tuple) = tuple else {
        return Ok(());
    };
    let p = tuple.as_ptr();
    // SAFETY: `p` is a live tuple (held by `tuple`); reading its tracked bit and refcount is
    // allowed with the GIL held, which the collector holds while it traverses.
    if unsafe { ffi::PyObject_GC_IsTracked(p) } != 0 {
        return visit.visit(Some(tuple));
    }
    if refcount(tuple.bind(py).as_any()) != 1 {
        return Ok(());
    }
    // SAFETY: a tuple's items are live, non-NULL objects it holds a reference to; each is
    // wrapped without a new reference and never dropped (ManuallyDrop), only visited.
    unsafe {
        for i in 0..ffi::PyTuple_GET_SIZE(p) {
            let item = ffi::PyTuple_GET_ITEM(p, i);
            let item = std::mem::ManuallyDrop::new(Bound::from_owned_ptr(py, item).unbind());
            visit.visit(Some(&*item))?;
        }
    }
    Ok(())
}

/// A class whose `tp_traverse` is [`raw_traverse`]: it reports its references to a [`GcVisit`].
pub trait RawTraverse: pyo3::PyClass {
    /// Reports the instance's own references (`py`: the collector holds the GIL).
    fn traverse_raw(&self, py: Python<'_>, visit: &GcVisit) -> Result<(), std::ffi::c_int>;
    /// Where the static base's `tp_traverse` finds the object pointers it visits besides the
    /// instance dict (byte offsets into the object), if known: while they are all NULL (the
    /// base's state unused, as ferroloop leaves it) the dict is visited directly instead of
    /// calling the base's traverse. None: the base's traverse is always called.
    fn base_pointer_offsets() -> Option<&'static [usize]> {
        None
    }
}

/// The pointer-sized word at byte `offset` of `obj`, for checking a C layout (`offset` and
/// `offset + 8` within the object's basic size, else None).
pub fn object_word(obj: &Bound<'_, PyAny>, offset: usize) -> Option<usize> {
    let word = std::mem::size_of::<usize>();
    // SAFETY: the type's tp_basicsize bytes from the object's address are its memory, alive
    // while `obj` is; the read is bounds-checked against it and unaligned-safe.
    unsafe {
        let size = usize::try_from((*ffi::Py_TYPE(obj.as_ptr())).tp_basicsize).ok()?;
        if offset.checked_add(word)? > size {
            return None;
        }
        Some(std::ptr::read_unaligned(
            obj.as_ptr().cast::<u8>().add(offset).cast::<usize>(),
        ))
    }
}

/// Gives `T`'s type a `tp_traverse` without PyO3's wrapper (its per-call costs: a thread-local
/// flag set and restored, a walk of the type chain to find the base's traverse, an unwind
/// guard). Only where the base is a static type (asyncio's C Future and Task before 3.12, or
/// `object`): then this type visits the instance's type object itself, as PyO3's does.
pub fn install_raw_traverse<T: RawTraverse>(py: Python<'_>) {
    // SAFETY: the type object is PyO3's heap type for T, ready, with no instance traversed yet
    // by our slot; tp_base is set on a ready type. Replacing tp_traverse then PyType_Modified
    // is what a type's creator may do before instances exist.
    unsafe {
        let tp = T::type_object_raw(py);
        let base = (*tp).tp_base;
        if base.is_null() || ffi::PyType_HasFeature(base, ffi::Py_TPFLAGS_HEAPTYPE) != 0 {
            return;
        }
        (*tp).tp_traverse = Some(raw_traverse::<T>);
        ffi::PyType_Modified(tp);
    }
}

/// `tp_traverse` for `T` (see [`install_raw_traverse`]): the instance's type (a heap type),
/// the static base's part (asyncio's instance dict), then T's own references. An instance that
/// is mutably borrowed (the collector started inside a method of it) reports none of its own:
/// they then count as external, which keeps them alive, never frees them early.
unsafe extern "C" fn raw_traverse<T: RawTraverse>(
    slf: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: called by the collector with the GIL held, `slf` a live instance of T or of a
    // Python subclass (whose subtype_traverse calls us), `visit`/`arg` valid for the call.
    // Visiting the type object of a heap-type instance is the instance's job when no heap base
    // does it (the base here is static). Nothing here calls into Python or allocates, and
    // nothing can panic: the borrow is tried, not forced.
    unsafe {
        let r = visit(ffi::Py_TYPE(slf).cast(), arg);
        if r != 0 {
            return r;
        }
        let py = Python::assume_attached();
        let base = (*T::type_object_raw(py)).tp_base;
        // `base_pointer_offsets` are within the static base's basic size, which every instance
        // of T has (checked with the layouts at import); the dict offset is the type's own.
        let base_unused = T::base_pointer_offsets().is_some_and(|offsets| {
            offsets
                .iter()
                .all(|&off| (*slf.cast::<u8>().add(off).cast::<*mut ffi::PyObject>()).is_null())
        });
        if base_unused {
            let dict_offset = (*ffi::Py_TYPE(slf)).tp_dictoffset;
            if dict_offset > 0 {
                let dict = *slf
                    .cast::<u8>()
                    .offset(dict_offset)
                    .cast::<*mut ffi::PyObject>();
                if !dict.is_null() {
                    let r = visit(dict, arg);
                    if r != 0 {
                        return r;
                    }
                }
            }
        } else if let Some(base_traverse) = (*base).tp_traverse {
            let r = base_traverse(slf, visit, arg);
            if r != 0 {
                return r;
            }
        }
        let obj = pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<T>();
        match obj.try_borrow() {
            Ok(this) => match this.traverse_raw(py, &GcVisit { visit, arg }) {
                Ok(()) => 0,
                Err(r) => r,
            },
            Err(_) => 0,
        }
    }
}

/// `PyType_GenericAlloc` without `_PyObject_GC_Link`'s count (and tracking only if `TRACKED`).
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
unsafe extern "C" fn uncounted_alloc<T: pyo3::PyTypeInfo, const TRACKED: bool>(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: called as tp_alloc with the GIL held. For T's exact type the memory is the GC
    // header (zeroed: untracked) followed by the zeroed object, as PyType_GenericAlloc lays it
    // out; PyObject_Init sets the type (and takes a reference to a heap type) and the count.
    // Tracking the zeroed object is what PyType_GenericAlloc does too: the type's traverse
    // must accept an instance whose fields are all zero.
    unsafe {
        let py = Python::assume_attached();
        if nitems != 0 || !std::ptr::eq(subtype, T::type_object_raw(py)) {
            return ffi::PyType_GenericAlloc(subtype, nitems);
        }
        let size = GC_HEAD_SIZE + (*subtype).tp_basicsize as usize;
        let mem = free_blocks_take(py, size);
        if mem.is_null() {
            return ffi::PyErr_NoMemory();
        }
        std::ptr::write_bytes(mem, 0, size);
        let obj = mem.add(GC_HEAD_SIZE).cast::<ffi::PyObject>();
        ffi::PyObject_Init(obj, subtype);
        if TRACKED {
            ffi::PyObject_GC_Track(obj.cast());
        }
        obj
    }
}

/// `PyObject_GC_Del` without the count: the partner of [`uncounted_alloc`].
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
unsafe extern "C" fn uncounted_free<T: pyo3::PyTypeInfo>(obj: *mut std::ffi::c_void) {
    // SAFETY: called as tp_free on an object of T's type (or of a subclass that inherited the
    // slot: allocated by PyType_GenericAlloc, so it goes to PyObject_GC_Del). The type pointer
    // is still valid here (deallocs drop their type reference after tp_free).
    unsafe {
        let py = Python::assume_attached();
        let op = obj.cast::<ffi::PyObject>();
        if !std::ptr::eq(ffi::Py_TYPE(op), T::type_object_raw(py)) {
            ffi::PyObject_GC_Del(obj);
            return;
        }
        if ffi::PyObject_GC_IsTracked(op) != 0 {
            ffi::PyObject_GC_UnTrack(obj);
        }
        let size = GC_HEAD_SIZE + (*ffi::Py_TYPE(op)).tp_basicsize as usize;
        free_blocks_give(py, obj.cast::<u8>().sub(GC_HEAD_SIZE), size);
    }
}

/// Granularity of the free block classes (pymalloc's alignment on 64-bit builds).
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
const FREE_BLOCK_QUANTUM: usize = 16;
/// Block classes kept: blocks of up to `FREE_BLOCK_CLASSES * FREE_BLOCK_QUANTUM` bytes.
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
const FREE_BLOCK_CLASSES: usize = 48;
/// Freed blocks kept per class; beyond that they go back to pymalloc.
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
const FREE_BLOCKS_PER_CLASS: usize = 128;

/// Memory of freed uncounted objects, kept for the next allocation of the same size class:
/// what CPython's free lists do for its own hot types (`_asyncio`'s FutureIter, tuples,
/// floats), shared here by every type `install_uncounted_alloc` serves. A handle, a future and
/// its await iterator per callback then cost no pymalloc call.
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
struct FreeBlocks {
    blocks: [[*mut u8; FREE_BLOCKS_PER_CLASS]; FREE_BLOCK_CLASSES],
    counts: [usize; FREE_BLOCK_CLASSES],
}

// SAFETY: the blocks are plain memory owned by the list, reached only with the GIL held.
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
unsafe impl Send for FreeBlocks {}

#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
static FREE_BLOCKS: crate::gil_cell::GilCell<FreeBlocks> =
    crate::gil_cell::GilCell::new(FreeBlocks {
        blocks: [[std::ptr::null_mut(); FREE_BLOCKS_PER_CLASS]; FREE_BLOCK_CLASSES],
        counts: [0; FREE_BLOCK_CLASSES],
    });

/// A block of at least `size` bytes (uninitialised), from the free blocks or from pymalloc;
/// null when out of memory. Sizes are rounded up to the class size, so any block of a class
/// fits every request of that class.
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
fn free_blocks_take(py: Python<'_>, size: usize) -> *mut u8 {
    let class = size.div_ceil(FREE_BLOCK_QUANTUM);
    if class < FREE_BLOCK_CLASSES {
        if let Some(mut free) = FREE_BLOCKS.try_lock(py) {
            if free.counts[class] > 0 {
                free.counts[class] -= 1;
                let n = free.counts[class];
                return free.blocks[class][n];
            }
        }
    }
    // SAFETY: plain pymalloc allocation with the GIL held (the caller is a tp_alloc).
    unsafe { ffi::PyObject_Malloc(class * FREE_BLOCK_QUANTUM).cast() }
}

/// Returns a block from [`free_blocks_take`] for `size` bytes: kept for reuse, or freed.
#[cfg(not(any(Py_3_12, Py_GIL_DISABLED)))]
fn free_blocks_give(py: Python<'_>, block: *mut u8, size: usize) {
    let class = size.div_ceil(FREE_BLOCK_QUANTUM);
    if class < FREE_BLOCK_CLASSES {
        if let Some(mut free) = FREE_BLOCKS.try_lock(py) {
            let n = free.counts[class];
            if n < FREE_BLOCKS_PER_CLASS {
                free.blocks[class][n] = block;
                free.counts[class] = n + 1;
                return;
            }
        }
    }
    // SAFETY: `block` came from PyObject_Malloc (through free_blocks_take) and is no longer
    // used by anyone.
    unsafe { ffi::PyObject_Free(block.cast()) }
}

/// A Python type whose instances have a finalizer written in Rust (PyO3 has no `__del__`):
/// `tp_finalize` runs it, and the type's dealloc calls the finalizer first, as CPython's own
/// types with finalizers do.
pub trait Finalized {
    /// The finalizer; an error is reported as unraisable.
    fn finalize(obj: &Bound<'_, PyAny>) -> PyResult<()>;
    /// Where the type's original dealloc function is kept.
    fn original_dealloc() -> &'static std::sync::OnceLock<usize>;
    /// Last work on an instance about to be freed (its finalizer has run and did not
    /// resurrect it), before the original dealloc. It must not allocate a garbage-collected
    /// object, nor keep `obj`. Called only when `HAS_BEFORE_DEALLOC` is true (not on
    /// free-threaded builds).
    fn before_dealloc(_obj: &Bound<'_, PyAny>) {}
    /// Whether `before_dealloc` does anything (the types that don't skip its refcount dance).
    const HAS_BEFORE_DEALLOC: bool = false;
}

unsafe extern "C" fn finalize_trampoline<T: Finalized>(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_finalize with the GIL held and `obj` alive; the current
    // exception is saved and restored around the finalizer, as tp_finalize must.
    unsafe {
        let py = Python::assume_attached();
        let (mut ptype, mut pvalue, mut ptb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        ffi::PyErr_Fetch(&mut ptype, &mut pvalue, &mut ptb);
        let bound = Bound::from_borrowed_ptr(py, obj);
        if let Err(err) = T::finalize(&bound) {
            err.write_unraisable(py, Some(&bound));
        }
        drop(bound);
        ffi::PyErr_Restore(ptype, pvalue, ptb);
    }
}

/// `Py_SET_REFCNT`, which pyo3-ffi does not offer. Caller: the GIL is held and `obj` is an
/// object whose count may be set (not immortal).
#[cfg(not(Py_GIL_DISABLED))]
unsafe fn set_refcnt(obj: *mut ffi::PyObject, refcnt: ffi::Py_ssize_t) {
    // SAFETY: per the caller's contract; the field is the plain count on 3.11 and the count
    // member of the union from 3.12 on (free-threaded builds, with split counts, never call it).
    unsafe {
        #[cfg(not(Py_3_12))]
        {
            (*obj).ob_refcnt = refcnt;
        }
        #[cfg(Py_3_12)]
        {
            (*obj).ob_refcnt.ob_refcnt = refcnt;
        }
    }
}

unsafe extern "C" fn dealloc_trampoline<T: Finalized>(obj: *mut ffi::PyObject) {
    // SAFETY: called as tp_dealloc (refcount zero, GIL held). PyObject_CallFinalizerFromDealloc
    // runs tp_finalize once and reports resurrection (< 0), in which case the object lives on.
    // The before-dealloc hook runs on a borrowed reference made while the count is one, and
    // the count is put back by hand (no second dealloc). Then the original dealloc, stored by
    // `install_finalizer` from the same type's slot, frees it.
    unsafe {
        if ffi::PyObject_CallFinalizerFromDealloc(obj) < 0 {
            return;
        }
        // The hook sees the object with one reference, as a finalizer does
        // (PyObject_CallFinalizerFromDealloc's temporary resurrection); a hook that kept it
        // resurrects it, and the dealloc stops there.
        #[cfg(not(Py_GIL_DISABLED))]
        if T::HAS_BEFORE_DEALLOC {
            set_refcnt(obj, 1);
            {
                let py = Python::assume_attached();
                let bound = Bound::from_borrowed_ptr(py, obj);
                T::before_dealloc(&bound);
            }
            let refcnt = ffi::Py_REFCNT(obj) - 1;
            set_refcnt(obj, refcnt);
            if refcnt != 0 {
                return;
            }
        }
        if let Some(&orig) = T::original_dealloc().get() {
            let orig: unsafe extern "C" fn(*mut ffi::PyObject) = std::mem::transmute(orig);
            orig(obj);
        }
    }
}

/// Gives the type `ty` (a `#[pyclass]` type object) the finalizer `T::finalize`.
pub fn install_finalizer<T: Finalized>(ty: &Bound<'_, pyo3::types::PyType>) {
    // SAFETY: `ty` is a heap type object created by PyO3 and not yet instantiated; its slots
    // may be changed, after which PyType_Modified invalidates method caches. The original
    // dealloc is stored before the slot is replaced, so the trampoline always finds it.
    unsafe {
        let tp = ty.as_type_ptr();
        if let Some(dealloc) = (*tp).tp_dealloc {
            let _ = T::original_dealloc().set(dealloc as usize);
        }
        (*tp).tp_finalize = Some(finalize_trampoline::<T>);
        (*tp).tp_dealloc = Some(dealloc_trampoline::<T>);
        ffi::PyType_Modified(tp);
    }
}

/// Gives a subclass made in Python the finalizer of `T` (CPython copies `tp_finalize` to such
/// subclasses only from bases flagged in a way PyO3 types are not). A subclass that defines its
/// own `__del__` keeps it.
pub fn inherit_finalizer<T: Finalized>(subclass: &Bound<'_, pyo3::types::PyType>) {
    // SAFETY: `subclass` is a fully created heap type (called from __init_subclass__); setting
    // an empty tp_finalize slot and then PyType_Modified is how slots are changed after creation.
    unsafe {
        let tp = subclass.as_type_ptr();
        if (*tp).tp_finalize.is_none() {
            (*tp).tp_finalize = Some(finalize_trampoline::<T>);
            ffi::PyType_Modified(tp);
        }
    }
}

/// What one `send` into a coroutine gave.
pub enum SendResult<'py> {
    /// It suspended, yielding this value.
    Yielded(Bound<'py, PyAny>),
    /// It finished, returning this value.
    Returned(Bound<'py, PyAny>),
}

/// `coro.send(None)` through `PyIter_Send`: no StopIteration object on return.
pub fn iter_send_none<'py>(coro: &Bound<'py, PyAny>) -> PyResult<SendResult<'py>> {
    // SAFETY: Py_None is immortal in effect (never freed while the interpreter runs).
    iter_send(coro, unsafe { ffi::Py_None() })
}

/// `iter.send(value)` as `yield from`/`await` does it (`PyIter_Send`: `am_send`, else
/// `__next__` for None, else the `send` method), without a StopIteration object on return.
pub fn iter_send_value<'py>(
    iter: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> PyResult<SendResult<'py>> {
    iter_send(iter, value.as_ptr())
}

fn iter_send<'py>(
    coro: &Bound<'py, PyAny>,
    value: *mut ffi::PyObject,
) -> PyResult<SendResult<'py>> {
    let py = coro.py();
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: `coro` and `value` are alive (borrowed for the call); PyIter_Send stores a new
    // reference in `result` for PYGEN_RETURN and PYGEN_NEXT, and sets an exception for
    // PYGEN_ERROR.
    let status = unsafe { ffi::PyIter_Send(coro.as_ptr(), value, &mut result) };
    match status {
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: a new reference per the contract above.
            Ok(SendResult::Returned(unsafe {
                Bound::from_owned_ptr(py, result)
            }))
        }
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new reference per the contract above.
            Ok(SendResult::Yielded(unsafe {
                Bound::from_owned_ptr(py, result)
            }))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

/// True if `obj` is exactly a generator object.
pub fn is_exact_generator(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is alive; PyGen_CheckExact compares its type pointer.
    unsafe { ffi::PyGen_CheckExact(obj.as_ptr()) != 0 }
}

/// True if `obj` is an iterator (its type has `__next__`: `PyIter_Check`).
pub fn is_iterator(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is alive; PyIter_Check reads its type's tp_iternext slot.
    unsafe { ffi::PyIter_Check(obj.as_ptr()) != 0 }
}

/// A type's `tp_name` (what CPython's own error messages show: `module.Name` for static
/// types, the bare name for classes made in Python).
pub fn type_name(ty: &Bound<'_, pyo3::types::PyType>) -> String {
    // SAFETY: `ty` is a live type object; tp_name is a NUL-terminated string it owns.
    unsafe {
        let name = (*ty.as_type_ptr()).tp_name;
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// `type(obj).__await__(obj)` through the `am_await` slot; None if the type has none.
pub fn call_am_await<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    // SAFETY: `obj` is alive and its type object outlives the call; am_await is called with
    // the object as CPython calls it, returning a new reference or NULL with an exception set.
    unsafe {
        let tp = ffi::Py_TYPE(obj.as_ptr());
        let methods = (*tp).tp_as_async;
        if methods.is_null() {
            return Ok(None);
        }
        let Some(am_await) = (*methods).am_await else {
            return Ok(None);
        };
        Bound::from_owned_ptr_or_err(obj.py(), am_await(obj.as_ptr())).map(Some)
    }
}

/// The getters of `coroutine.cr_await` and `generator.gi_yieldfrom`, taken once from the two
/// types' getset tables (None where a table lacks the name).
struct DelegateGetters {
    coroutine: Option<ffi::getter>,
    generator: Option<ffi::getter>,
}

static DELEGATE_GETTERS: std::sync::OnceLock<DelegateGetters> = std::sync::OnceLock::new();

/// The getter named `name` in static type `tp`'s getset table.
fn find_getter(tp: *mut ffi::PyTypeObject, name: &std::ffi::CStr) -> Option<ffi::getter> {
    // SAFETY: `tp` is one of CPython's static types (never freed); its tp_getset table, when
    // present, ends with an entry whose name is NULL, and every name before it is a C string.
    unsafe {
        let mut def = (*tp).tp_getset;
        if def.is_null() {
            return None;
        }
        while !(*def).name.is_null() {
            if std::ffi::CStr::from_ptr((*def).name) == name {
                return (*def).get;
            }
            def = def.add(1);
        }
        None
    }
}

/// What an exact coroutine or generator object is suspended awaiting (`cr_await`, or
/// `gi_yieldfrom` for a generator such as a `types.coroutine` one): None for any other object,
/// and when it awaits nothing (not started, at a bare `yield`, running or finished).
pub fn awaited_by<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let getters = DELEGATE_GETTERS.get_or_init(|| DelegateGetters {
        coroutine: find_getter(&raw mut ffi::PyCoro_Type, c"cr_await"),
        generator: find_getter(&raw mut ffi::PyGen_Type, c"gi_yieldfrom"),
    });
    let p = obj.as_ptr();
    // SAFETY: `obj` is alive; the type checks compare type pointers, and the getter is the one
    // CPython's own attribute lookup would call for that exact type: it reads the suspended
    // frame and returns a new reference (None when nothing is awaited), or NULL with an
    // exception set, which is cleared here (the getters of 3.11 never fail).
    unsafe {
        let getter = if ffi::PyCoro_CheckExact(p) != 0 {
            getters.coroutine?
        } else if ffi::PyGen_CheckExact(p) != 0 {
            getters.generator?
        } else {
            return None;
        };
        let awaited = getter(p, std::ptr::null_mut());
        if awaited.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let awaited = Bound::from_owned_ptr(obj.py(), awaited);
        (!awaited.is_none()).then_some(awaited)
    }
}

/// True if `obj` is exactly a native coroutine object (`async def` result).
pub fn is_native_coroutine(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is alive; PyCoro_CheckExact compares its type pointer.
    unsafe { ffi::PyCoro_CheckExact(obj.as_ptr()) != 0 }
}

/// Runs `f` inside `context` (a `contextvars.Context`), as `context.run` would.
pub fn with_context<R>(context: &Bound<'_, PyAny>, f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    let py = context.py();
    if !is_exact_context(context) {
        return Err(PyTypeError::new_err("an instance of Context was expected"));
    }
    // SAFETY: `context` is an alive Context; PyContext_Enter fails with an exception set if
    // it is already entered.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: entered above on this thread.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// A type whose instances implement `am_send` (the `PyIter_Send` slot PyO3 does not offer):
/// awaiting them returns a value without raising StopIteration.
pub trait AmSend {
    fn am_send<'py>(iter: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>)
        -> PyResult<SendResult<'py>>;
}

unsafe extern "C" fn am_send_trampoline<T: AmSend>(
    iter: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    presult: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls am_send with the GIL held, `iter` and `arg` alive (borrowed) and
    // `presult` writable. We store a new reference for NEXT/RETURN and NULL (with an exception
    // set) for ERROR. A panic is caught here: unwinding out of an extern "C" function would
    // abort, and no panic may reach Python as anything but an exception.
    unsafe {
        let py = Python::assume_attached();
        let iter = Bound::from_borrowed_ptr(py, iter);
        let arg = Bound::from_borrowed_ptr(py, arg);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::am_send(&iter, &arg)));
        match outcome {
            Ok(Ok(SendResult::Yielded(v))) => {
                *presult = v.into_ptr();
                ffi::PySendResult::PYGEN_NEXT
            }
            Ok(Ok(SendResult::Returned(v))) => {
                *presult = v.into_ptr();
                ffi::PySendResult::PYGEN_RETURN
            }
            Ok(Err(err)) => {
                err.restore(py);
                *presult = std::ptr::null_mut();
                ffi::PySendResult::PYGEN_ERROR
            }
            Err(_) => {
                pyo3::exceptions::PySystemError::new_err(
                    "ferroloop: internal error (panic) in am_send",
                )
                .restore(py);
                *presult = std::ptr::null_mut();
                ffi::PySendResult::PYGEN_ERROR
            }
        }
    }
}

/// Gives the type `ty` (a `#[pyclass]` type object) the `am_send` slot of `T`.
pub fn install_am_send<T: AmSend>(ty: &Bound<'_, pyo3::types::PyType>) {
    // SAFETY: `ty` is a heap type created by PyO3, not yet instantiated. Its async-methods table
    // (if any) is copied into a new table that lives for the rest of the process (leaked on
    // purpose: type slots must outlive the type), with am_send set; PyType_Modified follows.
    unsafe {
        let tp = ty.as_type_ptr();
        let mut methods = if (*tp).tp_as_async.is_null() {
            ffi::PyAsyncMethods::default()
        } else {
            std::ptr::read((*tp).tp_as_async)
        };
        methods.am_send = Some(am_send_trampoline::<T>);
        (*tp).tp_as_async = Box::leak(Box::new(methods));
        ffi::PyType_Modified(tp);
    }
}

/// True if some weak reference to `obj` exists (its type's weak-reference list is not empty).
pub fn has_weakrefs(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is alive. For a type with weak-reference support, tp_weaklistoffset > 0 is
    // the offset of the object's weak-reference list head (a PyObject* that is NULL when no
    // weak reference exists); other types have none.
    unsafe {
        let offset = (*ffi::Py_TYPE(obj.as_ptr())).tp_weaklistoffset;
        if offset <= 0 {
            return false;
        }
        let slot = (obj.as_ptr() as *const u8).offset(offset) as *const *mut ffi::PyObject;
        !(*slot).is_null()
    }
}

extern "C" {
    /// CPython's `PyInstanceMethod_New` (cpython/classobject.h), not declared by pyo3-ffi.
    fn PyInstanceMethod_New(func: *mut ffi::PyObject) -> *mut ffi::PyObject;
    /// The type of bound methods, `types.MethodType` (cpython/classobject.h).
    static mut PyMethod_Type: ffi::PyTypeObject;
    /// `types.MethodType(func, self)`: a new reference, or NULL with an exception set.
    fn PyMethod_New(func: *mut ffi::PyObject, this: *mut ffi::PyObject) -> *mut ffi::PyObject;
    /// A bound method's `__func__` (borrowed).
    fn PyMethod_Function(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
    /// A bound method's `__self__` (borrowed).
    fn PyMethod_Self(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// The function and instance of `method` if it is exactly a bound method (`types.MethodType`)
/// that nobody can see besides its `holders` references (`Py_REFCNT == holders`) and that has
/// no weak reference: a holder may then keep the two parts instead of the method object
/// (calling `func(this, *args)` is what the method's call does) and make an equal method
/// again when one must be shown.
pub fn unseen_method_parts(
    method: &Bound<'_, PyAny>,
    holders: isize,
) -> Option<(Py<PyAny>, Py<PyAny>)> {
    let p = method.as_ptr();
    // SAFETY: reading the type pointer of a live object; PyMethod_Type is CPython's static
    // type object, only its address is taken.
    let exact = unsafe { ffi::Py_TYPE(p) == std::ptr::addr_of_mut!(PyMethod_Type) };
    if !exact || refcount(method) != holders || has_weakrefs(method) {
        return None;
    }
    let py = method.py();
    // SAFETY: `p` is a live bound method; PyMethod_Function/PyMethod_Self return borrowed,
    // non-NULL references it holds, turned into new references here.
    unsafe {
        Some((
            Bound::from_borrowed_ptr(py, PyMethod_Function(p)).unbind(),
            Bound::from_borrowed_ptr(py, PyMethod_Self(p)).unbind(),
        ))
    }
}

/// `types.MethodType(func, this)`: the bound method [`unseen_method_parts`] took apart.
pub fn bound_method<'py>(
    func: &Bound<'py, PyAny>,
    this: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: both are live (borrowed for the call); PyMethod_New takes its own references and
    // returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(func.py(), PyMethod_New(func.as_ptr(), this.as_ptr())) }
}

/// `instancemethod(func)`: a descriptor that binds any callable (e.g. a Rust function) as a
/// method when stored in a class, as a Python `def` in the class body would be.
pub fn instance_method<'py>(func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = func.py();
    // SAFETY: `func` is alive (borrowed for the call); PyInstanceMethod_New takes a new
    // reference to it and returns a new reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, PyInstanceMethod_New(func.as_ptr())) }
}

// The method trampolines below (MethO, MethNoArgs, MethFastcall) bypass PyO3's, and PyO3
// counts a thread as attached only inside its own entry points: called from Python code with
// no PyO3 entry point further up the stack (outside `run_forever`, say), a `Py` they drop has
// its decref deferred to PyO3's pool until the next PyO3 entry. What they reach lets go of
// objects as `Bound` (a plain decref); tests/test_callback_context.py checks it
// (test_calls_outside_a_running_loop_let_go_at_once).

/// A one-argument method (`METH_O`) written in Rust whose descriptor accepts any instance of a
/// given owner type, not only of the class it is stored in: what lets `ferroloop.Future.
/// set_result(task, ...)` apply Future's method to a ferroloop Task (a sibling class, since
/// both extend asyncio's C classes), as `asyncio.Future.set_result(task, ...)` does.
pub trait MethO {
    const NAME: &'static std::ffi::CStr;
    const DOC: &'static std::ffi::CStr;
    /// A method without arguments (`METH_NOARGS`): `call` then gets None as `arg`.
    const NO_ARGS: bool = false;
    fn call<'py>(slf: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>;
}

/// What a method trampoline hands back to CPython for `outcome`: a new reference, or NULL with
/// the exception set (a caught panic becomes a SystemError). Inlined into each trampoline:
/// the common case is a pointer taken out of the outcome (the outcome, with room for a PyErr,
/// is not copied into a call).
#[inline(always)]
fn into_return(
    py: Python<'_>,
    outcome: std::thread::Result<PyResult<Bound<'_, PyAny>>>,
) -> *mut ffi::PyObject {
    match outcome {
        Ok(Ok(v)) => v.into_ptr(),
        Ok(Err(err)) => raise(py, err),
        Err(_) => raise(
            py,
            pyo3::exceptions::PySystemError::new_err(
                "ferroloop: internal error (panic) in a method",
            ),
        ),
    }
}

/// Sets `err` as the current exception and gives the NULL a failed call returns.
#[cold]
#[inline(never)]
fn raise(py: Python<'_>, err: PyErr) -> *mut ffi::PyObject {
    err.restore(py);
    std::ptr::null_mut()
}

unsafe extern "C" fn meth_o_trampoline<T: MethO>(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a METH_O or METH_NOARGS function with the GIL held, `slf` alive
    // and `arg` alive (METH_O) or NULL (METH_NOARGS), both borrowed. We return a new reference, or NULL with an exception set. A panic is caught:
    // unwinding out of an extern "C" function would abort.
    unsafe {
        let py = Python::assume_attached();
        let slf = Bound::from_borrowed_ptr(py, slf);
        // METH_NOARGS passes NULL.
        let arg = if arg.is_null() {
            py.None().into_bound(py)
        } else {
            Bound::from_borrowed_ptr(py, arg)
        };
        into_return(
            py,
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::call(&slf, &arg))),
        )
    }
}

/// The identity of a `PyMethodDef` that `install_meth_o` installed (alive for the rest of the
/// process): what `bound_method_self` recognises a bound method of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MethodDefId(usize);

/// `obj.__self__` when `obj` is a built-in bound method (`builtin_function_or_method`, as
/// `fut.set_result` evaluates to) of the method `def`; None for anything else.
pub fn bound_method_self<'py>(
    obj: &Bound<'py, PyAny>,
    def: MethodDefId,
) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive. An object whose type is exactly PyCFunction_Type is a
    // PyCFunctionObject, whose m_ml and m_self fields are readable for its lifetime; m_self
    // (NULL for a module-less static function) is taken as a new reference while `obj` holds it.
    unsafe {
        let op = obj.as_ptr();
        if ffi::Py_IS_TYPE(op, &raw mut ffi::PyCFunction_Type) == 0 {
            return None;
        }
        let func = op.cast::<ffi::PyCFunctionObject>();
        if (*func).m_ml as usize != def.0 {
            return None;
        }
        Bound::from_borrowed_ptr_or_opt(obj.py(), (*func).m_self)
    }
}

/// Stores `T` in the class `ty` as a method descriptor whose instances are checked against
/// `owner` (a base of `ty`). Returns the method's identity (`bound_method_self`).
pub fn install_meth_o<T: MethO>(
    ty: &Bound<'_, pyo3::types::PyType>,
    owner: &Bound<'_, pyo3::types::PyType>,
) -> PyResult<MethodDefId> {
    let py = ty.py();
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: T::NAME.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: meth_o_trampoline::<T>,
        },
        ml_flags: if T::NO_ARGS {
            ffi::METH_NOARGS
        } else {
            ffi::METH_O
        },
        ml_doc: T::DOC.as_ptr(),
    }));
    // SAFETY: `def` lives for the rest of the process (leaked on purpose: a descriptor keeps a
    // pointer to its PyMethodDef). PyDescr_NewMethod returns a new reference or NULL with an
    // exception set. The descriptor goes straight into the type's dict (PyO3's types may refuse
    // setattr), after which PyType_Modified invalidates the method caches.
    unsafe {
        let descr =
            Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(owner.as_type_ptr(), def))?;
        let tp = ty.as_type_ptr();
        let dict = Bound::from_borrowed_ptr(py, (*tp).tp_dict);
        dict.set_item(T::NAME.to_str().unwrap_or_default(), descr)?;
        ffi::PyType_Modified(tp);
    }
    Ok(MethodDefId(std::ptr::from_ref(def) as usize))
}

/// The arguments of a `METH_FASTCALL | METH_KEYWORDS` call: positional ones in a slice, then
/// the keyword values named by `kwnames`, all borrowed from the caller.
pub struct FastArgs<'a, 'py> {
    py: Python<'py>,
    positional: &'a [*mut ffi::PyObject],
    kwnames: Option<Borrowed<'a, 'py, PyTuple>>,
    kwvalues: &'a [*mut ffi::PyObject],
}

impl<'a, 'py> FastArgs<'a, 'py> {
    pub fn py(&self) -> Python<'py> {
        self.py
    }

    /// True when no keyword argument was passed.
    pub fn no_keywords(&self) -> bool {
        self.kwnames.is_none()
    }

    /// How many positional arguments were passed.
    pub fn len(&self) -> usize {
        self.positional.len()
    }

    /// Positional argument `i` (`i < len()`).
    pub fn get(&self, i: usize) -> Borrowed<'a, 'py, PyAny> {
        // SAFETY: the pointers are the caller's live, borrowed arguments for the whole call.
        unsafe { Borrowed::from_ptr(self.py, self.positional[i]) }
    }

    /// [`Self::tuple_from`], a new tuple untracked by the cyclic garbage collector (the shared
    /// empty tuple is left as it is): for the argument tuple of a timer handle, which owns it
    /// alone (see `handle::HandleState::args`).
    pub fn untracked_tuple_from(&self, start: usize) -> PyResult<Bound<'py, PyTuple>> {
        let tuple = self.tuple_from(start)?;
        untrack_new_args(&tuple);
        Ok(tuple)
    }

    /// The positional arguments from `start` on, as a tuple (the shared empty tuple if none).
    pub fn tuple_from(&self, start: usize) -> PyResult<Bound<'py, PyTuple>> {
        let rest = self.positional.get(start..).unwrap_or(&[]);
        if rest.is_empty() {
            return Ok(PyTuple::empty(self.py));
        }
        // SAFETY: PyTuple_New gives a new tuple of `rest.len()` empty slots (or NULL with an
        // exception set); each slot is filled once with a new reference to a live argument.
        unsafe {
            let tuple = ffi::PyTuple_New(rest.len() as ffi::Py_ssize_t);
            if tuple.is_null() {
                return Err(PyErr::fetch(self.py));
            }
            for (i, &arg) in rest.iter().enumerate() {
                ffi::Py_INCREF(arg);
                ffi::PyTuple_SET_ITEM(tuple, i as ffi::Py_ssize_t, arg);
            }
            Ok(Bound::from_owned_ptr(self.py, tuple).cast_into_unchecked())
        }
    }

    /// The values of the keyword arguments named in `allowed`, in that order (None where not
    /// given); any other keyword is a TypeError worded as Python's for `function`.
    pub fn keywords<const N: usize>(
        &self,
        function: &str,
        allowed: [&str; N],
    ) -> PyResult<[Option<Borrowed<'a, 'py, PyAny>>; N]> {
        self.keywords_else(allowed, |name| {
            format!("{function}() got an unexpected keyword argument '{name}'")
        })
    }

    /// [`Self::keywords`] for a C function's parameters: any other keyword is the TypeError
    /// Argument Clinic gives (`'x' is an invalid keyword argument for function()`).
    pub fn c_keywords<const N: usize>(
        &self,
        function: &str,
        allowed: [&str; N],
    ) -> PyResult<[Option<Borrowed<'a, 'py, PyAny>>; N]> {
        self.keywords_else(allowed, |name| {
            format!("'{name}' is an invalid keyword argument for {function}()")
        })
    }

    fn keywords_else<const N: usize>(
        &self,
        allowed: [&str; N],
        unexpected: impl FnOnce(&str) -> String,
    ) -> PyResult<[Option<Borrowed<'a, 'py, PyAny>>; N]> {
        let mut values = [None; N];
        let Some(names) = &self.kwnames else {
            return Ok(values);
        };
        for (i, name) in names.iter().enumerate() {
            let name = name.cast_into::<PyString>()?;
            let text = name.to_str()?;
            match allowed.iter().position(|a| *a == text) {
                // SAFETY: as in `get`: keyword values follow the positional arguments.
                Some(k) => {
                    values[k] = Some(unsafe { Borrowed::from_ptr(self.py, self.kwvalues[i]) })
                }
                None => return Err(PyTypeError::new_err(unexpected(text))),
            }
        }
        Ok(values)
    }
}

/// A method (`METH_FASTCALL | METH_KEYWORDS`) written in Rust: the arguments reach it as the
/// caller's array, with no tuple, dict or PyO3 argument parsing in between.
pub trait MethFastcall {
    /// The class whose instances the method accepts (the descriptor checks `self`).
    type Owner: pyo3::PyTypeInfo;
    const NAME: &'static std::ffi::CStr;
    /// Starts with the text signature (`name($self, ...)\n--\n\n`) that `inspect` reads.
    const DOC: &'static std::ffi::CStr;
    fn call<'py>(
        slf: &Bound<'py, Self::Owner>,
        args: &FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>>;
}

unsafe extern "C" fn meth_fastcall_trampoline<T: MethFastcall>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a METH_FASTCALL | METH_KEYWORDS function with the GIL held, `slf`
    // alive, `args` pointing at `nargs` positional arguments followed by one value per name in
    // `kwnames` (a tuple, or NULL when there are none), all borrowed for the call. We return a
    // new reference, or NULL with an exception set; a panic is caught (unwinding out of an
    // extern "C" function would abort).
    unsafe {
        let py = Python::assume_attached();
        // The method descriptor made by `install_meth_fastcall` has checked that `slf` is an
        // instance of T::Owner before calling.
        let slf = Borrowed::from_ptr(py, slf).cast_unchecked::<T::Owner>();
        let nargs = usize::try_from(nargs).unwrap_or(0);
        let kwnames = (!kwnames.is_null())
            .then(|| Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>());
        let nkw = kwnames.as_ref().map_or(0, |k| k.len());
        let all: &[*mut ffi::PyObject] = if args.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(args, nargs + nkw)
        };
        let fast = FastArgs {
            py,
            positional: &all[..nargs.min(all.len())],
            kwnames,
            kwvalues: all.get(nargs..).unwrap_or(&[]),
        };
        into_return(
            py,
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::call(&slf, &fast))),
        )
    }
}

/// Stores `T` in its owner class as a method descriptor for instances of that class,
/// replacing what was there under that name.
pub fn install_meth_fastcall<T: MethFastcall>(py: Python<'_>) -> PyResult<()> {
    install_method_def(
        &py.get_type::<T::Owner>(),
        ffi::PyMethodDef {
            ml_name: T::NAME.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: meth_fastcall_trampoline::<T>,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: T::DOC.as_ptr(),
        },
    )
}

/// A method without arguments (`METH_NOARGS`) written in Rust, for instances of its owner
/// class: what CPython calls as it calls a C type's method (with the specialised
/// `PRECALL_NO_KW_METHOD_DESCRIPTOR_NOARGS` when `self` is exactly of that class), without
/// PyO3's trampoline and `self` extraction.
pub trait MethNoArgs {
    /// The class whose instances the method accepts (the descriptor checks `self`).
    type Owner: pyo3::PyTypeInfo;
    const NAME: &'static std::ffi::CStr;
    /// Starts with the text signature (`name($self, /)\n--\n\n`) that `inspect` reads.
    const DOC: &'static std::ffi::CStr;
    fn call<'py>(slf: &Bound<'py, Self::Owner>) -> PyResult<Bound<'py, PyAny>>;
}

unsafe extern "C" fn meth_noargs_trampoline<T: MethNoArgs>(
    slf: *mut ffi::PyObject,
    _null: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a METH_NOARGS function with the GIL held and `slf` alive (borrowed
    // for the call); the method descriptor made by `install_meth_noargs` has checked that it
    // is an instance of T::Owner. We return a new reference, or NULL with an exception set; a
    // panic is caught (unwinding out of an extern "C" function would abort).
    unsafe {
        let py = Python::assume_attached();
        let slf = Borrowed::from_ptr(py, slf).cast_unchecked::<T::Owner>();
        into_return(
            py,
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::call(&slf))),
        )
    }
}

/// Stores `T` in its owner class as a `METH_NOARGS` method descriptor for instances of that
/// class, replacing what was there under that name.
pub fn install_meth_noargs<T: MethNoArgs>(py: Python<'_>) -> PyResult<()> {
    install_method_def(
        &py.get_type::<T::Owner>(),
        ffi::PyMethodDef {
            ml_name: T::NAME.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: meth_noargs_trampoline::<T>,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: T::DOC.as_ptr(),
        },
    )
}

/// Stores `def` in the class `ty` as a method descriptor for instances of `ty`.
fn install_method_def(ty: &Bound<'_, pyo3::types::PyType>, def: ffi::PyMethodDef) -> PyResult<()> {
    let py = ty.py();
    let def = Box::leak(Box::new(def));
    // SAFETY: as in `install_meth_o`: `def` is leaked on purpose, PyDescr_NewMethod returns a
    // new reference or NULL with an exception set, and the descriptor goes straight into the
    // type's dict, followed by PyType_Modified.
    unsafe {
        let descr =
            Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))?;
        let tp = ty.as_type_ptr();
        let dict = Bound::from_borrowed_ptr(py, (*tp).tp_dict);
        let name = std::ffi::CStr::from_ptr(def.ml_name)
            .to_str()
            .unwrap_or_default();
        dict.set_item(name, descr)?;
        ffi::PyType_Modified(tp);
    }
    Ok(())
}

/// Gives `cls`, a Python subclass of `base`, descriptors of its own for the methods of `base`
/// (method descriptors in its dict: PyO3's and those `install_method_def` put there) that
/// `cls` inherits unchanged: same `PyMethodDef`, checked against instances of `cls`; returns
/// how many. CPython 3.11's specialised calls of a method descriptor
/// (`PRECALL_NO_KW_METHOD_DESCRIPTOR_NOARGS`, `PRECALL_METHOD_DESCRIPTOR_FAST_WITH_KEYWORDS`,
/// ...) require `self` to be exactly of the descriptor's class: an instance of the subclass
/// calling an inherited descriptor takes the generic call path, about 185 instructions more a
/// call.
pub fn specialize_inherited_methods(
    cls: &Bound<'_, pyo3::types::PyType>,
    base: &Bound<'_, pyo3::types::PyType>,
) -> PyResult<usize> {
    let py = cls.py();
    if !cls.is_subclass(base)? || cls.is(base) {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{} is not a subclass of {}",
            cls.name()?,
            base.name()?
        )));
    }
    let dict = pyo3::intern!(py, "__dict__");
    let own = cls.getattr(dict)?;
    let inherited_from: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = base
        .getattr(dict)?
        .call_method0(pyo3::intern!(py, "items"))?
        .try_iter()?
        .map(|item| item?.extract())
        .collect::<PyResult<_>>()?;
    let mut installed = 0;
    for (name, descr) in inherited_from {
        let p = descr.as_ptr();
        // SAFETY: reading the type of a live object, then (only for an exact method
        // descriptor, whose layout is PyMethodDescrObject) its class and PyMethodDef.
        let def = unsafe {
            if ffi::Py_TYPE(p) != std::ptr::addr_of_mut!(ffi::PyMethodDescr_Type) {
                continue;
            }
            let d = p.cast::<ffi::PyMethodDescrObject>();
            if (*d).d_common.d_type != base.as_type_ptr() {
                continue;
            }
            (*d).d_method
        };
        // Inherited unchanged: what `cls` finds under the name is `base`'s descriptor.
        if own.contains(&name)? || !cls.getattr(name.cast::<PyString>()?)?.is(&descr) {
            continue;
        }
        // SAFETY: `cls` is a live type object. `def` belongs to `base`'s descriptor: PyO3's
        // method definitions and `install_method_def`'s live as long as `base`, which `cls`
        // keeps alive (its base). PyDescr_NewMethod returns a new reference or NULL with an
        // exception set.
        let copy = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(cls.as_type_ptr(), def))?
        };
        // A heap type's setattr, which also updates its method cache.
        cls.setattr(name.cast::<PyString>()?, copy)?;
        installed += 1;
    }
    Ok(installed)
}

/// `dict.setdefault(key, value)` in one dictionary operation (`PyDict_SetDefault`; PyO3's
/// `set_default` takes two on Python < 3.13): the value now under `key`.
pub fn dict_setdefault<'py>(
    dict: &Bound<'py, pyo3::types::PyDict>,
    key: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = dict.py();
    // SAFETY: all three objects are alive (borrowed for the call). PyDict_SetDefault returns a
    // borrowed reference to the value in the dict (or NULL with an exception set), which
    // `from_borrowed_ptr_or_err` turns into an owned reference at once.
    unsafe {
        Bound::from_borrowed_ptr_or_err(
            py,
            ffi::PyDict_SetDefault(dict.as_ptr(), key.as_ptr(), value.as_ptr()),
        )
    }
}

#[cfg(not(Py_3_13))]
extern "C" {
    /// CPython's `_PyDict_Pop` (cpython/dictobject.h before 3.13), not declared by pyo3-ffi.
    fn _PyDict_Pop(
        dict: *mut ffi::PyObject,
        key: *mut ffi::PyObject,
        default: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
}

/// `dict.pop(key, None)` in one dictionary operation (two on 3.13+): the value that was under
/// `key`, or None if there was none (or it was None).
pub fn dict_pop<'py>(
    dict: &Bound<'py, pyo3::types::PyDict>,
    key: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = dict.py();
    #[cfg(not(Py_3_13))]
    // SAFETY: `dict` is a dict and `key` alive (both borrowed for the call); _PyDict_Pop
    // returns a new reference to the removed value or to the default (None), or NULL with an
    // exception set (an unhashable key, a failing __eq__).
    let value = unsafe {
        Bound::from_owned_ptr_or_err(py, _PyDict_Pop(dict.as_ptr(), key.as_ptr(), ffi::Py_None()))?
    };
    #[cfg(Py_3_13)]
    let value = match dict.get_item(key)? {
        Some(v) => {
            dict.del_item(key)?;
            v
        }
        None => py.None().into_bound(py),
    };
    Ok(if value.is_none() { None } else { Some(value) })
}

extern "C" {
    /// CPython's `_PyBytes_Resize` (exported by the interpreter; PyO3 keeps its binding private).
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> libc::c_int;
}

/// A bytes object of at most `size` bytes filled by `fill`, as the socket module's `recv`
/// makes it: allocated at full size, filled in place, then shrunk to the count `fill` returns
/// (`_PyBytes_Resize`). `fill` gets the object's uninitialised-but-allocated storage and
/// returns the bytes written, or None (nothing to return: the object is released).
pub fn bytes_filled<'py>(
    py: Python<'py>,
    size: usize,
    fill: impl FnOnce(&mut [u8]) -> PyResult<Option<usize>>,
) -> PyResult<Option<Bound<'py, pyo3::types::PyBytes>>> {
    let Ok(len) = ffi::Py_ssize_t::try_from(size) else {
        return Err(pyo3::exceptions::PyOverflowError::new_err("size too large"));
    };
    // SAFETY: GIL held; a NULL source asks for an allocated, not yet initialised bytes object
    // of `len` bytes (or NULL with MemoryError set).
    let mut obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `obj` is a fresh bytes object we own, with `size` bytes of storage at
    // PyBytes_AsString (plus the trailing NUL); nobody else sees it while `fill` writes.
    let storage =
        unsafe { std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(obj).cast::<u8>(), size) };
    let written = match fill(storage) {
        Ok(Some(n)) => n.min(size),
        other => {
            // SAFETY: we own the only reference to `obj`.
            unsafe { ffi::Py_DECREF(obj) };
            return other.map(|_| None);
        }
    };
    if written != size {
        // SAFETY: `obj` is a bytes object with refcount 1 that we own; _PyBytes_Resize
        // reallocates it (updating `obj`) or frees it, sets `obj` to NULL and raises.
        if unsafe { _PyBytes_Resize(&mut obj, written as ffi::Py_ssize_t) } < 0 {
            return Err(PyErr::fetch(py));
        }
    }
    // SAFETY: `obj` is a valid owned reference to a bytes object.
    Ok(Some(unsafe {
        Bound::from_owned_ptr(py, obj).cast_into_unchecked()
    }))
}
