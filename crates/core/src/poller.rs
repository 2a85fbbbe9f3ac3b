//! Level-triggered readiness on file descriptors, on epoll: the role `selectors.EpollSelector`
//! plays under asyncio's `SelectorEventLoop`.
//!
//! The poller only knows fds and interests; which callback a readiness runs is the owner's business.

use std::io;
use std::os::fd::RawFd;

/// What a file descriptor is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };

    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }

    fn epoll_bits(self) -> u32 {
        let mut bits = 0;
        if self.read {
            bits |= libc::EPOLLIN as u32;
        }
        if self.write {
            bits |= libc::EPOLLOUT as u32;
        }
        bits
    }
}

/// One readiness report. An error or hang-up on the fd counts as both readable and writable, as
/// `selectors.EpollSelector.select` reports it; the owner filters by what it registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
}

/// An epoll instance.
pub struct Poller {
    epfd: RawFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the returned fd is owned by the Poller and closed on drop.
        let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Self { epfd })
    }

    /// The epoll fd itself (for diagnostics and fd-leak tests).
    pub fn fd(&self) -> RawFd {
        self.epfd
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.ctl_bits(op, fd, interest.epoll_bits())
    }

    fn ctl_bits(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u32 as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; epoll_ctl checks `fd`.
        cvt(unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) })?;
        Ok(())
    }

    /// Starts watching `fd`.
    pub fn add(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest)
    }

    /// Changes what `fd` is watched for. If the kernel forgot `fd` (it was closed and its number
    /// reused), it is added again.
    pub fn modify(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_MOD, fd, interest) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.add(fd, interest),
            other => other,
        }
    }

    /// Starts watching `fd` one-shot (EPOLLONESHOT): once it has been reported, `fd` stays
    /// registered but disarmed — it reports nothing, not even a hang-up — until
    /// [`Poller::modify_oneshot`] (or [`Poller::modify`]) arms it again.
    pub fn add_oneshot(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.ctl_bits(
            libc::EPOLL_CTL_ADD,
            fd,
            interest.epoll_bits() | libc::EPOLLONESHOT as u32,
        )
    }

    /// (Re-)arms `fd` one-shot for `interest`; added again if the kernel forgot it (closed and
    /// its number reused), as [`Poller::modify`].
    pub fn modify_oneshot(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let bits = interest.epoll_bits() | libc::EPOLLONESHOT as u32;
        match self.ctl_bits(libc::EPOLL_CTL_MOD, fd, bits) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.add_oneshot(fd, interest),
            other => other,
        }
    }

    /// Stops watching `fd`. An fd the kernel already dropped (closed) is not an error.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_DEL, fd, Interest::default()) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF)) => Ok(()),
            other => other,
        }
    }

    /// Waits for readiness, at most `timeout` seconds (`None`: no limit; 0: just look).
    /// The timeout is rounded up to whole milliseconds, so the caller never wakes before a
    /// deadline. `EINTR` is returned as an error of kind `Interrupted`: the caller decides
    /// whether a signal handler must run.
    pub fn wait(&self, events: &mut Vec<Event>, timeout: Option<f64>) -> io::Result<()> {
        const MAX_EVENTS: usize = 1024;
        let timeout_ms: libc::c_int = match timeout {
            None => -1,
            Some(t) if t <= 0.0 => 0,
            Some(t) => (t * 1e3).ceil().min(i32::MAX as f64) as libc::c_int,
        };
        // Not zeroed (12 KiB per turn of the loop): the kernel writes the first `n` entries,
        // and only those are read.
        let mut raw: [std::mem::MaybeUninit<libc::epoll_event>; MAX_EVENTS] =
            [std::mem::MaybeUninit::uninit(); MAX_EVENTS];
        // SAFETY: `raw` has room for MAX_EVENTS entries, which is what we tell the kernel.
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.epfd,
                raw.as_mut_ptr().cast(),
                MAX_EVENTS as libc::c_int,
                timeout_ms,
            )
        })? as usize;
        events.clear();
        for slot in &raw[..n.min(MAX_EVENTS)] {
            // SAFETY: epoll_wait initialised the first `n` entries.
            let ev = unsafe { slot.assume_init_read() };
            let bits = ev.events;
            let fd = ev.u64 as u32 as RawFd;
            events.push(Event {
                fd,
                readable: bits & !(libc::EPOLLOUT as u32) != 0,
                writable: bits & !(libc::EPOLLIN as u32) != 0,
            });
        }
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: `epfd` is owned by this Poller and closed exactly once.
        unsafe { libc::close(self.epfd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two fds.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
            0
        );
        (fds[0], fds[1])
    }

    fn close(fd: RawFd) {
        // SAFETY: test-owned fd.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn level_triggered_read() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.add(r, Interest::READ).unwrap();
        let mut evs = Vec::new();
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert!(evs.is_empty());
        // SAFETY: writing one byte from a valid buffer to our pipe.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
        for _ in 0..3 {
            // Level-triggered: reported again and again until read.
            p.wait(&mut evs, Some(1.0)).unwrap();
            assert_eq!(
                evs,
                vec![Event {
                    fd: r,
                    readable: true,
                    writable: false
                }]
            );
        }
        p.delete(r).unwrap();
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert!(evs.is_empty());
        close(r);
        close(w);
    }

    #[test]
    fn write_interest_and_modify() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.add(w, Interest::WRITE).unwrap();
        let mut evs = Vec::new();
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert_eq!(evs.len(), 1);
        assert!(evs[0].writable);
        p.modify(w, Interest::default()).unwrap();
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert!(evs.is_empty());
        close(r);
        close(w);
    }

    #[test]
    fn oneshot_reports_once_until_rearmed() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.add_oneshot(r, Interest::READ).unwrap();
        // SAFETY: writing one byte from a valid buffer to our pipe.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
        let mut evs = Vec::new();
        p.wait(&mut evs, Some(1.0)).unwrap();
        assert_eq!(evs.len(), 1);
        // Disarmed: still readable, not reported again, not even for a hang-up.
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert!(evs.is_empty());
        close(w);
        p.wait(&mut evs, Some(0.0)).unwrap();
        assert!(evs.is_empty());
        // Re-armed: reported again; the registration still exists (MOD, not ADD).
        p.modify_oneshot(r, Interest::READ).unwrap();
        p.wait(&mut evs, Some(1.0)).unwrap();
        assert_eq!(evs.len(), 1);
        assert!(evs[0].readable);
        // A number the kernel forgot (closed, reused) is added again by modify_oneshot.
        p.delete(r).unwrap();
        p.modify_oneshot(r, Interest::READ).unwrap();
        p.wait(&mut evs, Some(1.0)).unwrap();
        assert_eq!(evs.len(), 1);
        close(r);
    }

    #[test]
    fn hangup_is_readable() {
        let p = Poller::new().unwrap();
        let (r, w) = pipe();
        p.add(r, Interest::READ).unwrap();
        close(w);
        let mut evs = Vec::new();
        p.wait(&mut evs, Some(1.0)).unwrap();
        assert_eq!(evs.len(), 1);
        assert!(evs[0].readable);
        close(r);
    }

    #[test]
    fn bad_fd_is_an_error_not_a_panic() {
        let p = Poller::new().unwrap();
        let err = p.add(1_000_000, Interest::READ).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(p.delete(1_000_000).is_ok());
    }

    #[test]
    fn timeout_waits() {
        let p = Poller::new().unwrap();
        let mut evs = Vec::new();
        let t0 = crate::clock::monotonic();
        p.wait(&mut evs, Some(0.02)).unwrap();
        assert!(crate::clock::monotonic() - t0 >= 0.019);
    }
}
