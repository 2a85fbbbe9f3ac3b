//! ferroloop-core: the pure-Rust machinery under ferroloop's event loop.
//!
//! Nothing here knows about Python. The PyO3 layer (`crates/py`) stores its Python objects in these
//! containers and drives them:
//! - [`poller`]: level-triggered readiness on file descriptors (epoll), like `selectors`;
//! - [`timer_heap`]: deadlines ordered by time, ties in scheduling order;
//! - [`ready_queue`]: the FIFO of callbacks to run, consumed one loop turn at a time;
//! - [`waker`]: wakes a loop blocked in the poller from another thread (or a signal handler);
//! - [`net`]: numeric address checks for name resolution;
//! - [`callback_list`]: a future's done callbacks, the first held inline;
//! - [`clock`]: the `time.monotonic()` clock;
//! - [`fdio`]: non-blocking reads/writes on fds and the write buffer transports flush.

pub mod callback_list;
pub mod clock;
pub mod fdio;
pub mod net;
pub mod poller;
pub mod ready_queue;
pub mod timer_heap;
pub mod waker;

pub use fdio::WriteBuffer;
pub use poller::{Event, Interest, Poller};
pub use ready_queue::ReadyQueue;
pub use timer_heap::TimerHeap;
pub use waker::Waker;
