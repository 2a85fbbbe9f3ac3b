//! The loop's hottest methods as descriptors of their own, without PyO3's trampoline or
//! argument parsing: `call_soon`, `call_soon_threadsafe`, `call_later`, `call_at` and
//! `create_task` as `METH_FASTCALL` descriptors on `LoopCore` (`capi::MethFastcall`: the
//! callback and its arguments come straight from the caller's array), `create_future`, `time`
//! and `get_debug` as `METH_NOARGS` ones (`capi::MethNoArgs`); and `_specialize_loop_methods`,
//! which gives `ferroloop.Loop` its own copies. Signatures and errors are those of
//! `BaseEventLoop.call_soon(callback, *args, context=None)` and its siblings, messages
//! included: `callback` (and `delay`/`when`, `coro`) may also be given by keyword, `context`
//! (and `name`) only by keyword.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::capi::{self, ContextSnapshot, FastArgs, MethFastcall, MethNoArgs};
use crate::event_loop::LoopCore;
use ferroloop_core::clock;
use pyo3::types::{PyBool, PyFloat};

/// The values of a call's leading parameters, and its `context` (None when not given or None).
type Leading<'a, 'py, const N: usize> = (
    [Borrowed<'a, 'py, PyAny>; N],
    Option<Borrowed<'a, 'py, PyAny>>,
);

/// The leading parameters (`N` ≤ 2 of them, positional or keyword) and `context` of a call,
/// checked as Python checks `def f(self, a, b, *args, context=None)`; `*args` are the
/// positional arguments from index `N` on.
fn leading<'a, 'py, const N: usize>(
    function: &str,
    names: [&str; N],
    args: &FastArgs<'a, 'py>,
) -> PyResult<Leading<'a, 'py, N>> {
    if args.no_keywords() && args.len() >= N {
        return Ok((std::array::from_fn(|i| args.get(i)), None));
    }
    let mut allowed = ["context"; 3];
    allowed[..N].copy_from_slice(&names);
    let kw = args.keywords(function, allowed)?;
    let mut values: [Option<Borrowed<'a, 'py, PyAny>>; N] = [None; N];
    for (i, value) in values.iter_mut().enumerate() {
        if i < args.len() {
            if kw[i].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{function}() got multiple values for argument '{}'",
                    names[i]
                )));
            }
            *value = Some(args.get(i));
        } else {
            *value = kw[i];
        }
    }
    let context = kw[N].filter(|c| !c.is_none());
    let given: Vec<Borrowed<'a, 'py, PyAny>> = values.iter().flatten().copied().collect();
    if let Ok(given) = <[Borrowed<'a, 'py, PyAny>; N]>::try_from(given) {
        return Ok((given, context));
    }
    let missing: Vec<String> = names
        .iter()
        .zip(values.iter())
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| format!("'{n}'"))
        .collect();
    let (count, plural) = (missing.len(), if missing.len() == 1 { "" } else { "s" });
    let listed = match missing.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => String::new(),
    };
    Err(PyTypeError::new_err(format!(
        "{function}() missing {count} required positional argument{plural}: {listed}"
    )))
}

/// call_soon and call_soon_threadsafe: `(callback, *args, context=None)` queued as a Handle.
/// `function` names the method in argument errors, `method` in debug-mode checks
/// (`thread_checked`: the calling thread is checked, as call_soon does).
fn schedule_callback<'py>(
    slf: &Bound<'py, LoopCore>,
    args: &FastArgs<'_, 'py>,
    function: &str,
    method: &str,
    thread_checked: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let ([callback], context) = leading(function, ["callback"], args)?;
    let rest = args.tuple_from(1)?;
    let handle = LoopCore::schedule_soon(
        slf,
        &callback,
        &rest,
        ContextSnapshot::given(context.as_deref()),
        method,
        thread_checked,
    )?;
    Ok(handle.into_bound(args.py()).into_any())
}

/// `loop.call_soon(callback, *args, context=None)`
pub(crate) struct CallSoon;

impl MethFastcall for CallSoon {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"call_soon";
    const DOC: &'static std::ffi::CStr = c"call_soon($self, callback, *args, context=None)\n--\n\nArrange for a callback to be called as soon as possible.";
    fn call<'py>(
        slf: &Bound<'py, LoopCore>,
        args: &FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        schedule_callback(slf, args, "BaseEventLoop.call_soon", "call_soon", true)
    }
}

/// `loop.call_soon_threadsafe(callback, *args, context=None)`
pub(crate) struct CallSoonThreadsafe;

impl MethFastcall for CallSoonThreadsafe {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"call_soon_threadsafe";
    const DOC: &'static std::ffi::CStr = c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike call_soon(), but thread-safe.";
    fn call<'py>(
        slf: &Bound<'py, LoopCore>,
        args: &FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let handle = schedule_callback(
            slf,
            args,
            "BaseEventLoop.call_soon_threadsafe",
            "call_soon_threadsafe",
            false,
        )?;
        slf.get().wake();
        Ok(handle)
    }
}

/// call_later and call_at: `(time, callback, *args, context=None)`, where `deadline` turns the
/// first argument (named `first`) into the timer's deadline.
fn schedule_timer<'py>(
    slf: &Bound<'py, LoopCore>,
    args: &FastArgs<'_, 'py>,
    function: &str,
    first: &str,
    deadline: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let ([time, callback], context) = leading(function, [first, "callback"], args)?;
    let when = deadline(&time)?;
    // A timer's arguments wait with it, through collections: see `HandleState::args`.
    let rest = args.untracked_tuple_from(2)?;
    let timer = LoopCore::call_at_impl(
        slf,
        when,
        &callback,
        &rest,
        ContextSnapshot::given(context.as_deref()),
    )?;
    Ok(timer.into_bound(args.py()).into_any())
}

