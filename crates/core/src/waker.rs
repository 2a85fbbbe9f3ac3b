//! Cross-thread wake-up for a loop blocked in the poller: a non-blocking pipe whose read end is
//! watched by the poller. The write end can also serve as Python's `signal.set_wakeup_fd`, which
//! writes one byte per signal (the signal number); [`Waker::drain`] hands those bytes back.
//!
//! Wakes are coalesced: while one is pending, further wakes write nothing.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Waker {
    read_fd: RawFd,
    write_fd: RawFd,
    pending: AtomicBool,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 returns; they are owned by the Waker.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            read_fd: fds[0],
            write_fd: fds[1],
            pending: AtomicBool::new(false),
        })
    }

    /// The fd to watch for readability.
    pub fn read_fd(&self) -> RawFd {
        self.read_fd
    }

    /// The fd written to on wake (usable with `signal.set_wakeup_fd`).
    pub fn write_fd(&self) -> RawFd {
        self.write_fd
    }

    /// Makes the reader readable. Safe from any thread; cheap when a wake is already pending.
    pub fn wake(&self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let byte = 0u8;
        // SAFETY: writes one byte from a valid buffer. A full pipe (EAGAIN) already means "awake".
        unsafe { libc::write(self.write_fd, (&byte as *const u8).cast(), 1) };
    }

    /// Empties the pipe. Returns the non-zero bytes read (signal numbers written by Python's
    /// wakeup-fd signal handler); zero bytes are our own wakes.
    pub fn drain(&self) -> Vec<u8> {
        self.pending.store(false, Ordering::Release);
        let mut signals = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a valid buffer of the given length.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            signals.extend(buf[..n as usize].iter().copied().filter(|&b| b != 0));
            if (n as usize) < buf.len() {
                break;
            }
        }
        signals
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: both fds are owned by this Waker and closed exactly once.
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::{Interest, Poller};
    use std::sync::Arc;

    #[test]
    fn wake_from_another_thread_unblocks_poller() {
        let p = Poller::new().unwrap();
        let w = Arc::new(Waker::new().unwrap());
        p.add(w.read_fd(), Interest::READ).unwrap();
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            w2.wake();
        });
        let t0 = crate::clock::monotonic();
        let mut evs = Vec::new();
        p.wait(&mut evs, Some(10.0)).unwrap();
        assert!(crate::clock::monotonic() - t0 < 5.0);
        assert_eq!(evs.len(), 1);
        assert!(w.drain().is_empty());
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert!(evs.is_empty());
        t.join().unwrap();
    }

    #[test]
    fn wakes_coalesce_and_signal_bytes_come_back() {
        let w = Waker::new().unwrap();
        for _ in 0..100 {
            w.wake();
        }
        let sig = 2u8;
        // SAFETY: one byte from a valid buffer, like Python's wakeup-fd handler writes.
        unsafe { libc::write(w.write_fd(), (&sig as *const u8).cast(), 1) };
        assert_eq!(w.drain(), vec![2]);
        assert!(w.drain().is_empty());
    }
}
