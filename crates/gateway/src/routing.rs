//! Route matching: method, optional host, and a path pattern.
//!
//! Patterns are literal except for two forms, so that `.`, `?`, `+` and friends mean
//! themselves and never a regex by accident:
//! - `{name}` matches exactly one non-empty path segment;
//! - a trailing `/*` matches any rest of the path below that prefix (`/api/*` matches
//!   `/api/`, `/api/a` and `/api/a/b`, not `/api`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
    prefix: bool,
}

impl PathPattern {
    pub fn parse(source: &str) -> Result<Self, String> {
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| format!("path pattern {source:?} must start with '/'"))?;
        let (rest, prefix) = match rest.strip_suffix("/*").or_else(|| (rest == "*").then_some("")) {
            Some(stripped) => (stripped, true),
            None => (rest, false),
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for part in rest.split('/') {
                segments.push(parse_segment(source, part)?);
            }
        }
        Ok(Self { source: source.to_owned(), segments, prefix })
    }

    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(lit), Some(part)) if lit == part => {}
                (Segment::Param, Some(part)) if !part.is_empty() => {}
                _ => return false,
            }
        }
        if self.prefix {
            // `/api/*` needs at least the slash after `/api`.
            parts.next().is_some() || self.segments.is_empty()
        } else {
            match parts.next() {
                None => true,
                // `/` matches the empty pattern tail only for the root pattern.
                Some("") => self.segments.is_empty() && parts.next().is_none(),
                Some(_) => false,
            }
        }
    }
}

fn parse_segment(source: &str, part: &str) -> Result<Segment, String> {
    if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
        let name = &part[1..part.len() - 1];
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Ok(Segment::Param);
        }
    }
    if part.contains(['{', '}', '*']) {
        return Err(format!(
            "path pattern {source:?}: segment {part:?} mixes literal text with '{{', '}}' or '*'; use {{name}} for a whole segment or a trailing /*"
        ));
    }
    if part.is_empty() {
        return Err(format!("path pattern {source:?} has an empty segment (\"//\")"));
    }
    Ok(Segment::Literal(part.to_owned()))
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Paths that different servers may resolve differently (dot segments, encoded slashes or
/// dots, empty segments, backslashes) could slip a paid resource past a free pattern once
/// the upstream normalizes them, so they are refused rather than guessed at.
pub fn is_ambiguous_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") || path.contains('\\') {
        return true;
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    ["%2e", "%2f", "%5c", "%00"].iter().any(|encoded| lower.contains(encoded))
}

/// Host matching ignores case and a port.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    pattern.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn exact_patterns() {
        assert!(m("/weather", "/weather"));
        assert!(!m("/weather", "/weather/"));
        assert!(!m("/weather", "/weathers"));
        assert!(!m("/weather", "/weather/x"));
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
    }

    #[test]
    fn prefix_patterns() {
        assert!(m("/api/*", "/api/"));
        assert!(m("/api/*", "/api/a"));
        assert!(m("/api/*", "/api/a/b"));
        assert!(!m("/api/*", "/api"));
        assert!(!m("/api/*", "/apix/a"));
        assert!(m("/*", "/"));
        assert!(m("/*", "/anything/at/all"));
    }

    #[test]
    fn param_segments() {
        assert!(m("/users/{id}/posts", "/users/42/posts"));
        assert!(!m("/users/{id}/posts", "/users//posts"));
        assert!(!m("/users/{id}/posts", "/users/42/43/posts"));
        assert!(m("/users/{id}/*", "/users/42/anything/else"));
    }

    #[test]
    fn metacharacters_are_literal() {
        assert!(m("/v1.0/data", "/v1.0/data"));
        assert!(!m("/v1.0/data", "/v1x0/data"));
        assert!(m("/a+b", "/a+b"));
        assert!(!m("/a+b", "/aab"));
        assert!(m("/(x)", "/(x)"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["weather", "/a*", "/a/*/b", "/{a}b", "/a//b", "/{}", "/{a-b}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ambiguous_paths() {
        for bad in ["/a/../b", "/a/./b", "/..", "/a//b", "/%2e%2e/b", "/a%2Fb", "/a\\b", "x"] {
            assert!(is_ambiguous_path(bad), "{bad}");
        }
        for good in ["/", "/weather", "/a/b.c", "/a...b", "/a%20b"] {
            assert!(!is_ambiguous_path(good), "{good}");
        }
    }

    #[test]
    fn hosts() {
        assert!(host_matches("api.example.com", "API.example.com:8402"));
        assert!(!host_matches("api.example.com", "example.com"));
    }
}
