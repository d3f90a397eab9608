//! Typed lookup of a plugin's settings (`[plugin.settings]` in the gateway config).

use crate::{Setting, SettingValue};

/// The settings a plugin was configured with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    items: Vec<Setting>,
}

fn type_name(v: &SettingValue) -> &'static str {
    match v {
        SettingValue::Text(_) => "text",
        SettingValue::Integer(_) => "integer",
        SettingValue::Boolean(_) => "boolean",
        SettingValue::TextList(_) => "text list",
    }
}

impl Settings {
    pub fn new(items: Vec<Setting>) -> Self {
        Settings { items }
    }

    /// All settings, as given.
    pub fn all(&self) -> &[Setting] {
        &self.items
    }

    /// The raw value of `key` (the last one wins if repeated).
    pub fn get(&self, key: &str) -> Option<&SettingValue> {
        self.items.iter().rev().find(|s| s.key == key).map(|s| &s.value)
    }

    fn wrong(key: &str, want: &str, got: &SettingValue) -> String {
        format!("setting '{key}' must be a {want}, not a {}", type_name(got))
    }

    /// A text setting.
    pub fn text(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(SettingValue::Text(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong(key, "text", v)),
        }
    }

    /// An integer setting.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(SettingValue::Integer(i)) => Ok(Some(*i)),
            Some(v) => Err(Self::wrong(key, "integer", v)),
        }
    }

    /// A boolean setting.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(SettingValue::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "boolean", v)),
        }
    }

    /// A text-list setting; a single text value counts as a one-element list.
    pub fn text_list(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(SettingValue::TextList(l)) => Ok(Some(l.clone())),
            Some(SettingValue::Text(s)) => Ok(Some(vec![s.clone()])),
            Some(v) => Err(Self::wrong(key, "text list", v)),
        }
    }

    /// Refuse settings this plugin does not know (typos should not silently
    /// change a security policy).
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), String> {
        for s in &self.items {
            if !known.contains(&s.key.as_str()) {
                return Err(format!("unknown setting '{}' (known: {})", s.key, known.join(", ")));
            }
        }
        Ok(())
    }
}
