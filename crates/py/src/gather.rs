//! ferroloop.gather: asyncio's `gather` (Python 3.11's `tasks.gather` and its
//! `_GatheringFuture`) in Rust. Owns [`gather`], the outer future types and the per-gather
//! done callback [`GatherCallback`].
//!
//! One gather allocates one callback object (shared by all children), one outer future and the
//! list of children; each child gets the callback object itself as its done callback (a native
//! entry on ferroloop's Future/Task, the object as a callable on any other future). The outer
//! future is:
//! - on a loop whose futures are ferroloop's ([`LoopCore`] with `native_tasks=True`): the
//!   native [`GatheringFuture`], a ferroloop.Future subclass that a native Task awaits without
//!   Python calls;
//! - elsewhere: an instance of a subclass of `asyncio.Future` made at first use
//!   (`ferroloop._GatheringFuture`), so `isinstance(outer, asyncio.Future)` holds as with
//!   asyncio's `_GatheringFuture`.
//!
//! Both keep `_children` and `_cancel_requested` and override `cancel` as asyncio's does.

use std::collections::HashMap;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyTypeInfo, PyVisit};

use crate::event_loop::LoopCore;
use crate::future::{Callback, Future, FutureCore, NativeFuture, State};
use crate::gil_cell::GilRefCell;
use crate::task::Task;
use crate::{capi, stdlib};

/// What kind of future an object is, by its exact type (a subclass may override any method,
/// so it is driven through its methods like any other future).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// ferroloop's Future, Task or native `_GatheringFuture`: driven natively.
    Native,
    /// asyncio's (C) Future or Task, or the asyncio-based `_GatheringFuture`.
    Asyncio,
    /// Anything else.
    Other,
}

/// The type objects of [`Kind::Asyncio`] (kept alive by the stdlib caches and
/// [`python_outer_class`]).
fn asyncio_types(py: Python<'_>) -> PyResult<&[usize; 3]> {
    static CELL: PyOnceLock<[usize; 3]> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        Ok::<_, PyErr>([
            stdlib::future_class(py)?.as_ptr() as usize,
            stdlib::task_class(py)?.as_ptr() as usize,
            python_outer_class(py)?.as_ptr() as usize,
        ])
    })
}

fn kind_of(obj: &Bound<'_, PyAny>) -> PyResult<Kind> {
    let py = obj.py();
    let tp = obj.get_type_ptr();
    if tp == Future::type_object_raw(py)
        || tp == Task::type_object_raw(py)
        || tp == GatheringFuture::type_object_raw(py)
    {
        return Ok(Kind::Native);
    }
    if asyncio_types(py)?.contains(&(tp as usize)) {
        return Ok(Kind::Asyncio);
    }
    Ok(Kind::Other)
}

/// The object as ferroloop's Future, if it is to be driven natively.
fn as_native<'py>(obj: &Bound<'py, PyAny>, kind: Kind) -> Option<NativeFuture<'py>> {
    if kind == Kind::Native {
        NativeFuture::of(obj)
    } else {
        None
    }
}

/// An object of a native kind (see [`kind_of`]) as the native future it is.
fn native_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<NativeFuture<'py>> {
    NativeFuture::of(obj)
        .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("expected a ferroloop future"))
}

/// True for futures and coroutines whose `__hash__`/`__eq__` are identity (exact native
/// coroutines, asyncio's and ferroloop's own future classes): gather can de-duplicate them by
/// address instead of through a dict, with the same outcome.
fn identity_hashed(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(capi::is_native_coroutine(obj) || kind_of(obj)? != Kind::Other)
}

/// `events._get_event_loop()` as gather calls it on 3.11 (`events.get_event_loop()` on 3.12+,
/// where the private helper is gone).
fn get_event_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let f = CELL.get_or_try_init(py, || {
        if py.version_info() >= (3, 12) {
            Ok::<_, PyErr>(
                py.import("asyncio.events")?
                    .getattr("get_event_loop")?
                    .unbind(),
            )
        } else {
            Ok(stdlib::get_event_loop(py)?.clone().unbind())
        }
    })?;
    f.bind(py).call0()
}

/// `futures._get_loop(fut)`, natively for the known future classes.
fn loop_of<'py>(fut: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = fut.py();
    match kind_of(fut)? {
        Kind::Native => native_of(fut)?.loop_of(),
        Kind::Asyncio => fut.call_method0(intern!(py, "get_loop")),
        Kind::Other => stdlib::futures_get_loop(py)?.call1((fut,)),
    }
}

