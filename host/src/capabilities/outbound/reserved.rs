//! The address ranges a function reaches only through an allow-list entry
//! naming the address literally: loopback, link-local (cloud metadata),
//! private, shared, multicast and the other ranges that are not globally
//! reachable, in IPv4 and IPv6, and IPv6's forms of IPv4 addresses.
//!
//! Kept apart from the allow-list because it is a table of IANA's
//! registries, checked against every address a host name resolves to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// A range of addresses that a function reaches only through an allow-list
/// entry naming the address literally: not globally reachable, or the host's
/// own (loopback, link-local, private networks, cloud metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The range, e.g. `127.0.0.0/8`.
    pub range: ipnet::IpNet,
    /// What it is, e.g. `a loopback address`.
    pub what: &'static str,
    /// For an IPv6 form of an IPv4 address (mapped, NAT64, 6to4): which
    /// form, and the IPv4 address it stands for (whose range is `range`).
    pub embeds: Option<(&'static str, Ipv4Addr)>,
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((form, v4)) = self.embeds {
            write!(f, "the {form} form of {v4}, ")?;
        }
        write!(f, "{} in {}", self.what, self.range)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, what: &'static str) -> (Ipv4Net, &'static str) {
    (Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len), what)
}

const fn v6(segments: [u16; 8], len: u8, what: &'static str) -> (Ipv6Net, &'static str) {
    let [a, b, c, d, e, f, g, h] = segments;
    (
        Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len),
        what,
    )
}

/// IANA's special-purpose IPv4 ranges that are not globally reachable, plus
/// multicast and the reserved class E (RFC 6890 and its registry).
const RESERVED_V4: &[(Ipv4Net, &str)] = &[
    v4(0, 0, 0, 0, 8, "a \"this network\" (unspecified) address"),
    v4(10, 0, 0, 0, 8, "a private address"),
    v4(100, 64, 0, 0, 10, "a shared (carrier-grade NAT) address"),
    v4(127, 0, 0, 0, 8, "a loopback address"),
    v4(169, 254, 0, 0, 16, "a link-local address (cloud metadata)"),
    v4(172, 16, 0, 0, 12, "a private address"),
    v4(192, 0, 0, 0, 24, "an IETF protocol assignment"),
    v4(192, 0, 2, 0, 24, "a documentation address"),
    v4(192, 88, 99, 0, 24, "a 6to4 relay anycast address"),
    v4(192, 168, 0, 0, 16, "a private address"),
    v4(198, 18, 0, 0, 15, "a benchmarking address"),
    v4(198, 51, 100, 0, 24, "a documentation address"),
    v4(203, 0, 113, 0, 24, "a documentation address"),
    v4(224, 0, 0, 0, 4, "a multicast address"),
    v4(240, 0, 0, 0, 4, "a reserved address (class E, broadcast)"),
];

/// The same for IPv6 (the forms that carry an IPv4 address are handled
/// before this table; the first match names the range).
const RESERVED_V6: &[(Ipv6Net, &str)] = &[
    v6([0; 8], 128, "an unspecified address"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "a loopback address"),
    v6([0; 8], 96, "an IPv4-compatible address (deprecated)"),
    v6(
        [0, 0, 0, 0, 0xffff, 0, 0, 0],
        96,
        "an IPv4-translated address",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "a local-use NAT64 address",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "a discard-only address"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "a Teredo address"),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "a benchmarking address"),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "an ORCHID address (deprecated)",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "a documentation address",
    ),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "a documentation address"),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "a segment-routing (SRv6) address",
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "a unique local (private) address",
    ),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "a link-local address"),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "a site-local address (deprecated)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "a multicast address"),
];

/// Whether `ip` is in a reserved range, and which; `None` for a globally
/// reachable address. An IPv6 address that carries an IPv4 one (mapped
/// `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) is
/// judged by the IPv4 address it reaches.
pub fn reserved(ip: IpAddr) -> Option<Reserved> {
    let v6 = match ip {
        IpAddr::V4(v4) => return reserved_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    let embedded = if let Some(v4) = v6.to_ipv4_mapped() {
        Some(("IPv4-mapped", v4))
    } else if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        Some(("NAT64", Ipv4Addr::new(o[12], o[13], o[14], o[15])))
    } else if o[..2] == [0x20, 0x02] {
        Some(("6to4", Ipv4Addr::new(o[2], o[3], o[4], o[5])))
    } else {
        None
    };
    if let Some((form, v4)) = embedded {
        return reserved_v4(v4).map(|r| Reserved {
            embeds: Some((form, v4)),
            ..r
        });
    }
    RESERVED_V6
        .iter()
        .find(|(net, _)| net.contains(&v6))
        .map(|(net, what)| Reserved {
            range: (*net).into(),
            what,
            embeds: None,
        })
}

