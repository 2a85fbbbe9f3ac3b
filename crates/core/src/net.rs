//! net: address text checks for name resolution (no Python).
//!
//! [`is_numeric_host`] answers whether the C library's `inet_pton` parses a host string as an
//! IPv4 or IPv6 address: the same test `socket.inet_pton` makes, used to skip `getaddrinfo`'s
//! thread for hosts that need no lookup.

use std::ffi::{c_char, c_int, c_void, CString};

extern "C" {
    // POSIX inet_pton(3), from the C library (the libc crate does not declare it).
    fn inet_pton(af: c_int, src: *const c_char, dst: *mut c_void) -> c_int;
}

/// Address families [`is_numeric_host`] accepts.
pub const AF_INET: c_int = libc::AF_INET;
pub const AF_INET6: c_int = libc::AF_INET6;

/// True when `inet_pton(family, text)` succeeds. `family` other than AF_INET/AF_INET6, or text
/// holding a NUL byte, gives false.
pub fn is_numeric_host(family: c_int, text: &str) -> bool {
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    let Ok(c) = CString::new(text) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: `c` is NUL-terminated and outlives the call; `buf` holds 16 bytes, the size of
    // an in6_addr, the largest address inet_pton writes for AF_INET or AF_INET6.
    let r = unsafe { inet_pton(family, c.as_ptr(), buf.as_mut_ptr().cast()) };
    r == 1
}

/// True when `text` is a numeric IPv4 or IPv6 address.
pub fn is_numeric_any(text: &str) -> bool {
    is_numeric_host(AF_INET, text) || is_numeric_host(AF_INET6, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4() {
        assert!(is_numeric_host(AF_INET, "127.0.0.1"));
        assert!(is_numeric_host(AF_INET, "0.0.0.0"));
        assert!(!is_numeric_host(AF_INET, "127.1"));
        assert!(!is_numeric_host(AF_INET, "256.0.0.1"));
        assert!(!is_numeric_host(AF_INET, "localhost"));
        assert!(!is_numeric_host(AF_INET, "::1"));
        assert!(!is_numeric_host(AF_INET, "127.0.0.1\0"));
    }

    #[test]
    fn ipv6() {
        assert!(is_numeric_host(AF_INET6, "::1"));
        assert!(is_numeric_host(AF_INET6, "::ffff:127.0.0.1"));
        assert!(!is_numeric_host(AF_INET6, "::1%lo"));
        assert!(!is_numeric_host(AF_INET6, "127.0.0.1"));
        assert!(is_numeric_any("::"));
        assert!(!is_numeric_any("example.com"));
    }

    #[test]
    fn other_family() {
        assert!(!is_numeric_host(libc::AF_UNIX, "127.0.0.1"));
    }
}
