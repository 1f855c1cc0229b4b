//! Outbound HTTP in `host.toml`: the `[http]` section, each plugin's `outbound` grants
//! and its `[plugins.<name>.secrets]`.
//!
//! A grant is `scheme://host[:port]`, Spin's syntax: the scheme is `http` or `https`;
//! the host is a name (`api.mail.example`), a wildcard of names (`*.gateway.example`,
//! which does not cover `gateway.example` itself), an address (`127.0.0.1`,
//! `[::1]`), a range (`10.0.0.0/8`, `[fd00::/8]`) or `*` (any host); the port is a
//! number or `*`, and without one the scheme's default (80, 443). Only a grant that
//! names an address or a range lets a plugin reach a loopback, private, link-local or
//! otherwise non-public address: a name never does, whatever it resolves to.

use super::validate::{ConfigError, invalid};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[http]`: the client plugins' outbound requests go through.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A PEM bundle of extra certificate authorities trusted beside the system's roots
    /// (for internal services); relative to this file.
    pub ca_file: Option<PathBuf>,
    /// How long an idle pooled connection is kept, in ms.
    pub idle_timeout_ms: u64,
    /// Most idle connections kept per plugin and origin.
    pub max_idle_per_origin: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            idle_timeout_ms: 90_000,
            max_idle_per_origin: 32,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        super::validate::check("http.idle_timeout_ms", self.idle_timeout_ms, 0, 3_600_000)?;
        super::validate::check(
            "http.max_idle_per_origin",
            self.max_idle_per_origin,
            0,
            10_000,
        )?;
        Ok(())
    }

    /// Checks that `ca_file` holds a certificate (after paths are resolved).
    pub(super) fn check_ca_file(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.ca_file {
            let text = std::fs::read(path).map_err(|e| {
                invalid(
                    "http.ca_file",
                    format!("could not be read ({}): {e}", path.display()),
                )
            })?;
            if !text
                .windows(27)
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(invalid(
                    "http.ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// The scheme of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantScheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

impl GrantScheme {
    /// The port a request without one goes to.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The hosts a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantHost {
    /// `*`: any name or address (non-public addresses still refused).
    Any,
    /// One name, lower case, without a trailing dot.
    Name(String),
    /// `*.suffix`: the names under `suffix` (stored as `.suffix`).
    Subdomains(String),
    /// An address or a range, written as `addr/prefix`.
    Network(IpAddr, u8),
}

/// One parsed `outbound` grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundGrant {
    /// As written in `host.toml`: the origin label of the metrics.
    pub text: Arc<str>,
    /// Its scheme.
    pub scheme: GrantScheme,
    /// Its hosts.
    pub host: GrantHost,
    /// Its port; `None` is any port.
    pub port: Option<u16>,
}

impl OutboundGrant {
    /// Parses one grant, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("must be scheme://host[:port], e.g. \"https://api.example.com\"")?;
        let scheme = match scheme {
            "http" => GrantScheme::Http,
            "https" => GrantScheme::Https,
            other => return Err(format!("scheme {other:?} is neither http nor https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['?', '#', '@']) {
            return Err("must be scheme://host[:port] with no user, query or fragment".into());
        }
        // `[v6]` or `[v6/len]` with an optional `:port` after the bracket; otherwise
        // the port is what follows the last `:`.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (inside, after) = inner.split_once(']').ok_or("an unclosed [ in the host")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after ]")?),
            };
            (inside, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("port {p:?} is not 1-65535 or *"))?,
            ),
        };
        if port == Some(0) {
            return Err("port 0 is not a port".into());
        }
        Ok(Self {
            text: Arc::from(text),
            scheme,
            host: parse_host(host)?,
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is covered. `host` is the request's
    /// host, lower case, without brackets.
    pub fn covers(&self, scheme: GrantScheme, host: &str, port: u16) -> bool {
        if scheme != self.scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            GrantHost::Any => true,
            GrantHost::Name(name) => name == host.trim_end_matches('.'),
            GrantHost::Subdomains(suffix) => {
                let host = host.trim_end_matches('.');
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            GrantHost::Network(net, len) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| in_network(ip, *net, *len)),
        }
    }

    /// Whether this grant names `ip` explicitly (an address or a range holding it),
    /// which lets a plugin reach a non-public address.
    pub fn names_address(&self, ip: IpAddr) -> bool {
        matches!(&self.host, GrantHost::Network(net, len) if in_network(ip, *net, *len))
    }
}

fn parse_host(host: &str) -> Result<GrantHost, String> {
    if host == "*" {
        return Ok(GrantHost::Any);
    }
    if let Some((addr, len)) = host.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} before / is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("prefix length {len:?} is not 0-{max}"))?;
        return Ok(GrantHost::Network(ip, len));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        return Ok(GrantHost::Network(ip, len));
    }
    let lower = host.to_ascii_lowercase();
    let (name, wildcard) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (lower.as_str(), false),
    };
    let name = name.trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "host {host:?} is not a name, *.name, an address, a range or *"
        ));
    }
    Ok(if wildcard {
        GrantHost::Subdomains(format!(".{name}"))
    } else {
        GrantHost::Name(name.to_string())
    })
}

/// Whether `ip` lies in `net/len`; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// counts as its IPv4 address, on either side (a mapped network of length 96 + n is
/// the IPv4 network of length n).
pub fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (net, len) = match net {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if len >= 96 => (IpAddr::V4(v4), len - 96),
            _ => (net, len),
        },
        v4 => (v4, len),
    };
    let ip = match (canonical(ip), net) {
        // A mapped network shorter than 96 bits holds mapped addresses as IPv6.
        (IpAddr::V4(v4), IpAddr::V6(_)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (ip, _) => ip,
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let shift = 32u32.saturating_sub(u32::from(len));
            let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let shift = 128u32.saturating_sub(u32::from(len));
            let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Where a secret's value comes from: `{ env = "MAIL_API_KEY" }` or
/// `{ file = "secrets/mail" }` (relative to this file; one trailing newline is
/// dropped). The value is read by the host at start and on every reload, and is
/// never printed: the effective configuration shows only where it comes from.
#[derive(Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// An environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The value, once read.
    #[serde(skip)]
    pub value: SecretValue,
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRef")
            .field("env", &self.env)
            .field("file", &self.file)
            .field("value", &self.value)
            .finish()
    }
}

/// A secret's value: shown as `***` by `Debug`, never serialized.
#[derive(Clone, Default, PartialEq)]
pub struct SecretValue(Option<Arc<str>>);

impl SecretValue {
    /// The value (empty before it was read).
    pub fn expose(&self) -> &str {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl SecretRef {
    /// A secret given as its value (the test kit's; a `host.toml` names its source).
    pub fn literal(value: &str) -> Self {
        Self {
            env: None,
            file: None,
            value: SecretValue(Some(Arc::from(value))),
        }
    }

    /// Reads the value; the error names `field` and what to do.
    pub(super) fn load(&mut self, field: &str) -> Result<(), ConfigError> {
        let value = match (&self.env, &self.file) {
            (None, None) if self.value.0.is_some() => return Ok(()),
            (Some(variable), None) => match std::env::var(variable) {
                Ok(value) if !value.is_empty() => value,
                _ => {
                    return Err(invalid(
                        field,
                        format!(
                            "names the environment variable {variable}, which is not set (or empty)"
                        ),
                    ));
                }
            },
            (None, Some(path)) => {
                let mut value = std::fs::read_to_string(path).map_err(|e| {
                    invalid(field, format!("could not read {}: {e}", path.display()))
                })?;
                if value.ends_with('\n') {
                    value.pop();
                    if value.ends_with('\r') {
                        value.pop();
                    }
                }
                if value.is_empty() {
                    return Err(invalid(field, format!("{} is empty", path.display())));
                }
                value
            }
            _ => {
                return Err(invalid(
                    field,
                    "must name exactly one of env = \"VARIABLE\" or file = \"path\"",
                ));
            }
        };
        self.value = SecretValue(Some(Arc::from(value)));
        Ok(())
    }

    /// Makes a relative `file` absolute against `base`.
    pub(super) fn resolve_path(&mut self, base: &Path) {
        if let Some(file) = &mut self.file
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(grant: &str, scheme: GrantScheme, host: &str, port: u16) -> bool {
        OutboundGrant::parse(grant)
            .unwrap()
            .covers(scheme, host, port)
    }

    #[test]
    fn grants_match_scheme_host_and_port() {
        use GrantScheme::*;
        assert!(covers(
            "https://api.mail.example",
            Https,
            "api.mail.example",
            443
        ));
        assert!(!covers(
            "https://api.mail.example",
            Http,
            "api.mail.example",
            80
        ));
        assert!(!covers(
            "https://api.mail.example",
            Https,
            "api.mail.example",
            8443
        ));
        assert!(covers(
            "https://*.gw.example:8443",
            Https,
            "eu.gw.example",
            8443
        ));
        assert!(!covers(
            "https://*.gw.example:8443",
            Https,
            "gw.example",
            8443
        ));
        assert!(!covers(
            "https://*.gw.example:8443",
            Https,
            "evilgw.example",
            8443
        ));
        assert!(covers("http://127.0.0.1:9000", Http, "127.0.0.1", 9000));
        assert!(covers("http://127.0.0.0/8:*", Http, "127.9.9.9", 1));
        assert!(covers("http://[::1]:9000", Http, "::1", 9000));
        assert!(covers("http://*:*", Http, "anything", 7));
        assert!(covers(
            "https://API.Mail.Example/",
            Https,
            "api.mail.example.",
            443
        ));
    }

    #[test]
    fn malformed_grants_say_why() {
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://",
            "https://user@x",
            "https://x:0",
            "https://x:99999",
            "https://10.0.0.0/33",
            "https://a..b",
            "https://x/path?q",
        ] {
            assert!(OutboundGrant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_address_grants_name_addresses() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            OutboundGrant::parse("http://127.0.0.0/8")
                .unwrap()
                .names_address(lo)
        );
        assert!(
            OutboundGrant::parse("http://[::ffff:127.0.0.1]")
                .unwrap()
                .names_address(lo)
        );
        assert!(
            !OutboundGrant::parse("http://localhost")
                .unwrap()
                .names_address(lo)
        );
        assert!(!OutboundGrant::parse("http://*").unwrap().names_address(lo));
    }

    #[test]
    fn mapped_networks_and_addresses_match_their_ipv4_form() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("127.0.0.1"), ip("::ffff:127.0.0.0"), 104));
        assert!(in_network(ip("::ffff:127.0.0.1"), ip("127.0.0.0"), 8));
        assert!(!in_network(ip("10.0.0.1"), ip("::ffff:127.0.0.1"), 128));
        assert!(in_network(ip("10.0.0.1"), ip("::"), 0));
        assert!(in_network(ip("10.0.0.1"), ip("0.0.0.0"), 0));
        // Every prefix length of either family, against either family: no overflow.
        for len in 0..=128u8 {
            for net in ["::ffff:127.0.0.1", "::1", "fd00::"] {
                let _ = in_network(ip("127.0.0.1"), ip(net), len);
                let _ = in_network(ip("::1"), ip(net), len);
            }
        }
        for len in 0..=32u8 {
            let _ = in_network(ip("::ffff:10.0.0.1"), ip("10.0.0.0"), len);
        }
    }
}
