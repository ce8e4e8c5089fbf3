//! The `http-acl` filter of kgateway, without Envoy: config parsing and client IP matching.
//!
//! Config (JSON, unknown fields ignored):
//!
//! ```json
//! {"defaultAction": "allow" | "deny",
//!  "rules"?: [{"name"?, "cidrs": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], "action": "allow" | "deny"}],
//!  "denyResponse"?: {"statusCode"?, "headers"?: [{"name", "value"}], "blockedByHeaderName"?}}
//! ```
//!
//! Choices made where kgateway's contract is silent:
//! - `defaultAction` is required (kgateway's API marks it required and always sends it, even for the
//!   listener-level `{"defaultAction":"allow"}`); `{}` is rejected.
//! - Actions are case-sensitive (`allow`/`deny`), as in kgateway's API enum.
//! - `rules[].cidrs` is required and must not be empty: a rule that can never match is a mistake.
//! - `statusCode` must be in 200..=599 (default 403): a 1xx is not a final response, so a local
//!   reply with one would leave the client hanging.
//! - Header names (and `blockedByHeaderName`) must be RFC 9110 tokens; header values and rule names
//!   (which may end up in a header value) must not contain CR, LF, NUL or other control characters
//!   except horizontal tab. Checked at config time so a deny can never emit a broken response.
//! - A config CIDR inside the IPv4-mapped range `::ffff:0:0/96` (prefix >= 96) is stored as the
//!   equivalent IPv4 CIDR, since mapped clients are matched as IPv4. A shorter IPv6 prefix that
//!   covers that range (e.g. `::/0`) does not match IPv4 or mapped clients.
//! - The client address accepts `ip:port`, `[ipv6]:port`, `[ipv6]`, a bare IP and an IPv6 zone
//!   (`fe80::1%eth0`, the zone is ignored); anything else (e.g. a unix socket path) is `unknown-ip`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

/// Filter name under which kgateway configures this filter.
pub const FILTER_NAME: &str = "http-acl";
/// Counter incremented on every deny.
pub const BLOCKED_COUNTER: &str = "dev.kgateway.http.acl.blocked";
/// Dynamic metadata namespace set on every deny.
pub const METADATA_NAMESPACE: &str = "dev.kgateway.http.acl";
/// Dynamic metadata key (in [`METADATA_NAMESPACE`]) holding the blocked-by value.
pub const METADATA_KEY_BLOCKED_BY: &str = "blocked-by";
/// Response code details of the local reply.
pub const DENY_DETAILS: &str = "http-acl: denied by policy";
/// Body of the local reply.
pub const DENY_BODY: &str = "";
/// Status of the local reply when `denyResponse.statusCode` is absent.
pub const DEFAULT_DENY_STATUS: u32 = 403;

/// Blocked-by value for a matched rule that has no name.
pub const BLOCKED_BY_UNNAMED_RULE: &str = "rule";
/// Blocked-by value when no rule matched and `defaultAction` is `deny`.
pub const BLOCKED_BY_DEFAULT: &str = "default";
/// Blocked-by value when the client address is missing or unparseable.
pub const BLOCKED_BY_UNKNOWN_IP: &str = "unknown-ip";

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow,
    /// `blocked_by`: the rule name, [`BLOCKED_BY_UNNAMED_RULE`], [`BLOCKED_BY_DEFAULT`] or
    /// [`BLOCKED_BY_UNKNOWN_IP`]. Goes into the metadata and the blocked-by header.
    Deny {
        blocked_by: &'a str,
    },
}

/// The local reply for a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse<'a> {
    pub status: u32,
    /// Configured headers in order, then the blocked-by header when configured.
    pub headers: Vec<(&'a str, &'a str)>,
}

/// Rejected config: `field` is a path such as `rules[2].cidrs[0]` (None for whole-document errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfigError {
    pub field: Option<String>,
    pub message: String,
}

impl AclConfigError {
    fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for AclConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "http-acl config: {field}: {}", self.message),
            None => write!(f, "http-acl config: {}", self.message),
        }
    }
}

impl std::error::Error for AclConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    default_action: Action,
    #[serde(default)]
    rules: Option<Vec<RawRule>>,
    #[serde(default)]
    deny_response: Option<RawDenyResponse>,
}

#[derive(Deserialize)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    cidrs: Vec<String>,
    action: Action,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDenyResponse {
    #[serde(default)]
    status_code: Option<i64>,
    #[serde(default)]
    headers: Option<Vec<RawHeader>>,
    #[serde(default)]
    blocked_by_header_name: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    name: String,
    value: String,
}

/// Entry point for parsing; the result is an immutable [`AclPolicy`].
pub struct AclConfig;

