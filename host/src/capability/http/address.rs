//! Which addresses a plugin may connect to. A request's host is resolved by the host,
//! never the guest, and every address is checked before it is connected to: the one
//! checked is the one used, so a name that resolves to a public address when checked
//! and to a private one a moment later (DNS rebinding) gains nothing.

use crate::config::{OutboundGrant, canonical, in_network};
use std::net::IpAddr;

/// Ranges that are not the public internet: loopback, private, link-local (which
/// holds cloud metadata services, 169.254.169.254), carrier-grade NAT, unspecified,
/// multicast, broadcast and reserved. A plugin reaches one only through a grant that
/// names an address or range holding it.
const NON_PUBLIC: &[(&str, u8)] = &[
    ("0.0.0.0", 8),
    ("10.0.0.0", 8),
    ("100.64.0.0", 10),
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("172.16.0.0", 12),
    ("192.0.0.0", 24),
    ("192.0.2.0", 24),
    ("192.168.0.0", 16),
    ("198.18.0.0", 15),
    ("198.51.100.0", 24),
    ("203.0.113.0", 24),
    ("224.0.0.0", 4),
    ("240.0.0.0", 4),
    ("::", 128),
    ("::1", 128),
    // IPv4-compatible (deprecated) and NAT64 forms embed an IPv4 address.
    ("::", 96),
    ("64:ff9b::", 96),
    ("64:ff9b:1::", 48),
    ("100::", 64),
    ("2001:db8::", 32),
    ("fc00::", 7),
    ("fe80::", 10),
    ("fec0::", 10),
    ("ff00::", 8),
];

/// Whether `ip` is outside the public internet (see [`NON_PUBLIC`]). IPv4-mapped
/// IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4 address they carry.
pub fn is_non_public(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    NON_PUBLIC.iter().any(|(net, len)| {
        net.parse::<IpAddr>()
            .is_ok_and(|net| in_network(ip, net, *len))
    })
}

/// Whether a plugin with `grants` may connect to `ip`: a public address always (the
/// grant already covered the request's host), a non-public one only if one of its
/// grants names it.
pub fn may_connect(grants: &[OutboundGrant], ip: IpAddr) -> bool {
    !is_non_public(ip) || grants.iter().any(|g| g.names_address(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_form_of_a_private_address_is_non_public() {
        for text in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "fd00::1",
            "fe80::1",
            "255.255.255.255",
        ] {
            assert!(is_non_public(ip(text)), "{text}");
        }
        for text in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_non_public(ip(text)), "{text}");
        }
    }

    #[test]
    fn a_non_public_address_needs_a_grant_naming_it() {
        let grants = |list: &[&str]| {
            list.iter()
                .map(|g| OutboundGrant::parse(g).unwrap())
                .collect::<Vec<_>>()
        };
        assert!(!may_connect(
            &grants(&["http://localhost:80"]),
            ip("127.0.0.1")
        ));
        assert!(!may_connect(
            &grants(&["http://*:*"]),
            ip("::ffff:127.0.0.1")
        ));
        assert!(may_connect(
            &grants(&["http://127.0.0.1:9"]),
            ip("127.0.0.1")
        ));
        assert!(may_connect(
            &grants(&["http://127.0.0.1:9"]),
            ip("::ffff:127.0.0.1")
        ));
        assert!(may_connect(
            &grants(&["https://10.0.0.0/8"]),
            ip("10.9.9.9")
        ));
        assert!(may_connect(
            &grants(&["https://api.example"]),
            ip("1.1.1.1")
        ));
    }
}
