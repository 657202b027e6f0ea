//! The audit log: one line per credential event, for an operator to search
//! after an incident. Each is a log line of target `pizza_api::audit` whose
//! message is `audit ` and a JSON object: `event`, the event's fields,
//! `remote` (the peer's address) and `request_id` (see `Request::id`).
//! Written whatever `LOG_LEVEL` says. Never a secret, a hash or a token:
//! tokens are named by their `jti`.
//!
//! | `event` | fields |
//! |---|---|
//! | `token.issued` | `client_id`, `user_id`, `scope`, `jti`, `expires_at`, `secret` (`current` or `previous`) |
//! | `token.refused` | `client_id` (as presented), `error` (the OAuth error), `reason` |
//! | `token.revoked` | `client_id`, `jti`, `outcome` (`revoked`, `not_found`, `other_client`) |
//! | `token.rejected` | a revoked token was presented: `client_id`, `user_id`, `jti`, `reason` |
//! | `client.locked` | `client_id`, `retry_after_seconds`: too many wrong secrets; refused for that long |
//! | `client.created`, `client.deleted` | `client_id`, `caller_user_id`, `caller_client_id` |
//! | `client.secret_rotated` | the same, and `generation`, `previous_secret_expires_at` |

use serde_json::{Map, Value};

use crate::rest::Request;

/// The log target of audit lines.
pub const TARGET: &str = "pizza_api::audit";

/// The most characters of a client-chosen text (a presented client ID) kept.
const MAX_TEXT_CHARS: usize = 255;

/// An audit line being put together; [`Audit::log`] writes it.
#[must_use = "an audit event is only written by log()"]
pub struct Audit<'r> {
    rq: &'r Request,
    fields: Map<String, Value>,
}

/// Starts the audit line of `event` for the request `rq`.
pub fn event<'r>(rq: &'r Request, event: &'static str) -> Audit<'r> {
    let mut fields = Map::new();
    fields.insert("event".into(), event.into());
    Audit { rq, fields }
}

impl Audit<'_> {
    /// Adds a field.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// Adds text a client chose (cut to 255 characters).
    pub fn with_text(self, key: &'static str, text: &str) -> Self {
        let cut: String = text.chars().take(MAX_TEXT_CHARS).collect();
        self.with(key, cut)
    }

    /// Writes the line.
    pub fn log(mut self) {
        self.fields.insert("remote".into(), self.rq.remote().map_or(Value::Null, |ip| ip.to_string().into()));
        self.fields.insert("request_id".into(), self.rq.id().into());
        log::info!(target: TARGET, "audit {}", Value::Object(self.fields));
    }
}