impl AclConfig {
    pub fn from_json(bytes: &[u8]) -> Result<AclPolicy, AclConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| AclConfigError {
            field: None,
            message: format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
        })?;
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = if inner.is_syntax() || inner.is_eof() {
                format!("invalid JSON: {inner}")
            } else {
                inner.to_string()
            };
            AclConfigError {
                // "." is serde_path_to_error's name for the document root.
                field: (path != ".").then_some(path),
                message,
            }
        })?;
        // Trailing garbage such as `{...}}` is a broken config, not something to ignore.
        de.end().map_err(|e| AclConfigError {
            field: None,
            message: format!("invalid JSON: {e}"),
        })?;
        AclPolicy::build(raw)
    }
}

/// Where a table entry leads: the action and which rule it came from.
#[derive(Debug, Clone, Copy)]
struct Target {
    action: Action,
    rule: usize,
}

/// Longest-prefix table for one address family: one exact-match map per prefix length in use,
/// probed from the longest length down, so a lookup costs at most 33 (IPv4) or 129 (IPv6) hash
/// probes and usually a handful, whatever the number of rules.
#[derive(Debug)]
struct PrefixTable<K> {
    /// Sorted by prefix length, longest first; only lengths that have entries.
    levels: Vec<(u8, HashMap<K, Target, BuildMixHasher>)>,
}

/// Cheap multiplicative hash for integer keys. SipHash's flood resistance buys nothing here: the
/// tables are fixed at config time, so a client can only probe them, never fill them.
#[derive(Default, Clone, Copy)]
struct BuildMixHasher;

impl std::hash::BuildHasher for BuildMixHasher {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(0)
    }
}

struct MixHasher(u64);

impl MixHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        // Masked prefixes have long runs of zero low bits and a multiply only carries upward;
        // hashbrown picks buckets from the low bits and tags from the top, so fold high into low.
        let x = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(buf));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
}

trait Bits: Copy + Eq + std::hash::Hash {
    const WIDTH: u8;
    fn masked(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
}

impl<K: Bits> PrefixTable<K> {
    fn build(entries: Vec<(K, u8, Target)>) -> Self {
        let mut by_len: Vec<Option<HashMap<K, Target, BuildMixHasher>>> =
            (0..=K::WIDTH).map(|_| None).collect();
        // Inserting in config order makes the last occurrence of a CIDR win.
        for (key, len, target) in entries {
            by_len[usize::from(len)]
                .get_or_insert_with(HashMap::default)
                .insert(key, target);
        }
        let levels = by_len
            .into_iter()
            .enumerate()
            .rev()
            .filter_map(|(len, map)| map.map(|m| (len as u8, m)))
            .collect();
        Self { levels }
    }

    fn lookup(&self, addr: K) -> Option<Target> {
        self.levels
            .iter()
            .find_map(|(len, map)| map.get(&addr.masked(*len)).copied())
    }
}

/// A parsed `http-acl` config, ready to decide requests. Immutable and `Send + Sync`.
#[derive(Debug)]
pub struct AclPolicy {
    default_action: Action,
    /// Blocked-by value per rule, in config order.
    rule_names: Vec<Cow<'static, str>>,
    v4: PrefixTable<u32>,
    v6: PrefixTable<u128>,
    status: u32,
    headers: Vec<(String, String)>,
    blocked_by_header: Option<String>,
}

impl AclPolicy {
    fn build(raw: RawConfig) -> Result<Self, AclConfigError> {
        let rules = raw.rules.unwrap_or_default();
        let mut rule_names = Vec::with_capacity(rules.len());
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, rule) in rules.into_iter().enumerate() {
            let name: Cow<'static, str> = match rule.name {
                Some(name) => {
                    check_header_value(&name).map_err(|m| {
                        AclConfigError::at(format!("rules[{i}].name"), format!("{name:?} {m}"))
                    })?;
                    Cow::Owned(name)
                }
                None => Cow::Borrowed(BLOCKED_BY_UNNAMED_RULE),
            };
            rule_names.push(name);
            if rule.cidrs.is_empty() {
                return Err(AclConfigError::at(
                    format!("rules[{i}].cidrs"),
                    "must list at least one CIDR or IP",
                ));
            }
            let target = Target {
                action: rule.action,
                rule: i,
            };
            for (j, text) in rule.cidrs.iter().enumerate() {
                let net = parse_cidr(text)
                    .map_err(|m| AclConfigError::at(format!("rules[{i}].cidrs[{j}]"), m))?;
                match net {
                    IpNet::V4(n) => v4.push((u32::from(n.addr()), n.prefix_len(), target)),
                    IpNet::V6(n) => v6.push((u128::from(n.addr()), n.prefix_len(), target)),
                }
            }
        }

