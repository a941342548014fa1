//! Reading YAML with a position for every node (marked-yaml), so that a
//! schema check can report every problem at once as `file:line:column:
//! message` saying what was expected — serde stops at the first.

use std::fmt;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoaderOptions, Node, Span};

/// One problem in a file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Collects the diagnostics of one file.
pub struct Checker {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checker {
    /// The diagnostics in the order of the file.
    pub fn take_sorted(&mut self) -> Vec<Diagnostic> {
        let mut d = std::mem::take(&mut self.diagnostics);
        d.sort_by_key(|d| (d.line, d.column));
        d
    }

    pub fn new(file: &str) -> Checker {
        Checker {
            file: file.to_string(),
            diagnostics: Vec::new(),
        }
    }

    /// Where a node is, as a diagnostic whose message is filled in later
    /// (a name checked once every file is read).
    pub fn place(&self, n: &Node) -> Diagnostic {
        let (line, column) = n.span().start().map_or((1, 1), |m| (m.line(), m.column()));
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message: String::new(),
        }
    }

    pub fn at(&mut self, span: &Span, message: impl Into<String>) {
        let (line, column) = span.start().map_or((1, 1), |m| (m.line(), m.column()));
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Parses `text`: a mapping at the top, duplicate keys refused. A
    /// syntax error is reported with its position and ends the check.
    pub fn parse(&mut self, text: &str) -> Option<MarkedMappingNode> {
        if let Some(pos) = text.find('\t') {
            // YAML forbids tabs in indentation; say so plainly wherever it is.
            let line = text[..pos].matches('\n').count() + 1;
            let column = pos - text[..pos].rfind('\n').map_or(0, |n| n + 1) + 1;
            let leading = text[..pos]
                .rsplit('\n')
                .next()
                .is_some_and(|l| l.chars().all(|c| c == ' '));
            if leading {
                self.diagnostics.push(Diagnostic {
                    file: self.file.clone(),
                    line,
                    column,
                    message: "a tab in indentation; YAML indents with spaces".into(),
                });
                return None;
            }
        }
        if let Err((line, column, message)) = check_depth(text) {
            self.diagnostics.push(Diagnostic {
                file: self.file.clone(),
                line,
                column,
                message,
            });
            return None;
        }
        // Quoted scalars stay strings: `threshold: "0.2"` is refused, not coerced.
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(Node::Mapping(m)) => Some(m),
            Ok(other) => {
                self.at(other.span(), "expected a mapping at the top of the file");
                None
            }
            Err(e) => {
                let (line, column, message) = load_error(&e);
                self.diagnostics.push(Diagnostic {
                    file: self.file.clone(),
                    line,
                    column,
                    message,
                });
                None
            }
        }
    }

    /// The fields of a mapping node, checked against `allowed`.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        match node {
            Node::Mapping(m) => Some(self.mapping(m, what, allowed)),
            other => {
                self.at(other.span(), format!("{what}: expected a mapping"));
                None
            }
        }
    }

    pub fn mapping<'n>(
        &mut self,
        m: &'n MarkedMappingNode,
        what: &str,
        allowed: &[&str],
    ) -> Fields<'n> {
        for key in m.keys() {
            if !allowed.contains(&key.as_str()) {
                self.at(
                    key.span(),
                    format!(
                        "{what}: unknown field `{}`, expected one of: {}",
                        key.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
        Fields {
            map: m,
            what: what.to_string(),
        }
    }

    /// A sequence, or an error naming `what`.
    pub fn sequence<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n MarkedSequenceNode> {
        match node {
            Node::Sequence(s) => Some(s),
            other => {
                self.at(other.span(), format!("{what}: expected a list"));
                None
            }
        }
    }

    /// A plain string scalar.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node {
            Node::Scalar(s) => Some(s.as_str().to_string()),
            other => {
                self.at(other.span(), format!("{what}: expected a string"));
                None
            }
        }
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node {
            Node::Scalar(s) if s.as_bool().is_some() => s.as_bool(),
            other => {
                self.at(other.span(), format!("{what}: expected true or false"));
                None
            }
        }
    }

    /// An unquoted number.
    pub fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node {
            Node::Scalar(s) if s.may_coerce() => match parse_number(s.as_str()) {
                Some(x) => Some(x),
                None => {
                    self.at(
                        s.span(),
                        format!("{what}: expected a number, got {:?}", s.as_str()),
                    );
                    None
                }
            },
            Node::Scalar(s) => {
                self.at(
                    s.span(),
                    format!(
                        "{what}: expected a number, got the quoted string {:?}",
                        s.as_str()
                    ),
                );
                None
            }
            other => {
                self.at(other.span(), format!("{what}: expected a number"));
                None
            }
        }
    }

    /// A duration like `30s`, `5m`, `1h`, `1d` (zero allowed where `zero_ok`).
    pub fn duration(&mut self, node: &Node, what: &str, zero_ok: bool) -> Option<Duration> {
        let text = self.string(node, what)?;
        match humantime::parse_duration(text.trim()) {
            Ok(d) if zero_ok || !d.is_zero() => Some(d),
            Ok(_) => {
                self.at(node.span(), format!("{what}: must be longer than zero"));
                None
            }
            Err(_) if text.trim() == "0" && zero_ok => Some(Duration::ZERO),
            Err(_) => {
                self.at(
                    node.span(),
                    format!("{what}: {text:?} is not a duration like 30s, 5m, 1h or 1d"),
                );
                None
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let seq = self.sequence(node, what)?;
        let mut out = Vec::with_capacity(seq.len());
        for item in seq.iter() {
            out.push(self.string(item, what)?);
        }
        Some(out)
    }

    /// A mapping of strings to strings (labels, annotations, headers).
    pub fn string_map(&mut self, node: &Node, what: &str) -> Option<Vec<(String, String)>> {
        let Node::Mapping(m) = node else {
            self.at(
                node.span(),
                format!("{what}: expected a mapping of names to strings"),
            );
            return None;
        };
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m.iter() {
            let v = self.string(v, &format!("{what}.{}", k.as_str()))?;
            out.push((k.as_str().to_string(), v));
        }
        Some(out)
    }
}

/// A mapping's fields by name.
pub struct Fields<'n> {
    map: &'n MarkedMappingNode,
    pub what: String,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.map
            .get_node(key)
            .filter(|n| !matches!(n, Node::Scalar(s) if is_null(s)))
    }

    pub fn span(&self) -> &'n Span {
        self.map.span()
    }

    /// `what.key`, for messages.
    pub fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.what)
    }

    /// A required http(s) URL with a host.
    pub fn url(&self, c: &mut Checker, key: &str) -> Option<String> {
        let n = self.require(c, key)?;
        let s = c.string(n, &self.path(key))?;
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(s),
            Ok(u) => {
                c.at(
                    n.span(),
                    format!(
                        "{}: {s:?} is not an http(s) URL (scheme {})",
                        self.path(key),
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                c.at(
                    n.span(),
                    format!("{}: {s:?} is not a URL: {e}", self.path(key)),
                );
                None
            }
        }
    }

    /// A required field, or an error at the mapping naming it.
    pub fn require(&self, c: &mut Checker, key: &str) -> Option<&'n Node> {
        let node = self.get(key);
        if node.is_none() {
            c.at(
                self.map.span(),
                format!("{}: missing required field `{key}`", self.what),
            );
        }
        node
    }
}

fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

fn parse_number(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        t => t.parse::<f64>().ok().filter(|x| !x.is_nan()),
    }
}

/// How deeply a YAML file may nest mappings and sequences. Ours need a
/// handful of levels; the bound keeps every recursive step after parsing
/// (building the tree, checking it, dropping it) far from the stack's end.
pub const MAX_DEPTH: usize = 64;

/// Refuses a document nested deeper than `MAX_DEPTH`, with the position
/// where it goes too deep (`line`, `column`, message). The parser's event
/// stream is read without building anything, so no input can exhaust the
/// stack here; syntax errors are left to the full parse.
pub fn check_depth(text: &str) -> Result<(), (usize, usize, String)> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(());
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err((
                        mark.line(),
                        mark.col() + 1,
                        format!("nested more than {MAX_DEPTH} levels deep"),
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

fn load_error(e: &marked_yaml::LoadError) -> (usize, usize, String) {
    use marked_yaml::LoadError::*;
    let pos = |m: &marked_yaml::Marker| (m.line(), m.column());
    let ((line, column), message) = match e {
        TopLevelMustBeMapping(m) | TopLevelMustBeSequence(m) => (
            pos(m),
            "expected a mapping at the top of the file".to_string(),
        ),
        UnexpectedAnchor(m) => (pos(m), "anchors are not supported".to_string()),
        MappingKeyMustBeScalar(m) => (pos(m), "a mapping key must be a plain string".to_string()),
        UnexpectedTag(m) => (pos(m), "YAML tags are not supported".to_string()),
        ScanError(m, scan) => (pos(m), format!("YAML syntax error: {}", scan.info())),
        DuplicateKey(inner) => {
            let first = inner
                .prev_key
                .span()
                .start()
                .map_or_else(String::new, |m| format!(" (first at line {})", m.line()));
            (
                inner.key.span().start().map_or((1, 1), pos),
                format!("duplicate key `{}`{first}", inner.key.as_str()),
            )
        }
    };
    (line, column, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `levels` nested sequences in block style, one line.
    fn block(levels: usize) -> String {
        format!("groups:\n  {}x\n", "- ".repeat(levels))
    }

    #[test]
    fn deep_nesting_is_refused_where_it_goes_too_deep_whatever_the_depth() {
        for levels in [MAX_DEPTH, 10_000, 200_000] {
            let mut c = Checker::new("deep.yaml");
            assert!(c.parse(&block(levels)).is_none(), "{levels}");
            let d = c.take_sorted();
            assert_eq!(d.len(), 1, "{d:?}");
            assert_eq!((d[0].line, d[0].column), (2, 2 * MAX_DEPTH + 1), "{levels}");
            assert!(d[0].message.contains("nested more than 64 levels"), "{d:?}");
        }
        // Flow style and nested mappings count the same way.
        let flow = format!("groups: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let maps: String = (0..MAX_DEPTH + 1)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        // (yaml-rust2's scanner refuses deep flow nesting itself.)
        for (text, want) in [
            (flow, "recursion limit exceeded"),
            (maps, "nested more than"),
        ] {
            let mut c = Checker::new("deep.yaml");
            assert!(c.parse(&text).is_none());
            let d = c.take_sorted();
            assert!(d[0].message.contains(want) && d[0].line > 0, "{d:?}");
        }
        // Just inside the bound parses.
        let mut c = Checker::new("ok.yaml");
        assert!(
            c.parse(&block(MAX_DEPTH - 1)).is_some(),
            "{:?}",
            c.diagnostics
        );
    }
}