/// `tasks._ensure_future(arg, loop=loop)`: a future is returned as is (after the loop check),
/// a coroutine becomes a task of `loop`. Anything else goes to asyncio's own helper (awaitables
/// are wrapped there; other objects get its TypeError).
fn ensure_future<'py>(
    arg: &Bound<'py, PyAny>,
    loop_: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = arg.py();
    if kind_of(arg)? != Kind::Other {
        if let Some(l) = loop_ {
            if !l.is(&loop_of(arg)?) {
                return Err(PyValueError::new_err(
                    "The future belongs to a different loop than the one specified as the loop \
                     argument",
                ));
            }
        }
        return Ok(arg.clone());
    }
    if capi::is_native_coroutine(arg) {
        let owned;
        let l = match loop_ {
            Some(l) => l,
            None => {
                owned = get_event_loop(py)?;
                &owned
            }
        };
        return match l.call_method1(intern!(py, "create_task"), (arg,)) {
            Ok(task) => Ok(task),
            Err(err) if err.is_instance_of::<PyRuntimeError>(py) => {
                arg.call_method0(intern!(py, "close"))?;
                Err(err)
            }
            Err(err) => Err(err),
        };
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "loop"), loop_)?;
    stdlib::tasks_ensure_future(py)?.call((arg,), Some(&kwargs))
}

/// Up to this many identity-hashed arguments are de-duplicated by a scan of a stack array.
const FEW: usize = 16;

/// Which argument already has its child future (an index into the children): by address for
/// identity-hashed arguments (a short array is scanned, a long one hashed), else through a dict
/// as asyncio's `arg_to_fut` (equality, and TypeError for an unhashable argument). It lives on
/// the stack for one call: the array is the point (no allocation), so it is not boxed.
#[allow(clippy::large_enum_variant)]
enum Seen<'py> {
    Few([(usize, usize); FEW], usize),
    Many(HashMap<usize, usize>),
    Dict(Bound<'py, PyDict>),
}

impl<'py> Seen<'py> {
    fn new(args: &Bound<'py, PyTuple>) -> PyResult<Self> {
        let py = args.py();
        for a in args.iter() {
            if !identity_hashed(&a)? {
                return Ok(Seen::Dict(PyDict::new(py)));
            }
        }
        Ok(if args.len() <= FEW {
            Seen::Few([(0, 0); FEW], 0)
        } else {
            Seen::Many(HashMap::with_capacity(args.len()))
        })
    }

    fn get(&self, arg: &Bound<'py, PyAny>) -> PyResult<Option<usize>> {
        let key = arg.as_ptr() as usize;
        Ok(match self {
            Seen::Few(v, n) => v[..*n].iter().find(|(k, _)| *k == key).map(|(_, i)| *i),
            Seen::Many(m) => m.get(&key).copied(),
            Seen::Dict(d) => match d.get_item(arg)? {
                Some(i) => Some(i.extract::<usize>()?),
                None => None,
            },
        })
    }

    fn insert(&mut self, arg: &Bound<'py, PyAny>, index: usize) -> PyResult<()> {
        let key = arg.as_ptr() as usize;
        match self {
            Seen::Few(v, n) => {
                v[*n] = (key, index);
                *n += 1;
            }
            Seen::Many(m) => {
                m.insert(key, index);
            }
            Seen::Dict(d) => d.set_item(arg, index)?,
        }
        Ok(())
    }
}