fn reserved_v4(ip: Ipv4Addr) -> Option<Reserved> {
    RESERVED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(net, what)| Reserved {
            range: (*net).into(),
            what,
            embeds: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The range an address falls in, or "global".
    fn range_of(s: &str) -> String {
        reserved(ip(s)).map_or("global".into(), |r| r.range.to_string())
    }

    #[test]
    fn every_reserved_ipv4_range_is_refused_at_both_ends() {
        for (net, _) in RESERVED_V4 {
            let first = net.network();
            let last = net.broadcast();
            for addr in [first, last] {
                assert_eq!(range_of(&addr.to_string()), net.to_string(), "{addr}");
            }
        }
        for (addr, range) in [
            ("0.0.0.0", "0.0.0.0/8"),
            ("10.0.0.5", "10.0.0.0/8"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.100.100.200", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("127.255.255.254", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.0.2.1", "192.0.2.0/24"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("198.19.0.1", "198.18.0.0/15"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
        ] {
            assert_eq!(range_of(addr), range, "{addr}");
        }
        // Just outside the ranges, and ordinary public addresses.
        for addr in [
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
        ] {
            assert_eq!(range_of(addr), "global", "{addr}");
        }
    }

    #[test]
    fn every_reserved_ipv6_range_is_refused() {
        for (addr, range) in [
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("::5", "::/96"),
            ("::ffff:0:a00:5", "::ffff:0:0:0/96"),
            ("64:ff9b:1::1", "64:ff9b:1::/48"),
            ("100::1", "100::/64"),
            ("2001::1", "2001::/32"),
            ("2001:2::1", "2001:2::/48"),
            ("2001:10::1", "2001:10::/28"),
            ("2001:db8::1", "2001:db8::/32"),
            ("3fff::1", "3fff::/20"),
            ("5f00::1", "5f00::/16"),
            ("fc00::1", "fc00::/7"),
            ("fd12:3456::1", "fc00::/7"),
            ("fe80::1", "fe80::/10"),
            ("febf::1", "fe80::/10"),
            ("fec0::1", "fec0::/10"),
            ("ff02::1", "ff00::/8"),
        ] {
            assert_eq!(range_of(addr), range, "{addr}");
        }
        for addr in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "fbff::1",
            "fe7f::1",
        ] {
            assert_eq!(range_of(addr), "global", "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
        for (addr, v4, range, form) in [
            (
                "::ffff:127.0.0.1",
                "127.0.0.1",
                "127.0.0.0/8",
                "IPv4-mapped",
            ),
            (
                "::ffff:169.254.169.254",
                "169.254.169.254",
                "169.254.0.0/16",
                "IPv4-mapped",
            ),
            ("::ffff:10.0.0.5", "10.0.0.5", "10.0.0.0/8", "IPv4-mapped"),
            (
                "::ffff:172.16.0.1",
                "172.16.0.1",
                "172.16.0.0/12",
                "IPv4-mapped",
            ),
            (
                "::ffff:192.168.0.1",
                "192.168.0.1",
                "192.168.0.0/16",
                "IPv4-mapped",
            ),
            (
                "::ffff:100.64.0.1",
                "100.64.0.1",
                "100.64.0.0/10",
                "IPv4-mapped",
            ),
            ("::ffff:0.0.0.0", "0.0.0.0", "0.0.0.0/8", "IPv4-mapped"),
            ("64:ff9b::127.0.0.1", "127.0.0.1", "127.0.0.0/8", "NAT64"),
            (
                "64:ff9b::a9fe:a9fe",
                "169.254.169.254",
                "169.254.0.0/16",
                "NAT64",
            ),
            ("2002:7f00:1::", "127.0.0.1", "127.0.0.0/8", "6to4"),
            ("2002:c0a8:101::1", "192.168.1.1", "192.168.0.0/16", "6to4"),
        ] {
            let r = reserved(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
            assert_eq!(r.range.to_string(), range, "{addr}");
            assert_eq!(r.embeds, Some((form, v4.parse().unwrap())), "{addr}");
            assert!(r.to_string().contains(v4), "{r}");
        }
        // The same forms of public addresses are public.
        for addr in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(range_of(addr), "global", "{addr}");
        }
        let r = reserved(ip("169.254.169.254")).unwrap();
        assert_eq!(
            r.to_string(),
            "a link-local address (cloud metadata) in 169.254.0.0/16"
        );
    }
}
