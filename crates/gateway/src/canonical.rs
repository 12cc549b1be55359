//! The canonical request target: the one path that is matched against the routes and the
//! one path that is forwarded upstream, so what was priced is what is served.
//!
//! Upstreams normalise paths before they route them (Express ignores case and a trailing
//! slash, Go's `ServeMux`, Werkzeug, Starlette and Tomcat route on the decoded path, Tomcat
//! strips `;params` and resolves `..;`). A path the gateway matched one way and the upstream
//! reads another is a priced resource served for free. So the gateway computes one target
//! before matching, and every spelling an upstream might resolve differently is either
//! brought to that target or refused:
//! - percent-encoded unreserved characters (letters, digits, `-`, `_`, `~`) are decoded
//!   (RFC 3986 §6.2.2.2), and the hex digits of the encodings that remain are upper-cased;
//! - encodings of path-significant characters (`/`, `\`, `.`, `;`, `%`) and of control
//!   characters are refused, as are malformed encodings;
//! - raw control characters, whitespace, backslashes and non-ASCII bytes are refused;
//! - `;` parameters are refused, or stripped from every segment when the operator opts in;
//! - empty segments (`//`) and every dot segment (`.`, `..`, `...`, `..;x`) are refused.
//!
//! The common case (a plain path with no `%` and no `;`) borrows its input: the free route
//! pays for a byte scan, not an allocation.

use std::borrow::Cow;

/// A path that passed every rule; the query string is not part of it and is forwarded as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a>(Cow<'a, str>);

impl CanonicalPath<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path differs from what the client sent, so the forwarded request needs it set.
    pub fn is_rewritten(&self) -> bool {
        matches!(self.0, Cow::Owned(_))
    }

    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

/// What to do with `;` parameters in path segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathParams {
    /// Refuse the request (default): upstreams disagree on what `;` means.
    #[default]
    Refuse,
    /// Drop `;...` from every segment before matching and forwarding.
    Strip,
}

/// Why a request target was refused. Each answers 400 with [`TargetRefusal::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefusal {
    #[error("the path must start with '/'")]
    NotAbsolutePath,
    #[error("the path has an encoded '/', '\\', '.', ';' or '%', which upstreams decode differently")]
    EncodedSeparator,
    #[error("the path has a malformed percent-encoding")]
    BadEncoding,
    #[error("the path has control characters, whitespace, backslashes or non-ASCII bytes")]
    ForbiddenCharacter,
    #[error("the path has ';' parameters, which some upstreams strip before routing")]
    PathParameters,
    #[error("the path has a dot segment ('.', '..' or a variant such as '..;')")]
    DotSegment,
    #[error("the path has an empty segment ('//')")]
    EmptySegment,
    #[error("the absolute-form target's authority and the Host header name different hosts")]
    HostMismatch,
    #[error("the request names no host (no Host header, no absolute-form target) and routes are chosen by host")]
    MissingHost,
}

impl TargetRefusal {
    /// The `error` field of the 400 answer.
    pub fn code(self) -> &'static str {
        match self {
            Self::HostMismatch | Self::MissingHost => "ambiguous_host",
            _ => "ambiguous_path",
        }
    }
}

/// The canonical form of `raw_path` (the request target's path, without the query).
pub fn canonical_path(raw_path: &str, params: PathParams) -> Result<CanonicalPath<'_>, TargetRefusal> {
    if !raw_path.starts_with('/') {
        return Err(TargetRefusal::NotAbsolutePath);
    }
    let mut needs_rewrite = false;
    for &byte in raw_path.as_bytes() {
        match byte {
            b'%' => needs_rewrite = true,
            b';' if params == PathParams::Refuse => return Err(TargetRefusal::PathParameters),
            b';' => needs_rewrite = true,
            b'\\' | 0..=0x20 | 0x7f.. => return Err(TargetRefusal::ForbiddenCharacter),
            _ => {}
        }
    }
    let path = if needs_rewrite { Cow::Owned(rewrite(raw_path)?) } else { Cow::Borrowed(raw_path) };
    check_segments(&path)?;
    Ok(CanonicalPath(path))
}

/// Decodes unreserved encodings and strips `;` parameters (only reached when stripping is on).
fn rewrite(raw_path: &str) -> Result<String, TargetRefusal> {
    let bytes = raw_path.as_bytes();
    let mut out = String::with_capacity(raw_path.len());
    let mut i = 0;
    let mut in_params = false;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'/' {
            in_params = false;
        } else if byte == b';' {
            in_params = true;
        }
        if byte == b'%' {
            let decoded = decode_escape(bytes.get(i + 1..i + 3))?;
            // Inside a stripped parameter the escape is dropped with it, but still checked.
            if !in_params {
                push_escape(&mut out, decoded)?;
            }
            i += 3;
            continue;
        }
        if !in_params {
            out.push(char::from(byte));
        }
        i += 1;
    }
    Ok(out)
}

fn decode_escape(hex: Option<&[u8]>) -> Result<u8, TargetRefusal> {
    let [high, low] = hex.ok_or(TargetRefusal::BadEncoding)? else { return Err(TargetRefusal::BadEncoding) };
    let digit = |b: &u8| char::from(*b).to_digit(16).ok_or(TargetRefusal::BadEncoding);
    // Two hex digits are at most 0xff: the cast cannot truncate.
    Ok((digit(high)? * 16 + digit(low)?) as u8)
}

fn push_escape(out: &mut String, decoded: u8) -> Result<(), TargetRefusal> {
    match decoded {
        b'/' | b'\\' | b'.' | b';' | b'%' => Err(TargetRefusal::EncodedSeparator),
        0..=0x1f | 0x7f => Err(TargetRefusal::EncodedSeparator),
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
            out.push(char::from(decoded));
            Ok(())
        }
        _ => {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(decoded >> 4)]));
            out.push(char::from(HEX[usize::from(decoded & 0x0f)]));
            Ok(())
        }
    }
}

