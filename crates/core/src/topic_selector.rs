//! Mercure's topic selectors: which topics (IRIs or any strings) a
//! subscription or a token's grant covers.
//!
//! A topic matches a selector when the selector is `*`, when both are the
//! same string byte for byte, or when the selector contains `{`, parses as
//! an RFC 6570 URI template (levels 1 to 4), and the topic is one of its
//! expansions. Templates match as Mercure's reference hub matches them, so
//! that applications written for it work unchanged:
//! - every expression is optional and every variable may be empty
//!   (`/books/{id}` also matches `/books/`);
//! - a variable holds unreserved characters, `,`, and `%XX` escapes (plus
//!   `=` for `;`, `?`, `&` and exploded variables; plus every reserved
//!   character for `+` and `#`): `/`, `:` and `?` do not match `{id}`, and
//!   non-ASCII characters match only in literal text;
//! - a list `{a,b}` allows up to one separator less than it has variables,
//!   an exploded variable any number; a prefix length (`{v:3}`) is ignored.
//!
//! A selector that does not parse as a template, or is longer than
//! [`MAX_TEMPLATE_BYTES`], is an exact string.
//!
//! Mercure 1.0 names each matcher's kind instead of guessing it from the
//! text: [`TopicSelector::exact`] (an exact string even if it is `*` or
//! holds `{`), and [`TopicSelector::url_pattern`], a WHATWG URL Pattern.
//! A URL pattern and the topics it is matched against are both resolved
//! against one base URL (the hub's), so `/books/:id` selects the hub's
//! `/books/1`; a topic that does not resolve to a URL matches no pattern.

use std::{fmt, sync::Arc};

use regex::{Regex, RegexBuilder};
use url::Url;
use urlpattern::{UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions, regexp::RegExp};

/// Most bytes of a template compiled; a longer selector is an exact string.
/// Selectors are clients' input: compiling one must stay cheap.
pub const MAX_TEMPLATE_BYTES: usize = 4096;
/// Most bytes of a compiled template's program.
const MAX_PROGRAM_BYTES: usize = 1 << 20;

/// Why a URL pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Longer than [`MAX_TEMPLATE_BYTES`].
    #[error("a URL pattern is {len} bytes long, over the {MAX_TEMPLATE_BYTES} allowed; shorten it")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not a URL pattern (or one whose regexes are too big to compile).
    #[error("`{pattern}` is not a valid URL pattern: {reason}")]
    Invalid {
        /// The pattern as given.
        pattern: String,
        /// What the parser found wrong.
        reason: String,
    },
}

/// A parsed topic selector.
#[derive(Clone)]
pub enum TopicSelector {
    /// `*`: every topic.
    Any,
    /// One topic, compared byte for byte.
    Exact(String),
    /// An RFC 6570 template and the anchored regex of its expansions.
    Template {
        /// The template as given.
        source: String,
        /// Matches exactly the expansions.
        regex: Regex,
    },
    /// A WHATWG URL Pattern (Mercure 1.0's `urlpattern` match type).
    UrlPattern {
        /// The pattern as given.
        source: String,
        /// The compiled pattern, resolved against `base`.
        pattern: CompiledUrlPattern,
        /// What relative patterns and topics are resolved against.
        base: Url,
    },
}

/// A compiled URL pattern, shared by the selector's clones.
#[derive(Clone)]
pub struct CompiledUrlPattern(Arc<urlpattern::UrlPattern<BoundedRegex>>);

impl fmt::Debug for CompiledUrlPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CompiledUrlPattern")
    }
}

impl TopicSelector {
    /// The selector `text` stands for.
    pub fn parse(text: &str) -> Self {
        if text == "*" {
            return Self::Any;
        }
        if !text.contains('{') || text.len() > MAX_TEMPLATE_BYTES {
            return Self::Exact(text.to_owned());
        }
        match template_regex(text) {
            Some(regex) => Self::Template { source: text.to_owned(), regex },
            None => Self::Exact(text.to_owned()),
        }
    }

    /// The selector that matches `text` and nothing else, even when it is
    /// `*` or holds `{` (Mercure 1.0's `exact` match type).
    pub fn exact(text: &str) -> Self {
        Self::Exact(text.to_owned())
    }

