//! Route matching: method, optional host, and a path pattern.
//!
//! Patterns are literal except for two forms, so that `.`, `?`, `+` and friends mean
//! themselves and never a regex by accident:
//! - `{name}` matches exactly one non-empty path segment;
//! - a trailing `/*` matches any rest of the path below that prefix (`/api/*` matches
//!   `/api/`, `/api/a` and `/api/a/b`; `/api` only where the trailing slash is optional).
//!
//! Paths are canonical ([`crate::canonical`]) before they get here. Matching is lenient by
//! default ([`MatchRules::LENIENT`]): case-insensitive, and a trailing slash is optional,
//! because upstreams such as Express serve `/WEATHER` and `/weather/` as `/weather` and
//! pricing the superset can only over-charge, never give a resource away.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// How strictly a route's path pattern compares with a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchRules {
    /// `case_sensitive: true`: letters must match exactly.
    pub case_sensitive: bool,
    /// `trailing_slash: strict`: `/weather/` is not `/weather`.
    pub strict_trailing_slash: bool,
}

impl MatchRules {
    /// The default, and the form free routes and `unmatched: forward` are checked against.
    pub const LENIENT: Self = Self { case_sensitive: false, strict_trailing_slash: false };
}

impl Default for MatchRules {
    fn default() -> Self {
        Self::LENIENT
    }
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

    /// Strict matching: exact case, exact trailing slash.
    pub fn matches(&self, path: &str) -> bool {
        self.matches_with(path, MatchRules { case_sensitive: true, strict_trailing_slash: true })
    }

    pub fn matches_with(&self, path: &str, rules: MatchRules) -> bool {
        if self.matches_segments(path, rules) {
            return true;
        }
        // The other spelling of the trailing slash: `/weather/` is `/weather`.
        !rules.strict_trailing_slash && path.len() > 1 && path.strip_suffix('/').is_some_and(|without| self.matches_segments(without, rules))
    }

    fn matches_segments(&self, path: &str, rules: MatchRules) -> bool {
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut parts = rest.split('/');
        let same = |lit: &str, part: &str| if rules.case_sensitive { lit == part } else { lit.eq_ignore_ascii_case(part) };
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(lit), Some(part)) if same(lit, part) => {}
                (Segment::Param, Some(part)) if !part.is_empty() => {}
                _ => return false,
            }
        }
        if self.prefix {
            // `/api/*` needs the slash after `/api`, unless that slash is optional.
            parts.next().is_some() || self.segments.is_empty() || !rules.strict_trailing_slash
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

impl PathPattern {
    /// Some path matches both `self` (as written, strictly) and `priced` in its lenient
    /// form. Used for warnings, so it compares segment by segment and needs no search.
    pub fn overlaps_lenient(&self, priced: &PathPattern) -> bool {
        let meet = |a: &Segment, b: &Segment| match (a, b) {
            (Segment::Literal(a), Segment::Literal(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
        if !self.segments.iter().zip(&priced.segments).all(|(a, b)| meet(a, b)) {
            return false;
        }
        let (mine, theirs) = (self.segments.len(), priced.segments.len());
        match (self.prefix, priced.prefix) {
            (true, true) => true,
            // A prefix reaches every longer exact path below it (and, leniently, its own root).
            (true, false) => theirs >= mine,
            (false, true) => mine >= theirs,
            (false, false) => mine == theirs,
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

/// Host matching ignores case, a port and one trailing dot (`paid.example.` is `paid.example`).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    crate::canonical::same_host(pattern, host)
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
    fn lenient_matching() {
        let lenient = |pattern: &str, path: &str| PathPattern::parse(pattern).unwrap().matches_with(path, MatchRules::LENIENT);
        assert!(lenient("/weather", "/WEATHER"));
        assert!(lenient("/weather", "/Weather/"));
        assert!(!lenient("/weather", "/weather//"));
        assert!(!lenient("/weather", "/weathers"));
        assert!(lenient("/api/*", "/API"));
        assert!(lenient("/api/*", "/Api/Reports/1"));
        assert!(lenient("/users/{id}/posts", "/USERS/42/posts/"));
        assert!(lenient("/", "/"));
        let case_only = MatchRules { case_sensitive: true, strict_trailing_slash: false };
        let pattern = PathPattern::parse("/weather").unwrap();
        assert!(!pattern.matches_with("/WEATHER", case_only));
        assert!(pattern.matches_with("/weather/", case_only));
        let slash_only = MatchRules { case_sensitive: false, strict_trailing_slash: true };
        assert!(pattern.matches_with("/WEATHER", slash_only));
        assert!(!pattern.matches_with("/weather/", slash_only));
    }

    #[test]
    fn overlaps() {
        let p = |s: &str| PathPattern::parse(s).unwrap();
        assert!(p("/*").overlaps_lenient(&p("/weather")));
        assert!(p("/Weather").overlaps_lenient(&p("/weather")));
        assert!(p("/api/{x}").overlaps_lenient(&p("/api/*")));
        assert!(p("/api/*").overlaps_lenient(&p("/api/reports/{id}")));
        assert!(!p("/health").overlaps_lenient(&p("/weather")));
        assert!(!p("/api/*").overlaps_lenient(&p("/")));
        assert!(!p("/a/b").overlaps_lenient(&p("/a")));
    }

    #[test]
    fn hosts() {
        assert!(host_matches("api.example.com", "API.example.com:8402"));
        assert!(!host_matches("api.example.com", "example.com"));
        assert!(host_matches("paid.example", "PAID.example.:80"));
        assert!(host_matches("paid.example.", "paid.example"));
    }
}
