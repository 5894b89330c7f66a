//! The batch lifecycle: one enum, persisted as TEXT, and the transitions it allows.
//!
//! ```text
//! discovered ─► validated ─► uploading ─► submitted
//!     │             │          │   ▲
//!     ▼             ▼          ▼   │
//!  rejected ◄───────┘      retry_wait
//!                              │
//!  failed ◄────────────────────┘ (and uploading ─► failed on a permanent error)
//!  failed ─► validated (retry)
//! ```
//! A batch whose task panicked, or whose content cannot be read, fails from any unfinished state.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Discovered,
    Validated,
    Rejected,
    Uploading,
    RetryWait,
    Submitted,
    Failed,
}

impl State {
    pub const ALL: [State; 7] =
        [State::Discovered, State::Validated, State::Rejected, State::Uploading, State::RetryWait, State::Submitted, State::Failed];

    /// The only allowed moves; anything else is a bug.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Discovered, Validated)
                | (Discovered, Rejected)
                | (Discovered, Failed)
                | (Validated, Uploading)
                | (Validated, Failed)
                | (Validated, Rejected)
                | (Uploading, Submitted)
                | (Uploading, RetryWait)
                | (Uploading, Failed)
                | (RetryWait, Uploading)
                | (RetryWait, Failed)
                | (Failed, Validated)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Discovered => "discovered",
            State::Validated => "validated",
            State::Rejected => "rejected",
            State::Uploading => "uploading",
            State::RetryWait => "retry_wait",
            State::Submitted => "submitted",
            State::Failed => "failed",
        }
    }

    /// A batch in these states has (or is about to have) a folder on the server.
    pub fn is_in_flight(self) -> bool {
        matches!(self, State::Uploading | State::RetryWait)
    }

    /// Submitted, rejected and failed batches are filed; the others are still being worked.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Submitted | State::Rejected | State::Failed)
    }
}

/// Why a batch was rejected: a typed field of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// It breaks Jumio's batch rules; the report says where.
    Invalid,
    /// The same content was already submitted or is on its way (`duplicate_of` names it).
    Duplicate,
}

/// How a batch was made from another (its `parent_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `resubmit`: the parent's rows from `first_row` down (or a corrected CSV's), a new UUID.
    Resubmission,
    /// One part of a batch over Jumio's row limit: rows `first_row..=last_row`, part `part`.
    Part,
}

impl RejectReason {
    pub const ALL: [RejectReason; 2] = [RejectReason::Invalid, RejectReason::Duplicate];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::Duplicate => "duplicate",
        }
    }
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Resubmission, Kind::Part];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Resubmission => "resubmission",
            Kind::Part => "part",
        }
    }
}

/// A value stored as its TEXT name, the same in SQLite and PostgreSQL: encoded and decoded
/// through `&str` for any sqlx database (an unknown name in a row is an error, never a guess).
macro_rules! text_column {
    ($t:ident) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $t
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $t
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $t
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<'r, DB>>::decode(value)?;
                $t::ALL.into_iter().find(|v| v.as_str() == name).ok_or_else(|| format!("unknown {} {name:?}", stringify!($t)).into())
            }
        }
    };
}

text_column!(State);
text_column!(RejectReason);
text_column!(Kind);

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::State::{self, *};

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        let allowed = [
            (Discovered, Validated),
            (Discovered, Rejected),
            (Discovered, Failed),
            (Validated, Uploading),
            (Validated, Failed),
            (Validated, Rejected),
            (Uploading, Submitted),
            (Uploading, RetryWait),
            (Uploading, Failed),
            (RetryWait, Uploading),
            (RetryWait, Failed),
            (Failed, Validated),
        ];
        for from in State::ALL {
            for to in State::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn submitted_and_rejected_are_final() {
        for to in State::ALL {
            assert!(!Submitted.can_become(to));
            assert!(!Rejected.can_become(to));
        }
    }
}