    /// The URL pattern `text`, relative patterns resolved against `base`
    /// (Mercure 1.0's `urlpattern` match type).
    pub fn url_pattern(text: &str, base: &Url) -> Result<Self, SelectorError> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(SelectorError::TooLong { len: text.len() });
        }
        let invalid = |error: urlpattern::Error| SelectorError::Invalid {
            pattern: text.to_owned(),
            reason: match error {
                urlpattern::Error::RegExp(()) => "a part of it does not compile (or is too big)".to_owned(),
                error => error.to_string(),
            },
        };
        // An absolute pattern stands alone: given the base, it would inherit
        // the base's path (`urn:*` would become `urn:/.well-known/*`).
        let parse = || {
            let init = match UrlPatternInit::parse_constructor_string::<BoundedRegex>(text, None) {
                Err(urlpattern::Error::BaseUrlRequired) => {
                    UrlPatternInit::parse_constructor_string::<BoundedRegex>(text, Some(base.clone()))
                }
                parsed => parsed,
            }?;
            urlpattern::UrlPattern::parse(init, UrlPatternOptions::default())
        };
        // The parser panics on some input (an arithmetic overflow in
        // urlpattern 0.6's constructor parser, on `*:]-`): a client's
        // pattern must never take a thread down.
        let pattern = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
            .map_err(|_| SelectorError::Invalid {
                pattern: text.to_owned(),
                reason: "the URL pattern parser cannot read it".to_owned(),
            })?
            .map_err(invalid)?;
        Ok(Self::UrlPattern {
            source: text.to_owned(),
            pattern: CompiledUrlPattern(Arc::new(pattern)),
            base: base.clone(),
        })
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => exact == topic,
            Self::Template { regex, .. } => regex.is_match(topic),
            Self::UrlPattern { pattern, base, .. } => match base.join(topic) {
                Ok(url) => pattern.0.test(UrlPatternMatchInput::Url(url)).unwrap_or(false),
                Err(_) => false,
            },
        }
    }

    /// The selector as given.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Exact(text) | Self::Template { source: text, .. } | Self::UrlPattern { source: text, .. } => text,
        }
    }

    /// Whether it is a URL pattern (Mercure 1.0's `urlpattern` match
    /// type) rather than a string, `*` or a URI template.
    pub fn is_url_pattern(&self) -> bool {
        matches!(self, Self::UrlPattern { .. })
    }
}

/// The regexes of a URL pattern's parts, bounded like templates': a
/// pattern is a client's input.
struct BoundedRegex(Regex);

impl RegExp for BoundedRegex {
    fn syntax() -> urlpattern::RegexSyntax {
        urlpattern::RegexSyntax::Rust
    }

    fn parse(pattern: &str, flags: &str, _force_eval: bool) -> Result<Self, ()> {
        let regex = RegexBuilder::new(pattern)
            .case_insensitive(flags.contains('i'))
            .size_limit(MAX_PROGRAM_BYTES)
            .build()
            .map_err(|_| ())?;
        Ok(Self(regex))
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(captures.iter().skip(1).map(|group| group.map(|m| m.as_str())).collect())
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for TopicSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicSelector").field(&self.as_str()).finish()
    }
}

/// Two selectors are equal when they select alike: the same kind, the
/// same text and, for URL patterns, the same base.
impl PartialEq for TopicSelector {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::UrlPattern { source, base, .. },
                Self::UrlPattern { source: other_source, base: other_base, .. },
            ) => source == other_source && base == other_base,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other) && self.as_str() == other.as_str(),
        }
    }
}

impl Eq for TopicSelector {}

/// One variable of an expression.
struct Variable<'a> {
    name: &'a str,
    explode: bool,
}

/// The anchored regex of `template`'s expansions; `None` when it is not a
/// template (unbalanced braces, an unknown operator, a bad variable).
fn template_regex(template: &str) -> Option<Regex> {
    let mut pattern = String::from("^");
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            Some(at) if rest.as_bytes()[at] == b'}' => return None,
            Some(at) => {
                pattern.push_str(&regex::escape(&rest[..at]));
                let end = rest[at..].find('}')? + at;
                pattern.push_str(&expression(&rest[at + 1..end])?);
                rest = &rest[end + 1..];
            }
            None => {
                pattern.push_str(&regex::escape(rest));
                rest = "";
            }
        }
    }
    pattern.push('$');
    RegexBuilder::new(&pattern).size_limit(MAX_PROGRAM_BYTES).build().ok()
}

