//! Identifiers: newtypes so that an agent id is never confused with a proposal id or a free-form string.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The identifier was empty.
    Empty,
    /// The identifier is longer than [`MAX_ID_LEN`] bytes.
    TooLong(usize),
    /// The identifier holds a character outside `[a-z0-9._-]`.
    BadChar(char),
}

/// Identifiers become Kafka keys and Redis key parts, so they are kept short and ASCII.
pub const MAX_ID_LEN: usize = 128;

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "identifier is empty"),
            IdError::TooLong(n) => write!(f, "identifier is {n} bytes long, at most {MAX_ID_LEN} are allowed"),
            IdError::BadChar(c) => {
                write!(f, "identifier holds {c:?}; use lowercase letters, digits, '.', '_' and '-'")
            }
        }
    }
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks the text and wraps it; see [`IdError`] for what is refused.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }

            /// The identifier as text, as it appears on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// An agent's identity. It is derived from the agent's name, so a restarted agent rejoins as itself.
    AgentId
);
id_type!(
    /// A message's identity, used to deduplicate at-least-once delivery.
    MessageId
);
id_type!(
    /// A proposal's identity; every decision names exactly one.
    ProposalId
);
id_type!(
    /// An agent's role (for example `sales`); other agents address work to a role, not to a process.
    Role
);

impl AgentId {
    /// The stable identity of an agent called `name`: the name itself, lowercased, with spaces turned into '-'.
    pub fn from_name(name: &str) -> Result<Self, IdError> {
        Self::new(name.trim().to_ascii_lowercase().replace(' ', "-"))
    }
}

// `mesh-core` depends on serde only, so the `Error` impl is written by hand rather than derived with thiserror.
impl std::error::Error for IdError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_what_cannot_be_a_kafka_key() {
        assert_eq!(AgentId::new(""), Err(IdError::Empty));
        assert_eq!(AgentId::new("Sales"), Err(IdError::BadChar('S')));
        assert_eq!(AgentId::new("a b"), Err(IdError::BadChar(' ')));
        assert!(matches!(AgentId::new("x".repeat(129)), Err(IdError::TooLong(129))));
        assert_eq!(AgentId::new("agent-1.b_c").map(String::from), Ok("agent-1.b_c".to_owned()));
    }

    #[test]
    fn identity_is_derived_from_the_name() {
        assert_eq!(AgentId::from_name(" Fraud Desk ").map(String::from), Ok("fraud-desk".to_owned()));
    }

    #[test]
    fn ids_are_checked_when_decoded() {
        let bad: Result<AgentId, _> = serde_json::from_str("\"NOPE\"");
        assert!(bad.is_err());
        let good: AgentId = serde_json::from_str("\"sales\"").expect("valid id");
        assert_eq!(good.as_str(), "sales");
    }
}
