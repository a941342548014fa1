//! Label matchers as Alertmanager writes them (`name=value`, `!=`, `=~`,
//! `!~`, regexes anchored): the one kind of matcher of routes and silences.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Matcher {
    /// `name=value`, `name!=value`, `name=~regex` or `name!~regex`.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let ops = [
            ("!~", true, false),
            ("=~", true, true),
            ("!=", false, false),
            ("=", false, true),
        ];
        for (op, is_regex, is_equal) in ops {
            if let Some((name, value)) = text.split_once(op) {
                let name = name.trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                let value = value.trim().trim_matches('"').to_string();
                let m = Matcher {
                    name: name.to_string(),
                    value,
                    is_regex,
                    is_equal,
                };
                m.regex()?;
                return Ok(m);
            }
        }
        Err(format!(
            "{text:?} is not a matcher like alertname=FeatureDrift, model!=test, feature=~\"age|income\""
        ))
    }

    fn regex(&self) -> Result<Option<regex::Regex>, String> {
        if !self.is_regex {
            return Ok(None);
        }
        regex::Regex::new(&format!("^(?:{})$", self.value))
            .map(Some)
            .map_err(|e| format!("{}: {e}", self.value))
    }

    /// Whether the labels satisfy the matcher (a missing label is "").
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        let hit = match self.regex() {
            Ok(Some(re)) => re.is_match(v),
            Ok(None) => v == self.value,
            Err(_) => false,
        };
        hit == self.is_equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_work_like_alertmanagers() {
        let labels: BTreeMap<String, String> = [("alertname", "FeatureDrift"), ("feature", "age")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let m = |t: &str| Matcher::parse(t).expect("matcher").matches(&labels);
        assert!(m("alertname=FeatureDrift"));
        assert!(!m("alertname!=FeatureDrift"));
        assert!(m("feature=~\"age|income\""));
        assert!(!m("feature=~ag"), "regexes are anchored");
        assert!(m("feature!~inc.*"));
        assert!(m("model="), "a missing label is empty");
        assert!(Matcher::parse("no operator").is_err());
        assert!(Matcher::parse("x=~(").is_err());
    }
}