/// The regex of one expression (the text between braces), optional as a
/// whole.
fn expression(text: &str) -> Option<String> {
    let (operator, list) = match text.chars().next()? {
        op @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (Some(op), &text[1..]),
        _ => (None, text),
    };
    let variables = list.split(',').map(variable).collect::<Option<Vec<_>>>()?;
    let (prefix, separator, named) = match operator {
        None | Some('+') => ("", ",", false),
        Some('#') => ("#", ",", false),
        Some('.') => (".", ".", false),
        Some('/') => ("/", "/", false),
        Some(';') => (";", ";", true),
        Some('?') => ("?", "&", true),
        _ => ("&", "&", true),
    };
    let reserved = matches!(operator, Some('+' | '#'));
    let separator = regex::escape(separator);
    let items: Vec<String> = variables
        .iter()
        .map(|variable| {
            let value = value(reserved, named || variable.explode);
            let name = regex::escape(variable.name);
            match (variable.explode, operator) {
                (true, _) => format!("{value}(?:{separator}{value})*"),
                (false, Some(';')) => format!("{name}(?:={value})?"),
                (false, Some('?' | '&')) => format!("{name}={value}"),
                (false, _) => value,
            }
        })
        .collect();
    let mut out = format!("(?:{}{}", regex::escape(prefix), items[0]);
    for item in &items[1..] {
        out.push_str(&format!("(?:{separator}{item})?"));
    }
    out.push_str(")?");
    Some(out)
}

/// A variable specification: a name (letters, digits, `_`, `.`, `%XX`),
/// then `*` (explode) or `:` and a prefix length of 1 to 4 digits.
fn variable(spec: &str) -> Option<Variable<'_>> {
    let (name, explode) = match spec.strip_suffix('*') {
        Some(name) => (name, true),
        None => match spec.split_once(':') {
            Some((name, length)) => {
                let digits = !length.is_empty() && length.len() <= 4 && length.bytes().all(|b| b.is_ascii_digit());
                (digits.then_some(name)?, false)
            }
            None => (spec, false),
        },
    };
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%'));
    valid.then_some(Variable { name, explode })
}