/// asyncio.gather (Python 3.11's tasks.gather), native: returns a future aggregating the
/// results of the given coroutines/futures, in argument order. Coroutines become tasks of the
/// loop of the first future found; the first exception is passed on unless
/// return_exceptions is true; cancelling the returned future cancels the children.
/// `ferroloop.patch_asyncio()` makes asyncio.gather this function.
#[pyfunction]
#[pyo3(
    signature = (*coros_or_futures, return_exceptions=None),
    text_signature = "(*coros_or_futures, return_exceptions=False)"
)]
pub fn gather<'py>(
    coros_or_futures: &Bound<'py, PyTuple>,
    return_exceptions: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = coros_or_futures.py();
    if coros_or_futures.is_empty() {
        let loop_ = get_event_loop(py)?;
        let outer = loop_.call_method0(intern!(py, "create_future"))?;
        outer.call_method1(intern!(py, "set_result"), (PyList::empty(py),))?;
        return Ok(outer);
    }
    let return_exceptions = match return_exceptions {
        Some(r) => r.is_truthy()?,
        None => false,
    };
    let callback = Bound::new(
        py,
        GatherCallback {
            st: GilRefCell::new(GatherCallbackState {
                outer: None,
                children: None,
                nfuts: 0,
                nfinished: 0,
                return_exceptions,
            }),
        },
    )?;
    let mut seen = Seen::new(coros_or_futures)?;
    let mut children: Vec<Bound<'py, PyAny>> = Vec::with_capacity(coros_or_futures.len());
    let mut loop_: Option<Bound<'py, PyAny>> = None;
    let mut nfuts = 0usize;
    let mut context = None;
    for arg in coros_or_futures.iter() {
        if let Some(index) = seen.get(&arg)? {
            // The same awaitable again: awaited once, its result appears at each place.
            let fut = children[index].clone();
            children.push(fut);
            continue;
        }
        let fut = ensure_future(&arg, loop_.as_ref())?;
        if loop_.is_none() {
            loop_ = Some(loop_of(&fut)?);
        }
        if !fut.is(&arg) {
            // A future made here for a coroutine: nobody else can await it, so no "Task was
            // destroyed but it is pending!" report for it.
            fut.setattr(intern!(py, "_log_destroy_pending"), false)?;
        }
        nfuts += 1;
        seen.insert(&arg, children.len())?;
        add_child_callback(&fut, &callback, &mut context)?;
        children.push(fut);
    }
    let Some(loop_) = loop_ else {
        return Err(PyRuntimeError::new_err("gather: no loop found"));
    };
    let children = PyList::new(py, children)?;
    let outer = new_outer(&loop_, &children)?;
    {
        let mut cb = callback.get().st.borrow_mut(py);
        cb.outer = Some(outer.clone().unbind());
        cb.children = Some(children.unbind());
        cb.nfuts = nfuts;
    }
    Ok(outer)
}

/// `fut.add_done_callback(callback)`: a native entry on ferroloop's futures. asyncio's futures
/// get `context=`, one copy of the caller's context for all the children of a gather, where
/// asyncio lets each child copy it (the callback reads no context variable, so which copy it
/// runs in is not observable).
fn add_child_callback<'py>(
    fut: &Bound<'py, PyAny>,
    callback: &Bound<'py, GatherCallback>,
    context: &mut Option<Bound<'py, PyAny>>,
) -> PyResult<()> {
    let py = fut.py();
    match kind_of(fut)? {
        Kind::Native => {
            native_of(fut)?.add_native_callback(Callback::Gather(callback.clone().unbind()))
        }
        Kind::Asyncio => {
            let ctx = match context {
                Some(c) => c,
                None => context.insert(capi::copy_context(py)?.into_bound(py)),
            };
            capi::call_with_kwnames(
                &fut.getattr(intern!(py, "add_done_callback"))?,
                &[callback.as_any(), ctx],
                stdlib::kwnames(py, stdlib::KwNames::Context)?,
            )
            .map(drop)
        }
        Kind::Other => fut
            .call_method1(intern!(py, "add_done_callback"), (callback,))
            .map(drop),
    }
}

/// The outer future for `loop_`: native on a loop whose futures are ferroloop's, else an
/// `asyncio.Future` subclass instance.
fn new_outer<'py>(
    loop_: &Bound<'py, PyAny>,
    children: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    if let Ok(native) = loop_.cast::<LoopCore>() {
        if native.get().native_tasks_enabled() {
            let core =
                FutureCore::for_loop(py, loop_.clone().unbind(), native.get().debug_enabled())?;
            let outer = Bound::new(
                py,
                PyClassInitializer::from(Future {
                    core: GilRefCell::new(core),
                })
                .add_subclass(GatheringFuture {
                    st: GilRefCell::new(GatheringState {
                        children: Some(children.clone().into_any().unbind()),
                        cancel_requested: false,
                    }),
                }),
            )?;
            return Ok(outer.into_any());
        }
    }
    let cls = python_outer_class(py)?;
    let outer =
        capi::call_with_kwnames(cls, &[loop_], stdlib::kwnames(py, stdlib::KwNames::Loop)?)?;
    outer.setattr(intern!(py, "_children"), children)?;
    Ok(outer)
}

