//! net: address text checks for name resolution (no Python).
//!
//! [`is_numeric_host`] answers whether the C library's `inet_pton` parses a host string as an
//! IPv4 or IPv6 address: the same test `socket.inet_pton` makes, used to skip `getaddrinfo`'s
//! thread for hosts that need no lookup.

use std::ffi::{c_char, c_int, c_void, CString};

extern "C" {
    // POSIX inet_pton(3)/inet_ntop(3), from the C library (the libc crate does not declare
    // them).
    fn inet_pton(af: c_int, src: *const c_char, dst: *mut c_void) -> c_int;
    fn inet_ntop(af: c_int, src: *const c_void, dst: *mut c_char, size: u32) -> *const c_char;
}

/// An IPv4 or IPv6 socket address, as `sockaddr_in`/`sockaddr_in6` hold it (host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InetAddr {
    V4 {
        ip: [u8; 4],
        port: u16,
    },
    V6 {
        ip: [u8; 16],
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
}

/// `inet_pton(family, text)`: the address bytes (4 or 16 used), or None.
pub fn parse_numeric(family: c_int, text: &str) -> Option<[u8; 16]> {
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let c = CString::new(text).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: `c` is NUL-terminated and outlives the call; `buf` holds 16 bytes, the size of
    // an in6_addr, the largest address inet_pton writes for AF_INET or AF_INET6.
    let r = unsafe { inet_pton(family, c.as_ptr(), buf.as_mut_ptr().cast()) };
    (r == 1).then_some(buf)
}

/// `inet_ntop`: the text form of an IPv4 (4 bytes) or IPv6 (16 bytes) address, exactly as the
/// C library (and so Python's socket module) writes it. IPv4 is written here (the C library
/// goes through `sprintf("%u.%u.%u.%u")`, some 5,000 instructions an address).
pub fn format_numeric(ip: &[u8]) -> String {
    if let [a, b, c, d] = *ip {
        return format_ipv4([a, b, c, d]);
    }
    format_with_libc(ip)
}

/// The dotted-decimal form of an IPv4 address (no leading zeros), as `inet_ntop` writes it.
fn format_ipv4(octets: [u8; 4]) -> String {
    let mut text = String::with_capacity(15);
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// `inet_ntop` itself.
fn format_with_libc(ip: &[u8]) -> String {
    let family = if ip.len() == 4 { AF_INET } else { AF_INET6 };
    let mut src = [0u8; 16];
    src[..ip.len().min(16)].copy_from_slice(&ip[..ip.len().min(16)]);
    let mut out = [0 as c_char; 64];
    // SAFETY: `src` holds a full in_addr/in6_addr; `out` has room for INET6_ADDRSTRLEN (46)
    // bytes and its length is passed.
    let p = unsafe {
        inet_ntop(
            family,
            src.as_ptr().cast(),
            out.as_mut_ptr(),
            out.len() as u32,
        )
    };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: inet_ntop wrote a NUL-terminated string into `out`.
    unsafe { std::ffi::CStr::from_ptr(out.as_ptr()) }
        .to_string_lossy()
        .into_owned()
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
    fn parse_and_format_round_trip() {
        let v4 = parse_numeric(AF_INET, "10.1.2.3").unwrap();
        assert_eq!(&v4[..4], &[10, 1, 2, 3]);
        assert_eq!(format_numeric(&v4[..4]), "10.1.2.3");
        let v6 = parse_numeric(AF_INET6, "::ffff:1.2.3.4").unwrap();
        assert_eq!(format_numeric(&v6), "::ffff:1.2.3.4");
        let v6 = parse_numeric(AF_INET6, "2001:db8:0:0:0:0:0:1").unwrap();
        assert_eq!(format_numeric(&v6), "2001:db8::1");
        assert!(parse_numeric(AF_INET, "example.org").is_none());
    }

    #[test]
    fn ipv4_formatted_as_the_c_library_does() {
        let mut samples: Vec<[u8; 4]> = Vec::new();
        for v in 0..=255u8 {
            samples.extend([
                [v, 0, 0, 0],
                [0, v, 0, 0],
                [0, 0, v, 0],
                [0, 0, 0, v],
                [v; 4],
            ]);
            samples.push([v, 255 - v, v / 3, v.wrapping_mul(7)]);
        }
        for ip in samples {
            assert_eq!(format_numeric(&ip), format_with_libc(&ip), "{ip:?}");
        }
        assert_eq!(format_numeric(&[192, 168, 0, 10]), "192.168.0.10");
    }

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