/// The regex of one variable's value, possibly empty.
fn value(reserved: bool, with_equals: bool) -> String {
    let mut class = String::from(r"A-Za-z0-9\-._~,");
    if with_equals {
        class.push('=');
    }
    if reserved {
        class.push_str(r"!#$&'()*+/:;=?@\[\]");
    }
    format!("(?:[{class}]|%[0-9A-Fa-f]{{2}})*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(selector: &str, topic: &str) -> bool {
        TopicSelector::parse(selector).matches(topic)
    }

    #[test]
    fn star_matches_everything_and_plain_strings_only_themselves() {
        assert!(matches("*", "https://example.com/books/1"));
        assert!(matches("*", ""));
        assert!(matches("https://example.com/books/1", "https://example.com/books/1"));
        assert!(!matches("https://example.com/books/1", "https://example.com/books/10"));
        assert!(!matches("https://example.com/Books/1", "https://example.com/books/1"), "case matters");
        assert!(matches("/api/books/1", "/api/books/1"), "relative topics stay as they are");
        assert!(!matches("foo.*", "foo.bar"), "no globbing, no regex");
    }

    #[test]
    fn a_simple_variable_matches_one_segment_of_unreserved_characters_or_nothing() {
        let books = "https://example.com/books/{id}";
        for topic in
            ["https://example.com/books/1", "https://example.com/books/a-b.c_d~e,f", "https://example.com/books/"]
        {
            assert!(matches(books, topic), "{topic}");
        }
        assert!(matches(books, "https://example.com/books/caf%C3%A9"), "%XX escapes");
        for topic in [
            "https://example.com/books/1/2",
            "https://example.com/books/a:b",
            "https://example.com/books/a?b",
            "https://example.com/books/café",
            "https://example.com/books/%zz",
            "https://example.com/books",
            "https://example.com/authors/1",
        ] {
            assert!(!matches(books, topic), "{topic}");
        }
        assert!(matches("https://exämple.com/{id}", "https://exämple.com/1"), "non-ASCII in literals");
    }

    #[test]
    fn each_operator_has_its_prefix_separator_and_characters() {
        // Reserved expansion: `/`, `:`, `?` and the other reserved characters.
        assert!(matches("https://example.com/{+path}", "https://example.com/a/b:c?d=e&f"));
        assert!(matches("https://example.com/page{#section}", "https://example.com/page#a/b"));
        assert!(matches("https://example.com/page{#section}", "https://example.com/page"));
        assert!(!matches("https://example.com/page{#section}", "https://example.com/pagea"));
        // Labels, path segments.
        assert!(matches("https://example.com/file{.ext}", "https://example.com/file.json"));
        assert!(matches("/chat{/subscriber}", "/chat/urn%3Auuid%3A42"));
        assert!(matches("/chat{/subscriber}", "/chat"));
        assert!(!matches("/chat{/subscriber}", "/chat/a/b"), "one segment, not explode");
        assert!(matches("/files{/path*}", "/files/a/b/c"), "explode repeats the separator");
        // Named: `;`, `?`, `&`.
        assert!(matches("/map{;x,y}", "/map;x=1;y=2"));
        assert!(matches("/map{;x,y}", "/map;x"));
        assert!(matches("https://example.com/x{?topic}", "https://example.com/x?topic=foo"));
        assert!(matches("https://example.com/x{?topic}", "https://example.com/x?topic="));
        assert!(!matches("https://example.com/x{?topic}", "https://example.com/x?other=foo"));
        assert!(matches("/search{?q}{&lang}", "/search?q=herald&lang=en"));
        assert!(matches("/search{?q,lang}", "/search?q=a&lang=b"));
        assert!(matches("/search{?q,lang}", "/search?q=a"));
    }

    #[test]
    fn a_list_takes_at_most_one_separator_less_than_its_variables() {
        assert!(matches("/p/{a,b}", "/p/1,2"));
        assert!(matches("/p{/a,b}", "/p/1/2"));
        assert!(!matches("/p{/a,b}", "/p/1/2/3"));
        assert!(matches("/p/{a:3}", "/p/abcdef"), "the prefix length is ignored");
    }

    #[test]
    fn what_is_not_a_template_is_an_exact_string() {
        for text in ["/a/{id", "/a/id}", "/a/{}", "/a/{!x}", "/a/{x y}", "/a/{x:}", "/a/{x:12345}", "/a/{.x.}"] {
            let selector = TopicSelector::parse(text);
            assert!(matches!(selector, TopicSelector::Exact(_)), "{text}: {selector:?}");
            assert!(selector.matches(text));
        }
        assert!(!matches("/a/{id}", "/a/{id}"), "a template matches its expansions, not its own text");
    }

    #[test]
    fn literal_text_is_never_read_as_a_pattern() {
        assert!(!matches("https://example.com/a.b{?x}", "https://example.com/aXb"));
        assert!(matches("https://example.com/(a)+b{?x}", "https://example.com/(a)+b"));
    }

    #[test]
    fn a_template_too_long_to_compile_is_an_exact_string() {
        let text = "/x".to_owned() + &"{+a,b,c,d,e,f,g,h}".repeat(2000);
        let selector = TopicSelector::parse(&text);
        assert!(matches!(selector, TopicSelector::Exact(_)), "{} bytes", text.len());
        assert!(selector.matches(&text) && !selector.matches("/x"));
        // The longest compiled still fits the program bound.
        let longest = "{+a,b,c,d,e,f,g,h}".repeat(MAX_TEMPLATE_BYTES / 18);
        assert!(matches!(TopicSelector::parse(&longest), TopicSelector::Template { .. }));
    }

    fn hub() -> Url {
        Url::parse("https://hub.example.com/.well-known/mercure").unwrap()
    }

    fn url_matches(pattern: &str, topic: &str) -> bool {
        TopicSelector::url_pattern(pattern, &hub()).unwrap().matches(topic)
    }

    #[test]
    fn exact_selectors_take_stars_and_braces_literally() {
        let star = TopicSelector::exact("*");
        assert!(star.matches("*") && !star.matches("https://example.com/a"));
        let braces = TopicSelector::exact("/books/{id}");
        assert!(braces.matches("/books/{id}") && !braces.matches("/books/1"));
        assert_ne!(star, TopicSelector::Any, "an exact `*` is not the wildcard");
        assert_ne!(braces, TopicSelector::parse("/books/{id}"));
        assert_eq!(TopicSelector::exact("/a"), TopicSelector::parse("/a"));
    }

    #[test]
    fn absolute_url_patterns_match_urls_with_wildcards_and_named_groups() {
        let books = "https://example.com/books/:id";
        assert!(url_matches(books, "https://example.com/books/1"));
        assert!(url_matches(books, "https://example.com/books/abc-def"));
        assert!(!url_matches(books, "https://example.com/books/1/2"), "a named group is one segment");
        assert!(!url_matches(books, "https://example.com/books/"));
        assert!(!url_matches(books, "https://example.org/books/1"), "another host");
        assert!(!url_matches(books, "http://example.com/books/1"), "another scheme");
        let numeric = "https://example.com/books/:id(\\d+)";
        assert!(url_matches(numeric, "https://example.com/books/42"));
        assert!(!url_matches(numeric, "https://example.com/books/x"));
        let anything = "https://example.com/books/*";
        assert!(url_matches(anything, "https://example.com/books/1/chapters/2"));
        assert!(url_matches(anything, "https://example.com/books/1?draft#top"), "search and hash are open");
        assert!(!url_matches(anything, "https://example.com/authors/1"));
        assert!(url_matches("https://*.example.com/*", "https://eu.example.com/x"));
        assert!(!url_matches("https://*.example.com/*", "https://example.org/x"));
    }

    #[test]
    fn relative_url_patterns_and_topics_resolve_against_the_base() {
        let relative = "/books/:id";
        assert!(url_matches(relative, "https://hub.example.com/books/1"));
        assert!(url_matches(relative, "/books/1"), "a relative topic resolves against the same base");
        assert!(!url_matches(relative, "https://example.com/books/1"), "another host than the base's");
        assert!(url_matches("/chat/*", "/chat/rooms/1"));
        let selector = TopicSelector::url_pattern(relative, &hub()).unwrap();
        assert!(selector.is_url_pattern() && selector.as_str() == relative);
        let elsewhere = Url::parse("https://other.example.com/").unwrap();
        assert_ne!(selector, TopicSelector::url_pattern(relative, &elsewhere).unwrap(), "the base is part of it");
        assert_eq!(selector, TopicSelector::url_pattern(relative, &hub()).unwrap());
    }

    #[test]
    fn a_topic_that_is_not_a_url_matches_no_url_pattern() {
        assert!(!url_matches("*", "http://[::1"), "does not resolve");
        assert!(!url_matches("https://*", "https://exa mple.com/"));
        assert!(!url_matches("/books/:id", "urn:isbn:0451450523"), "another scheme");
        assert!(url_matches("urn:*", "urn:isbn:0451450523"), "unless the pattern says so");
        assert!(!url_matches("urn:*", "/books/1"));
    }

    #[test]
    fn bad_and_over_long_url_patterns_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_TEMPLATE_BYTES));
        assert_eq!(TopicSelector::url_pattern(&long, &hub()).unwrap_err(), SelectorError::TooLong { len: long.len() });
        assert!(TopicSelector::url_pattern(&long[..MAX_TEMPLATE_BYTES], &hub()).is_ok(), "the bound itself is fine");
        for bad in ["/books/:id(", "/books/(\\d+", "/books/:", "https://exa mple.com/*"] {
            let error = TopicSelector::url_pattern(bad, &hub()).unwrap_err();
            assert!(matches!(&error, SelectorError::Invalid { pattern, .. } if pattern == bad), "{bad}: {error}");
        }
        let huge = "/x/".to_owned() + &"(\\w{1000})".repeat(50);
        assert!(huge.len() <= MAX_TEMPLATE_BYTES);
        assert!(matches!(TopicSelector::url_pattern(&huge, &hub()), Err(SelectorError::Invalid { .. })), "too big");
    }

    #[test]
    fn a_pattern_the_parser_fails_on_is_refused_not_a_panic() {
        let refused = TopicSelector::url_pattern("*:]-", &hub());
        assert!(matches!(refused, Err(SelectorError::Invalid { .. })), "{refused:?}");
    }

    proptest::proptest! {
        #[test]
        fn url_patterns_never_panic(pattern in "[a-z:/*(){}?#+.@\\[\\]%\\\\-]{0,40}", topic in "[a-z:/?#.%-]{0,20}") {
            if let Ok(selector) = TopicSelector::url_pattern(&pattern, &hub()) {
                selector.matches(&topic);
            }
        }
    }
}