// ---------------------------------------------------------------------------------------------
// The children, seen through asyncio's Future API (natively for ferroloop's own futures).
// ---------------------------------------------------------------------------------------------

/// A done child, seen through asyncio's Future API: natively when it is exactly one of
/// ferroloop's futures (its type looked at once), else through its methods.
struct Child<'py> {
    fut: Bound<'py, PyAny>,
    native: Option<NativeFuture<'py>>,
}

impl<'py> Child<'py> {
    fn new(fut: Bound<'py, PyAny>) -> PyResult<Self> {
        let native = as_native(&fut, kind_of(&fut)?);
        Ok(Child { fut, native })
    }

    fn py(&self) -> Python<'py> {
        self.fut.py()
    }

    /// `fut.cancelled()`
    fn cancelled(&self) -> PyResult<bool> {
        if let Some(native) = &self.native {
            return Ok(native.borrow().state == State::Cancelled);
        }
        self.fut
            .call_method0(intern!(self.py(), "cancelled"))?
            .is_truthy()
    }

    /// `fut.exception()` (which also marks the exception as retrieved).
    fn exception(&self) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py();
        if let Some(native) = &self.native {
            return native.exception();
        }
        let exc = self.fut.call_method0(intern!(py, "exception"))?;
        Ok(if exc.is_none() { None } else { Some(exc) })
    }

    /// `fut.result()`
    fn result(&self) -> PyResult<Bound<'py, PyAny>> {
        if let Some(native) = &self.native {
            return native.result();
        }
        self.fut.call_method0(intern!(self.py(), "result"))
    }

    /// `fut._make_cancelled_error()`
    fn cancelled_error(&self) -> PyResult<Bound<'py, PyAny>> {
        if let Some(native) = &self.native {
            return native.make_cancelled_error();
        }
        self.fut
            .call_method0(intern!(self.py(), "_make_cancelled_error"))
    }

    /// `CancelledError('' if fut._cancel_message is None else fut._cancel_message)`: what a
    /// cancelled child contributes to the results (no `_make_cancelled_error`, no `__context__`).
    fn cancelled_result(&self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py();
        let message = match &self.native {
            Some(native) => native
                .borrow()
                .cancel_message
                .as_ref()
                .map(|m| m.bind(py).clone()),
            None => {
                let m = self.fut.getattr(intern!(py, "_cancel_message"))?;
                if m.is_none() {
                    None
                } else {
                    Some(m)
                }
            }
        };
        let message = match message {
            Some(m) => m,
            None => pyo3::types::PyString::new(py, "").into_any(),
        };
        stdlib::cancelled_error(py)?.call1((message,))
    }
}

/// `child.cancel(msg=msg)`
fn cancel_child(child: &Bound<'_, PyAny>, msg: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let py = child.py();
    let msg_owned = msg.filter(|m| !m.is_none()).map(|m| m.clone().unbind());
    let ty = child.get_type();
    if ty.is(py.get_type::<Task>()) {
        return Task::cancel_impl(child.cast::<Task>()?, msg_owned);
    }
    if ty.is(py.get_type::<Future>()) {
        return NativeFuture::from(child.cast::<Future>()?).cancel(msg_owned);
    }
    if ty.is(py.get_type::<GatheringFuture>()) {
        return GatheringFuture::cancel_impl(child.cast::<GatheringFuture>()?, msg);
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "msg"), msg)?;
    child
        .call_method(intern!(py, "cancel"), (), Some(&kwargs))?
        .is_truthy()
}

/// `_GatheringFuture.cancel`: cancel every child still pending; when one was, the outer future
/// will end with CancelledError whatever `return_exceptions` says (bpo-32684).
fn cancel_children(children: &Bound<'_, PyAny>, msg: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let mut any = false;
    for child in children.try_iter()? {
        if cancel_child(&child?, msg)? {
            any = true;
        }
    }
    Ok(any)
}

// ---------------------------------------------------------------------------------------------
// The outer futures.
// ---------------------------------------------------------------------------------------------

/// The outer future of a gather on a loop whose futures are ferroloop's: a ferroloop.Future
/// with asyncio's `_GatheringFuture` cancel semantics.
#[pyclass(module = "ferroloop", name = "_GatheringFuture", extends = Future, frozen)]
pub struct GatheringFuture {
    st: GilRefCell<GatheringState>,
}

/// What a `_GatheringFuture` holds besides its Future part.
struct GatheringState {
    children: Option<Py<PyAny>>,
    cancel_requested: bool,
}