/// Empty and dot segments: refused, since servers resolve them differently. A segment made
/// only of dots counts as one (`...` is `..` to some file-backed servers). One trailing slash
/// is kept: matching treats it as optional.
fn check_segments(path: &str) -> Result<(), TargetRefusal> {
    let body = path.strip_prefix('/').unwrap_or(path);
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return if path.len() <= 1 { Ok(()) } else { Err(TargetRefusal::EmptySegment) };
    }
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(TargetRefusal::EmptySegment);
        }
        if segment.bytes().all(|b| b == b'.') {
            return Err(TargetRefusal::DotSegment);
        }
    }
    Ok(())
}

/// The host a request is routed by: the absolute-form target's authority, else `Host`.
/// Both present and naming different hosts, or neither when some route is chosen by host,
/// is refused: the gateway and the upstream could each pick a different one.
pub fn request_host<'a>(authority: Option<&'a str>, host_header: Option<&'a str>, host_routes_exist: bool) -> Result<Option<&'a str>, TargetRefusal> {
    match (authority, host_header) {
        (Some(authority), Some(header)) if !same_host(authority, header) => Err(TargetRefusal::HostMismatch),
        (Some(authority), _) => Ok(Some(authority)),
        (None, Some(header)) => Ok(Some(header)),
        (None, None) if host_routes_exist => Err(TargetRefusal::MissingHost),
        (None, None) => Ok(None),
    }
}

/// A host without its port and one trailing dot (`Paid.Example.:8402` → `Paid.Example`).
pub fn host_name(host: &str) -> &str {
    let host = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(name, _)| name);
    host.strip_suffix('.').unwrap_or(host)
}

/// Same host name, ignoring case, port and one trailing dot.
pub fn same_host(a: &str, b: &str) -> bool {
    host_name(a).eq_ignore_ascii_case(host_name(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> Result<String, TargetRefusal> {
        canonical_path(path, PathParams::Refuse).map(CanonicalPath::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed() {
        for path in ["/", "/weather", "/weather/", "/Weather", "/a/b.c", "/a...b", "/v1/x-y_z~"] {
            let canonical = canonical_path(path, PathParams::Refuse).expect(path);
            assert!(!canonical.is_rewritten(), "{path}");
            assert_eq!(canonical.as_str(), path);
        }
    }

    #[test]
    fn unreserved_encodings_are_decoded() {
        assert_eq!(canon("/w%65ather").as_deref(), Ok("/weather"));
        assert_eq!(canon("/%77%45ATHER").as_deref(), Ok("/wEATHER"));
        assert_eq!(canon("/api/r%65ports/1").as_deref(), Ok("/api/reports/1"));
        assert_eq!(canon("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(canon("/a%c3%a9").as_deref(), Ok("/a%C3%A9"));
    }

    #[test]
    fn path_significant_encodings_are_refused() {
        for path in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/%2e%2e/b", "/a%2E", "/a%3Bb", "/a%25", "/a%00", "/a%0a", "/a%7f"] {
            assert_eq!(canon(path), Err(TargetRefusal::EncodedSeparator), "{path}");
        }
        for path in ["/a%", "/a%2", "/a%zz", "/a%%41"] {
            assert_eq!(canon(path), Err(TargetRefusal::BadEncoding), "{path}");
        }
    }

    #[test]
    fn forbidden_characters() {
        for path in ["/a b", "/a\tb", "/a\\b", "/a\u{0}", "/caf\u{e9}", "/a\x7f"] {
            assert_eq!(canon(path), Err(TargetRefusal::ForbiddenCharacter), "{path:?}");
        }
    }

    #[test]
    fn dot_and_empty_segments() {
        for path in ["/..", "/a/../b", "/a/./b", "/.", "/a/...", "/a/../"] {
            assert_eq!(canon(path), Err(TargetRefusal::DotSegment), "{path}");
        }
        for path in ["//", "/a//b", "//a", "/a//"] {
            assert_eq!(canon(path), Err(TargetRefusal::EmptySegment), "{path}");
        }
        assert_eq!(canon("weather"), Err(TargetRefusal::NotAbsolutePath));
    }

    #[test]
    fn path_parameters_are_refused_or_stripped() {
        assert_eq!(canon("/weather;x=1"), Err(TargetRefusal::PathParameters));
        let strip = |p| canonical_path(p, PathParams::Strip).map(CanonicalPath::into_owned);
        assert_eq!(strip("/weather;x=1").as_deref(), Ok("/weather"));
        assert_eq!(strip("/a;jsessionid=1/b;v=%41").as_deref(), Ok("/a/b"));
        assert_eq!(strip("/a/..;/weather"), Err(TargetRefusal::DotSegment));
        assert_eq!(strip("/a;x/;y/b"), Err(TargetRefusal::EmptySegment));
        assert_eq!(strip("/a;%zz"), Err(TargetRefusal::BadEncoding));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_name("Paid.Example.:8402"), "Paid.Example");
        assert!(same_host("paid.example.", "PAID.example:80"));
        assert!(!same_host("paid.example", "free.example"));
        assert_eq!(request_host(Some("a.example"), Some("b.example"), false), Err(TargetRefusal::HostMismatch));
        assert_eq!(request_host(Some("a.example"), Some("A.example."), false), Ok(Some("a.example")));
        assert_eq!(request_host(None, None, true), Err(TargetRefusal::MissingHost));
        assert_eq!(request_host(None, None, false), Ok(None));
        assert_eq!(request_host(None, Some("b"), true), Ok(Some("b")));
    }
}