/// `loop.call_later(delay, callback, *args, context=None)`
pub(crate) struct CallLater;

impl MethFastcall for CallLater {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"call_later";
    const DOC: &'static std::ffi::CStr = c"call_later($self, delay, callback, *args, context=None)\n--\n\nArrange for a callback to be called at a given time.";
    fn call<'py>(
        slf: &Bound<'py, LoopCore>,
        args: &FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        schedule_timer(slf, args, "BaseEventLoop.call_later", "delay", |delay| {
            LoopCore::when_after(delay)
        })
    }
}

/// `loop.call_at(when, callback, *args, context=None)`
pub(crate) struct CallAt;

impl MethFastcall for CallAt {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"call_at";
    const DOC: &'static std::ffi::CStr = c"call_at($self, when, callback, *args, context=None)\n--\n\nLike call_later(), but uses an absolute time.";
    fn call<'py>(
        slf: &Bound<'py, LoopCore>,
        args: &FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        schedule_timer(
            slf,
            args,
            "BaseEventLoop.call_at",
            "when",
            LoopCore::when_at,
        )
    }
}

/// `loop.create_task(coro, *, name=None, context=None)`
pub(crate) struct CreateTask;

impl MethFastcall for CreateTask {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"create_task";
    const DOC: &'static std::ffi::CStr = c"create_task($self, coro, *, name=None, context=None)\n--\n\nSchedule a coroutine object.\n\nReturn a task object.";
    fn call<'py>(
        slf: &Bound<'py, LoopCore>,
        args: &FastArgs<'_, 'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        const FUNCTION: &str = "BaseEventLoop.create_task";
        let py = args.py();
        let none = py.None().into_bound(py);
        if args.no_keywords() && args.len() == 1 {
            let task = LoopCore::create_task_impl(slf, &args.get(0), &none, &none)?;
            return Ok(task.into_bound(py));
        }
        // As Python checks `def create_task(self, coro, *, name=None, context=None)`.
        let [coro_kw, name, context] = args.keywords(FUNCTION, ["coro", "name", "context"])?;
        if args.len() > 1 {
            return Err(PyTypeError::new_err(format!(
                "{FUNCTION}() takes 2 positional arguments but {} were given",
                args.len() + 1
            )));
        }
        let coro = match (args.len(), coro_kw) {
            (1, Some(_)) => {
                return Err(PyTypeError::new_err(format!(
                    "{FUNCTION}() got multiple values for argument 'coro'"
                )))
            }
            (1, None) => args.get(0),
            (_, Some(coro)) => coro,
            (_, None) => {
                return Err(PyTypeError::new_err(format!(
                    "{FUNCTION}() missing 1 required positional argument: 'coro'"
                )))
            }
        };
        let (name, context) = (
            name.as_deref().unwrap_or(&none),
            context.as_deref().unwrap_or(&none),
        );
        Ok(LoopCore::create_task_impl(slf, &coro, name, context)?.into_bound(py))
    }
}

/// `loop.create_future()`
pub(crate) struct CreateFuture;

impl MethNoArgs for CreateFuture {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"create_future";
    const DOC: &'static std::ffi::CStr =
        c"create_future($self, /)\n--\n\nCreate a Future object attached to the loop.";
    fn call<'py>(slf: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyAny>> {
        Ok(LoopCore::create_future(slf)?.into_bound(slf.py()))
    }
}

/// `loop.time()`: the loop clock, `time.monotonic()`.
pub(crate) struct Time;

impl MethNoArgs for Time {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"time";
    const DOC: &'static std::ffi::CStr =
        c"time($self, /)\n--\n\nReturn the time according to the event loop's clock.";
    fn call<'py>(slf: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyFloat::new(slf.py(), clock::monotonic()).into_any())
    }
}

/// `loop.get_debug()`
pub(crate) struct GetDebug;

impl MethNoArgs for GetDebug {
    type Owner = LoopCore;
    const NAME: &'static std::ffi::CStr = c"get_debug";
    const DOC: &'static std::ffi::CStr =
        c"get_debug($self, /)\n--\n\nWhether the loop is in debug mode.";
    fn call<'py>(slf: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyBool::new(slf.py(), slf.get().is_debug())
            .to_owned()
            .into_any())
    }
}

/// Puts the methods on `LoopCore`.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    capi::install_meth_noargs::<CreateFuture>(py)?;
    capi::install_meth_noargs::<Time>(py)?;
    capi::install_meth_noargs::<GetDebug>(py)?;
    capi::install_meth_fastcall::<CreateTask>(py)?;
    capi::install_meth_fastcall::<CallSoon>(py)?;
    capi::install_meth_fastcall::<CallSoonThreadsafe>(py)?;
    capi::install_meth_fastcall::<CallLater>(py)?;
    capi::install_meth_fastcall::<CallAt>(py)
}

/// `_specialize_loop_methods(cls)`: gives `cls`, a Python subclass of LoopCore (`ferroloop.Loop`,
/// whose instances the loops are), its own descriptors of LoopCore's methods, the ones above
/// and PyO3's (see `capi::specialize_inherited_methods`); returns how many.
#[pyfunction]
pub(crate) fn _specialize_loop_methods(cls: &Bound<'_, pyo3::types::PyType>) -> PyResult<usize> {
    capi::specialize_inherited_methods(cls, &cls.py().get_type::<LoopCore>())
}