impl GatheringFuture {
    fn cancel_impl(slf: &Bound<'_, Self>, msg: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        NativeFuture::from(slf.as_super()).ensure_alive()?;
        if slf.as_super().get().core.borrow(slf.py()).state != State::Pending {
            return Ok(false);
        }
        let children = slf
            .get()
            .st
            .borrow(py)
            .children
            .as_ref()
            .map(|c| c.clone_ref(py));
        let Some(children) = children else {
            return Ok(false);
        };
        let any = cancel_children(children.bind(py), msg)?;
        if any {
            slf.get().st.borrow_mut(py).cancel_requested = true;
        }
        Ok(any)
    }
}

#[pymethods]
impl GatheringFuture {
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        Self::cancel_impl(slf, msg)
    }

    #[getter(_children)]
    fn get_children(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.st
            .borrow(py)
            .children
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    #[setter(_children)]
    fn set_children(&self, py: Python<'_>, value: Py<PyAny>) {
        let old = self.st.borrow_mut(py).children.replace(value);
        drop(old);
    }

    #[getter(_cancel_requested)]
    fn get_cancel_requested(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).cancel_requested
    }

    #[setter(_cancel_requested)]
    fn set_cancel_requested(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let requested = value.is_truthy()?;
        self.st.borrow_mut(value.py()).cancel_requested = requested;
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self.st.for_traverse() {
            Some(st) => visit.call(&st.children),
            None => Ok(()),
        }
    }

    fn __clear__(&self) {
        self.st.clear_with(|st| st.children.take());
    }
}

impl capi::Finalized for GatheringFuture {
    fn finalize(obj: &Bound<'_, PyAny>) -> PyResult<()> {
        crate::future::finalize_future(obj)
    }

    fn original_dealloc() -> &'static std::sync::OnceLock<usize> {
        static ORIGINAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        &ORIGINAL
    }
}

/// `cancel(self, msg=None)` of the asyncio-based `_GatheringFuture` class.
#[pyfunction]
#[pyo3(name = "cancel", signature = (slf, msg=None))]
fn gathering_future_cancel(
    slf: &Bound<'_, PyAny>,
    msg: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let py = slf.py();
    if slf.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(false);
    }
    let children = slf.getattr(intern!(py, "_children"))?;
    let any = cancel_children(&children, msg)?;
    if any {
        slf.setattr(intern!(py, "_cancel_requested"), true)?;
    }
    Ok(any)
}

/// `ferroloop._GatheringFuture` for loops whose futures are asyncio's: a subclass of
/// `asyncio.Future` with `_children`, `_cancel_requested` and the `cancel` above.
/// Made once, at first use.
pub(crate) fn python_outer_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || {
        let ns = PyDict::new(py);
        ns.set_item("__module__", "ferroloop")?;
        ns.set_item("__qualname__", "_GatheringFuture")?;
        ns.set_item(
            "__doc__",
            "The future ferroloop.gather() returns (asyncio's _GatheringFuture): cancel() \
             cancels the children.",
        )?;
        // `_cancel_requested` is False until cancel() sets it on the instance.
        ns.set_item("__slots__", ("_children",))?;
        ns.set_item("_cancel_requested", false)?;
        let cancel = wrap_pyfunction!(gathering_future_cancel, py)?;
        ns.set_item("cancel", capi::instance_method(cancel.as_any())?)?;
        let bases = (stdlib::future_class(py)?,);
        let cls = py
            .get_type::<PyType>()
            .call1(("_GatheringFuture", bases, ns))?;
        Ok::<_, PyErr>(cls.unbind())
    })
    .map(|c| c.bind(py))
}

// ---------------------------------------------------------------------------------------------
// The done callback shared by a gather's children.
// ---------------------------------------------------------------------------------------------

/// The done callback of every child of one gather (asyncio's `gather.<locals>._done_callback`
/// with its closure): counts finished children, passes the first error on, and sets the
/// results when the last child is done.
#[pyclass(module = "ferroloop", name = "_GatherCallback", frozen)]
pub struct GatherCallback {
    st: GilRefCell<GatherCallbackState>,
}

/// What a gather's done callback holds.
struct GatherCallbackState {
    /// None until gather() has made it (bpo-46672: a child may finish before).
    outer: Option<Py<PyAny>>,
    children: Option<Py<PyList>>,
    nfuts: usize,
    nfinished: usize,
    return_exceptions: bool,
}

