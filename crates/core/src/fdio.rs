//! Non-blocking reads and writes on file descriptors the caller owns (sockets and pipes), as
//! safe functions, and [`WriteBuffer`]: the queue of unsent bytes a transport flushes with one
//! vectored system call per readiness event.
//!
//! Errors come back as `io::Error`; `WouldBlock` and `Interrupted` mean "try again on readiness".

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use crate::net::InetAddr;

/// At most this many slices go to one writev/sendmsg (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;

fn check(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `read(2)` into `buf`; `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// One `readv(2)` into `head`, then `tail` once `head` is full; `Ok(0)` is end of file. The
/// count returned covers both: bytes past `head.len()` are at the start of `tail`.
pub fn read_split(fd: RawFd, head: &mut [u8], tail: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: tail.as_mut_ptr().cast(),
            iov_len: tail.len(),
        },
    ];
    // SAFETY: both iovecs point at slices valid for writes of their lengths, borrowed mutably
    // for the duration of the call.
    check(unsafe { libc::readv(fd, iov.as_ptr(), 2) })
}

/// `write(2)` of `data` (pipes).
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes for the duration of the call.
    check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })
}

/// `send(2)` of `data` with MSG_NOSIGNAL (a vanished peer gives EPIPE, never SIGPIPE).
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes for the duration of the call.
    check(unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) })
}

/// `shutdown(fd, SHUT_WR)`: half-close a socket.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain system call on an integer fd; no memory is passed.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_of(addr: &InetAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid (unspecified-family) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match *addr {
        InetAddr::V4 { ip, port } => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr type.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(ip);
            std::mem::size_of::<libc::sockaddr_in>()
        }
        InetAddr::V6 {
            ip,
            port,
            flowinfo,
            scope_id,
        } => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_flowinfo = flowinfo.to_be();
            sin6.sin6_addr.s6_addr = ip;
            sin6.sin6_scope_id = scope_id;
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `sendto(2)` of one datagram to an IPv4/IPv6 address.
pub fn send_to(fd: RawFd, data: &[u8], addr: &InetAddr) -> io::Result<usize> {
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: `data` is valid for `data.len()` bytes; `storage` holds a sockaddr of `len`
    // bytes, both alive during the call.
    check(unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            0,
            &storage as *const _ as *const libc::sockaddr,
            len,
        )
    })
}

/// `recvfrom(2)` of one datagram into `buf`: its length and the sender, when the sender is an
/// IPv4/IPv6 address (None for other families).
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<InetAddr>)> {
    // SAFETY: an all-zero sockaddr_storage is valid; recvfrom fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `storage`/`len` describe a
    // writable sockaddr buffer.
    let n = check(unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            &mut storage as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    })?;
    Ok((n, inet_addr_of(&storage)))
}

/// The IPv4/IPv6 address in `storage` (filled by the kernel), or None for other families.
fn inet_addr_of(storage: &libc::sockaddr_storage) -> Option<InetAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET).
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(InetAddr::V4 {
                ip: sin.sin_addr.s_addr.to_ne_bytes(),
                port: u16::from_be(sin.sin_port),
            })
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6).
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(InetAddr::V6 {
                ip: sin6.sin6_addr.s6_addr,
                port: u16::from_be(sin6.sin6_port),
                flowinfo: u32::from_be(sin6.sin6_flowinfo),
                scope_id: sin6.sin6_scope_id,
            })
        }
        _ => None,
    }
}

/// `accept4(2)` with `SOCK_CLOEXEC`, as Python's `socket.accept` makes it: the new
/// connection's fd (blocking, not inheritable) and its peer when that is an IPv4/IPv6 address.
pub fn accept(fd: RawFd) -> io::Result<(RawFd, Option<InetAddr>)> {
    // SAFETY: an all-zero sockaddr_storage is valid; accept4 fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage`/`len` describe a writable sockaddr buffer; the kernel checks `fd`.
    let conn = unsafe {
        libc::accept4(
            fd,
            &mut storage as *mut _ as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if conn < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((conn, inet_addr_of(&storage)))
}

/// Bytes waiting to be written, as a queue of chunks; the first may be partly sent.
#[derive(Default)]
pub struct WriteBuffer {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already written.
    head_sent: usize,
    len: usize,
}

impl WriteBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // Small writes join the last chunk (fewer slices per system call).
        if let Some(last) = self.chunks.back_mut() {
            if last.len() + data.len() <= 16 * 1024 {
                last.extend_from_slice(data);
                self.len += data.len();
                return;
            }
        }
        self.chunks.push_back(data.to_vec());
        self.len += data.len();
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.head_sent = 0;
        self.len = 0;
    }

    /// Drops the first `n` bytes (they were written).
    pub fn consume(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let rest = front.len() - self.head_sent;
            if n >= rest {
                n -= rest;
                self.chunks.pop_front();
                self.head_sent = 0;
            } else {
                self.head_sent += n;
                n = 0;
            }
        }
    }

    fn iovecs(&self) -> Vec<libc::iovec> {
        self.chunks
            .iter()
            .take(MAX_IOVECS)
            .enumerate()
            .map(|(i, c)| {
                let s = if i == 0 { &c[self.head_sent..] } else { &c[..] };
                libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                }
            })
            .collect()
    }

    /// Writes as much as the fd takes with one `writev(2)` (pipes) or `sendmsg(2)` with
    /// MSG_NOSIGNAL (sockets), and drops what was written. Returns the bytes written.
    pub fn flush(&mut self, fd: RawFd, socket: bool) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let iov = self.iovecs();
        let n = if socket {
            // SAFETY: a zeroed msghdr is valid (no name, no control data); msg_iov points at
            // `iov`, whose slices borrow `self.chunks`, alive and unchanged during the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            // SAFETY: `msg` is a valid msghdr as set up above.
            check(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) } as isize)?
        } else {
            // SAFETY: `iov` holds `iov.len()` valid slices borrowed from `self.chunks`.
            check(unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) })?
        };
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: room for two fds; the test closes them.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        (fds[0], fds[1])
    }

    fn close(fd: RawFd) {
        // SAFETY: the test owns the fd.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn accept_gives_the_peer_address_and_a_cloexec_fd() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        // Nobody waiting: would block.
        let err = accept(listener.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, peer) = loop {
            match accept(listener.as_raw_fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        let local = client.local_addr().unwrap();
        assert_eq!(
            peer,
            Some(InetAddr::V4 {
                ip: [127, 0, 0, 1],
                port: local.port()
            })
        );
        // SAFETY: plain fcntl query on the fd we own.
        let flags = unsafe { libc::fcntl(conn, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        close(conn);
        // An fd that is not open: the error, no panic. (Not `conn` again: the tests run in
        // parallel threads, and another one may have been given that number since.)
        let err = accept(1_000_000).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn read_split_fills_head_then_tail() {
        let (r, w) = pipe();
        let (mut head, mut tail) = ([0u8; 4], [0u8; 8]);
        // Nothing waiting: would block.
        let err = read_split(r, &mut head, &mut tail).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Less than the head: all of it lands there.
        assert_eq!(write(w, b"abc").unwrap(), 3);
        assert_eq!(read_split(r, &mut head, &mut tail).unwrap(), 3);
        assert_eq!(&head[..3], b"abc");
        // More than the head: the rest continues in the tail, in order.
        assert_eq!(write(w, b"hello world").unwrap(), 11);
        assert_eq!(read_split(r, &mut head, &mut tail).unwrap(), 11);
        assert_eq!(&head, b"hell");
        assert_eq!(&tail[..7], b"o world");
        // End of file.
        close(w);
        assert_eq!(read_split(r, &mut head, &mut tail).unwrap(), 0);
        close(r);
        // A bad fd fails (not the closed `r`: a test on another thread may reuse its number).
        assert!(read_split(-1, &mut head, &mut tail).is_err());
    }

    #[test]
    fn buffer_consumes_across_chunks() {
        let mut b = WriteBuffer::new();
        b.push(&[1; 20000]);
        b.push(&[2; 20000]);
        b.push(b"");
        assert_eq!(b.len(), 40000);
        b.consume(19999);
        assert_eq!(b.len(), 20001);
        b.push(&[3; 10]);
        b.consume(2);
        assert_eq!(b.len(), 20009);
        b.consume(100000);
        assert!(b.is_empty());
    }

    #[test]
    fn flush_writes_in_order_and_keeps_the_rest_when_full() {
        let (r, w) = pipe();
        let mut b = WriteBuffer::new();
        for i in 0..200u8 {
            b.push(&[i; 1000]);
        }
        let total = b.len();
        let mut written = 0;
        loop {
            match b.flush(w, false) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            if b.is_empty() {
                break;
            }
        }
        assert_eq!(written + b.len(), total);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match read(r, &mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if b.is_empty() {
                        break;
                    }
                    b.flush(w, false).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), total);
        for (i, chunk) in got.chunks(1000).enumerate() {
            assert!(chunk.iter().all(|&x| x == i as u8));
        }
        close(r);
        close(w);
    }

    #[test]
    fn datagrams_round_trip_with_the_sender_address() {
        let socket = |ty| {
            // SAFETY: plain socket creation; the test closes the fds.
            unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_NONBLOCK, 0) }
        };
        let a = socket(libc::SOCK_DGRAM);
        let b = socket(libc::SOCK_DGRAM);
        let any = InetAddr::V4 {
            ip: [127, 0, 0, 1],
            port: 0,
        };
        for fd in [a, b] {
            let (storage, len) = sockaddr_of(&any);
            // SAFETY: binds to a valid sockaddr_in.
            let r = unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) };
            assert_eq!(r, 0);
        }
        let port_of = |fd| {
            // SAFETY: zeroed storage, getsockname fills it.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: valid out-pointers.
            unsafe {
                libc::getsockname(fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len)
            };
            // SAFETY: an AF_INET socket's name is a sockaddr_in.
            let sin = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in) };
            u16::from_be(sin.sin_port)
        };
        let to_b = InetAddr::V4 {
            ip: [127, 0, 0, 1],
            port: port_of(b),
        };
        assert_eq!(send_to(a, b"ping", &to_b).unwrap(), 4);
        let mut buf = [0u8; 16];
        let (n, from) = loop {
            match recv_from(b, &mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(
            from,
            Some(InetAddr::V4 {
                ip: [127, 0, 0, 1],
                port: port_of(a)
            })
        );
        close(a);
        close(b);
    }

    #[test]
    fn write_to_closed_pipe_is_epipe_and_eof_reads_zero() {
        let (r, w) = pipe();
        close(r);
        let err = write(w, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        close(w);
        let (r, w) = pipe();
        close(w);
        assert_eq!(read(r, &mut [0u8; 4]).unwrap(), 0);
        close(r);
    }
}