        let mut status = DEFAULT_DENY_STATUS;
        let mut headers = Vec::new();
        let mut blocked_by_header = None;
        if let Some(dr) = raw.deny_response {
            if let Some(code) = dr.status_code {
                if !(200..=599).contains(&code) {
                    return Err(AclConfigError::at(
                        "denyResponse.statusCode",
                        format!("{code} is not a valid final HTTP status (200..=599)"),
                    ));
                }
                status = code as u32;
            }
            for (i, h) in dr.headers.unwrap_or_default().into_iter().enumerate() {
                check_header_name(&h.name).map_err(|m| {
                    AclConfigError::at(
                        format!("denyResponse.headers[{i}].name"),
                        format!("{:?} {m}", h.name),
                    )
                })?;
                check_header_value(&h.value).map_err(|m| {
                    AclConfigError::at(
                        format!("denyResponse.headers[{i}].value"),
                        format!("{:?} {m}", h.value),
                    )
                })?;
                headers.push((h.name, h.value));
            }
            if let Some(name) = dr.blocked_by_header_name {
                check_header_name(&name).map_err(|m| {
                    AclConfigError::at("denyResponse.blockedByHeaderName", format!("{name:?} {m}"))
                })?;
                blocked_by_header = Some(name);
            }
        }

        Ok(Self {
            default_action: raw.default_action,
            rule_names,
            v4: PrefixTable::build(v4),
            v6: PrefixTable::build(v6),
            status,
            headers,
            blocked_by_header,
        })
    }

    /// Decides on a request from Envoy's `source.address` attribute (`10.1.2.3:5555`,
    /// `[2001:db8::1]:443` or a bare IP). Missing or unparseable: deny as `unknown-ip`.
    pub fn decide(&self, client: Option<&str>) -> Decision<'_> {
        match client.and_then(parse_client) {
            Some(ip) => self.decide_ip(ip),
            None => Decision::Deny {
                blocked_by: BLOCKED_BY_UNKNOWN_IP,
            },
        }
    }

    /// Decides on an already parsed client IP.
    pub fn decide_ip(&self, ip: IpAddr) -> Decision<'_> {
        let hit = match canonical(ip) {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        };
        match hit {
            Some(Target {
                action: Action::Allow,
                ..
            }) => Decision::Allow,
            Some(Target {
                action: Action::Deny,
                rule,
            }) => Decision::Deny {
                blocked_by: &self.rule_names[rule],
            },
            None => match self.default_action {
                Action::Allow => Decision::Allow,
                Action::Deny => Decision::Deny {
                    blocked_by: BLOCKED_BY_DEFAULT,
                },
            },
        }
    }

    /// The local reply for `decision`, or None when it allows. Body is [`DENY_BODY`], details
    /// [`DENY_DETAILS`].
    pub fn deny_response<'a>(&'a self, decision: &Decision<'a>) -> Option<DenyResponse<'a>> {
        let Decision::Deny { blocked_by } = decision else {
            return None;
        };
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(self.headers.len() + 1);
        headers.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if let Some(name) = &self.blocked_by_header {
            headers.push((name.as_str(), blocked_by));
        }
        Some(DenyResponse {
            status: self.status,
            headers,
        })
    }

    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// Status of the local reply on deny.
    pub fn deny_status(&self) -> u32 {
        self.status
    }
}

/// Parses one config entry: a CIDR or a bare IP (/32 or /128). Host bits must be zero.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = if text.contains('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| format!("{text:?} is not a valid CIDR"))?;
        if net.addr() != net.network() {
            return Err(format!(
                "{text:?} has host bits set (did you mean {}/{}?)",
                net.network(),
                net.prefix_len()
            ));
        }
        net
    } else {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| format!("{text:?} is not a valid IP address or CIDR"))?;
        IpNet::from(ip)
    };
    Ok(match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            // Mapped clients are matched as IPv4, so a mapped rule must live in the IPv4 table.
            Some(v4) => IpNet::V4(
                Ipv4Net::new(v4, n.prefix_len() - 96).expect("prefix_len - 96 is at most 32"),
            ),
            None => IpNet::V6(n),
        },
        other => other,
    })
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

/// Parses Envoy's `source.address`: `ip:port`, `[v6]:port`, `[v6]`, bare IP, v6 with a zone.
fn parse_client(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // `[v6]`, `[v6%zone]:port`, `v6%zone`: keep the address, drop the port and zone.
    let host = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
                return None;
            }
            host
        }
        None => text,
    };
    let host = host.split_once('%').map_or(host, |(h, _)| h);
    host.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok()
}

/// RFC 9110 token: what an HTTP/1 field name may contain.
fn check_header_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)")
    }
}

/// A field value must not smuggle CR/LF/NUL or other controls (tab is allowed).
fn check_header_value(value: &str) -> Result<(), &'static str> {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        Ok(())
    } else {
        Err("contains CR, LF, NUL or another control character")
    }
}

#[cfg(test)]
mod tests;