/// The outer future, natively or through its methods.
fn outer_done(outer: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(native) = outer.cast::<GatheringFuture>() {
        return Ok(native.as_super().get().core.borrow(native.py()).state != State::Pending);
    }
    outer.call_method0(intern!(outer.py(), "done"))?.is_truthy()
}

fn outer_set_exception(outer: &Bound<'_, PyAny>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(native) = outer.cast::<GatheringFuture>() {
        return NativeFuture::from(native.as_super()).set_exception(exc);
    }
    outer
        .call_method1(intern!(outer.py(), "set_exception"), (exc,))
        .map(drop)
}

fn outer_set_result(outer: &Bound<'_, PyAny>, results: Bound<'_, PyList>) -> PyResult<()> {
    if let Ok(native) = outer.cast::<GatheringFuture>() {
        return NativeFuture::from(native.as_super()).set_result(results.into_any().unbind());
    }
    outer
        .call_method1(intern!(outer.py(), "set_result"), (results,))
        .map(drop)
}

fn outer_cancel_requested(outer: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(native) = outer.cast::<GatheringFuture>() {
        return Ok(native.get().st.borrow(native.py()).cancel_requested);
    }
    outer
        .getattr(intern!(outer.py(), "_cancel_requested"))?
        .is_truthy()
}

impl GatherCallback {
    /// One child is done (`_done_callback(fut)`).
    pub(crate) fn child_done(slf: &Bound<'_, Self>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (outer, return_exceptions) = {
            let mut cb = slf.get().st.borrow_mut(py);
            cb.nfinished += 1;
            (
                cb.outer.as_ref().map(|o| o.clone_ref(py).into_bound(py)),
                cb.return_exceptions,
            )
        };
        let child = Child::new(fut.clone())?;
        let outer = match outer {
            Some(o) if !outer_done(&o)? => o,
            _ => {
                // Nobody will look at this child's outcome: mark its exception retrieved.
                if !child.cancelled()? {
                    child.exception()?;
                }
                return Ok(());
            }
        };
        if !return_exceptions {
            if child.cancelled()? {
                // Checked first: exception() would raise the CancelledError.
                let exc = child.cancelled_error()?;
                return outer_set_exception(&outer, &exc);
            }
            if let Some(exc) = child.exception()? {
                return outer_set_exception(&outer, &exc);
            }
        }
        let (all_done, children) = {
            let cb = slf.get().st.borrow(py);
            (
                cb.nfinished == cb.nfuts,
                cb.children.as_ref().map(|c| c.clone_ref(py).into_bound(py)),
            )
        };
        if !all_done {
            return Ok(());
        }
        let Some(children) = children else {
            return Ok(());
        };
        // Every child is done: the results in argument order.
        let mut results: Vec<Bound<'_, PyAny>> = Vec::with_capacity(children.len());
        let mut last = child;
        for fut in children.iter() {
            let child = Child::new(fut)?;
            let res = if child.cancelled()? {
                child.cancelled_result()?
            } else {
                match child.exception()? {
                    Some(exc) => exc,
                    None => child.result()?,
                }
            };
            results.push(res);
            last = child;
        }
        if outer_cancel_requested(&outer)? {
            // gather() was cancelled: that wins over return_exceptions (bpo-32684). As asyncio,
            // the error comes from the last child.
            let exc = last.cancelled_error()?;
            return outer_set_exception(&outer, &exc);
        }
        outer_set_result(&outer, PyList::new(py, results)?)
    }
}

#[pymethods]
impl GatherCallback {
    fn __call__(slf: &Bound<'_, Self>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::child_done(slf, fut)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let outer = slf
            .get()
            .st
            .borrow(py)
            .outer
            .as_ref()
            .map(|o| o.clone_ref(py));
        Ok(match outer {
            Some(o) => format!("<gather done callback of {}>", o.bind(py).repr()?),
            None => "<gather done callback>".to_string(),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.st.for_traverse() {
            visit.call(&st.outer)?;
            visit.call(&st.children)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.st
            .clear_with(|st| (st.outer.take(), st.children.take()));
    }
}

/// Registers the gather function and classes on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(gather, m)?)?;
    m.add_class::<GatheringFuture>()?;
    m.add_class::<GatherCallback>()?;
    capi::install_finalizer::<GatheringFuture>(&py.get_type::<GatheringFuture>());
    Ok(())
}
