//! Predicates on a node's status, for `wait: {status: "detail.keys >= 8"}` steps.
//!
//! `PATH OP VALUE`: PATH is dotted into the node's `{"role": ..., "detail": {...}}` (as its
//! `/status` reports them; a number steps into a list, `detail.partitions.0.role`, and so does
//! the `name` of one of its elements, `detail.partitions.events/0.role`); OP is one of
//! `== != >= <= > <`; VALUE is a number, `true`, `false`, or a word (compared as a string; it may be quoted: `role == "leader"`, and a quoted
//! `"5"` or `"true"` is the string). Numbers compare as numbers; everything else only
//! with `==` and `!=`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusPredicate {
    path: Vec<String>,
    cmp: Cmp,
    value: serde_json::Value,
    text: String,
}

impl StatusPredicate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [path, cmp, value] = words[..] else {
            return Err(format!(
                "{text:?}: expected PATH OP VALUE, e.g. \"detail.keys >= 8\" or \"role == leader\""
            ));
        };
        let cmp = match cmp {
            "==" => Cmp::Eq,
            "!=" => Cmp::Ne,
            ">=" => Cmp::Ge,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            "<" => Cmp::Lt,
            other => {
                return Err(format!(
                    "{text:?}: unknown comparison {other:?}; use == != >= <= > <"
                ));
            }
        };
        // A quoted word is the word: `role == "leader"` as `role == leader`.
        let quoted = ['"', '\''].iter().find_map(|q| {
            value
                .strip_prefix(*q)
                .and_then(|v| v.strip_suffix(*q))
                .filter(|_| value.len() >= 2)
        });
        let value = match quoted {
            Some(word) => serde_json::Value::String(word.to_string()),
            None => match value {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                v => v.parse::<f64>().map_or_else(
                    |_| serde_json::Value::String(v.to_string()),
                    |n| serde_json::json!(n),
                ),
            },
        };
        if !value.is_number() && !matches!(cmp, Cmp::Eq | Cmp::Ne) {
            return Err(format!(
                "{text:?}: only numbers can be ordered; use == or != for {value}"
            ));
        }
        Ok(Self {
            path: path.split('.').map(str::to_string).collect(),
            cmp,
            value,
            text: text.to_string(),
        })
    }

    /// Whether `status` (`{"role": ..., "detail": ...}`) satisfies it. A missing path does not.
    pub fn holds(&self, status: &serde_json::Value) -> bool {
        let Some(found) = self.path.iter().try_fold(status, |v, key| step(v, key)) else {
            return false;
        };
        match (found.as_f64(), self.value.as_f64()) {
            (Some(a), Some(b)) => match self.cmp {
                Cmp::Eq => a == b,
                Cmp::Ne => a != b,
                Cmp::Ge => a >= b,
                Cmp::Le => a <= b,
                Cmp::Gt => a > b,
                Cmp::Lt => a < b,
            },
            _ => {
                let equal = match (&self.value, found) {
                    (serde_json::Value::String(want), serde_json::Value::String(got)) => {
                        want == got
                    }
                    (want, got) => want == got,
                };
                match self.cmp {
                    Cmp::Eq => equal,
                    Cmp::Ne => !equal,
                    _ => false,
                }
            }
        }
    }
}

/// The value at a dotted `path` (`detail.applied`) of a node's `{"role", "detail"}`; `None`
/// if it is missing or null.
pub fn lookup<'a>(status: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(status, |v, key| step(v, key))
        .filter(|v| !v.is_null())
}

/// One step of a path: a field of an object, or an element of a list by its number or by
/// its `name` field (`detail.partitions.events/0.role`).
fn step<'a>(value: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => match key.parse::<usize>() {
            Ok(index) => items.get(index),
            Err(_) => items.iter().find(|item| item["name"] == key),
        },
        _ => value.get(key),
    }
}

/// Checks a path written in a scenario: dotted words, starting at `role` or `detail`.
pub fn check_path(path: &str) -> Result<(), String> {
    let first = path.split('.').next().unwrap_or_default();
    if (first != "role" && first != "detail") || path.split('.').any(str::is_empty) {
        return Err(format!(
            "{path:?}: a status path starts at role or detail, e.g. detail.applied"
        ));
    }
    Ok(())
}

impl fmt::Display for StatusPredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_number_or_a_name_in_a_path_steps_into_a_list() {
        let status = json!({"detail": {"partitions": [
            {"name": "t/0", "role": "leader"},
            {"name": "t/1", "role": "follower"},
        ]}});
        let p = StatusPredicate::parse("detail.partitions.1.role == follower").unwrap();
        assert!(p.holds(&status));
        let p = StatusPredicate::parse("detail.partitions.0.role == follower").unwrap();
        assert!(!p.holds(&status));
        let p = StatusPredicate::parse("detail.partitions.t/1.role == follower").unwrap();
        assert!(p.holds(&status));
        assert!(lookup(&status, "detail.partitions.2.role").is_none());
        assert!(lookup(&status, "detail.partitions.x").is_none());
    }

    #[test]
    fn predicates_compare_numbers_words_and_flags() {
        let status = json!({"role": "leader", "detail": {"keys": 8, "joint": false}});
        for quoted in [
            "role == \"leader\"",
            "role == 'leader'",
            "role != \"candidate\"",
        ] {
            assert!(
                StatusPredicate::parse(quoted).unwrap().holds(&status),
                "{quoted}"
            );
        }
        assert!(
            !StatusPredicate::parse("detail.keys == \"8\"")
                .unwrap()
                .holds(&status),
            "a quoted number is a string"
        );
        assert!(
            StatusPredicate::parse("detail.keys >= 8")
                .unwrap()
                .holds(&status)
        );
        assert!(
            !StatusPredicate::parse("detail.keys > 8")
                .unwrap()
                .holds(&status)
        );
        assert!(
            StatusPredicate::parse("role == leader")
                .unwrap()
                .holds(&status)
        );
        assert!(
            StatusPredicate::parse("role != follower")
                .unwrap()
                .holds(&status)
        );
        assert!(
            StatusPredicate::parse("detail.joint == false")
                .unwrap()
                .holds(&status)
        );
        assert!(
            !StatusPredicate::parse("detail.missing == 1")
                .unwrap()
                .holds(&status)
        );
    }

    #[test]
    fn malformed_predicates_say_what_was_expected() {
        assert!(
            StatusPredicate::parse("detail.keys")
                .unwrap_err()
                .contains("PATH OP VALUE")
        );
        assert!(
            StatusPredicate::parse("a ~ 1")
                .unwrap_err()
                .contains("unknown comparison")
        );
        assert!(
            StatusPredicate::parse("role > leader")
                .unwrap_err()
                .contains("only numbers")
        );
    }
}
