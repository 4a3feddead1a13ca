//! Which subscribers receive a publication: publisher exclusion (`exclude_me`) and the
//! subscriber black/white lists (`exclude`, `eligible`, `exclude_authid`, `eligible_authid`,
//! `exclude_authrole`, `eligible_authrole`). A subscriber must pass every list given.

use crate::session::SessionHandle;
use crate::wire::{Dict, Value};

/// The recipient filter of one PUBLISH.
pub struct Recipients {
    publisher: u64,
    exclude_me: bool,
    exclude: Vec<u64>,
    eligible: Option<Vec<u64>>,
    exclude_authid: Vec<String>,
    eligible_authid: Option<Vec<String>>,
    exclude_authrole: Vec<String>,
    eligible_authrole: Option<Vec<String>>,
}

impl Recipients {
    /// Reads the filter from `PUBLISH.Options`.
    pub fn from_options(publisher: &SessionHandle, options: &Dict) -> Result<Self, String> {
        Self::from_parts(publisher.id, options)
    }

    /// Reads the filter of a publication by session `publisher` (on any node) from its options.
    pub fn from_parts(publisher: u64, options: &Dict) -> Result<Self, String> {
        let exclude_me = match options.get("exclude_me") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!("PUBLISH.Options.exclude_me must be a boolean, got {}", other.describe()))
            }
        };
        Ok(Recipients {
            publisher,
            exclude_me,
            exclude: ids(options, "exclude")?.unwrap_or_default(),
            eligible: ids(options, "eligible")?,
            exclude_authid: strings(options, "exclude_authid")?.unwrap_or_default(),
            eligible_authid: strings(options, "eligible_authid")?,
            exclude_authrole: strings(options, "exclude_authrole")?.unwrap_or_default(),
            eligible_authrole: strings(options, "eligible_authrole")?,
        })
    }

    /// No filter at all (events the router publishes itself).
    pub fn everyone() -> Self {
        Recipients {
            publisher: 0,
            exclude_me: false,
            exclude: Vec::new(),
            eligible: None,
            exclude_authid: Vec::new(),
            eligible_authid: None,
            exclude_authrole: Vec::new(),
            eligible_authrole: None,
        }
    }

    /// True when `subscriber` should get the event.
    pub fn admits(&self, subscriber: &SessionHandle) -> bool {
        if (self.exclude_me && subscriber.id == self.publisher) || self.exclude.contains(&subscriber.id) {
            return false;
        }
        if self.eligible.as_ref().is_some_and(|e| !e.contains(&subscriber.id)) {
            return false;
        }
        let lists_by_identity = !self.exclude_authid.is_empty()
            || self.eligible_authid.is_some()
            || !self.exclude_authrole.is_empty()
            || self.eligible_authrole.is_some();
        if !lists_by_identity {
            return true;
        }
        let Some(identity) = subscriber.identity() else {
            return false;
        };
        let listed = |list: &[String], value: &str| list.iter().any(|x| x == value);
        !listed(&self.exclude_authid, &identity.authid)
            && self.eligible_authid.as_deref().is_none_or(|e| listed(e, &identity.authid))
            && !listed(&self.exclude_authrole, &identity.authrole)
            && self.eligible_authrole.as_deref().is_none_or(|e| listed(e, &identity.authrole))
    }
}

/// The filter options of a PUBLISH, as they travel to the other nodes (which apply them to their
/// own subscribers: session ids, authids and authroles are cluster-wide).
pub fn forwarded(options: &Dict) -> Dict {
    let mut kept = Dict::new();
    for key in FILTERS {
        if let Some(value) = options.get(key) {
            kept.insert(key, value.clone());
        }
    }
    kept
}

const FILTERS: [&str; 7] =
    ["exclude_me", "exclude", "eligible", "exclude_authid", "eligible_authid", "exclude_authrole", "eligible_authrole"];

fn ids(options: &Dict, key: &str) -> Result<Option<Vec<u64>>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| format!("PUBLISH.Options.{key} must be a list of session ids, got {}", v.describe()))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(format!("PUBLISH.Options.{key} must be a list of session ids, got {}", other.describe())),
    }
}

fn strings(options: &Dict, key: &str) -> Result<Option<Vec<String>>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("PUBLISH.Options.{key} must be a list of strings, got {}", v.describe()))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(format!("PUBLISH.Options.{key} must be a list of strings, got {}", other.describe())),
    }
}
