//! The audit log: one line per credential event, for an operator to search
//! after an incident. Each is a log line of target `pizza_api::audit` whose
//! message is `audit ` and a JSON object: `event`, the event's fields,
//! `remote` (the peer's address) and `request_id` (see `Request::id`).
//! Written whatever `LOG_LEVEL` says. Never a secret, a hash or a token:
//! tokens are named by their `jti`.
//!
//! Refusals are what a flood is made of, so their lines are rationed: at
//! most [`REFUSALS_PER_SECOND`] a second in all ([`Audit::log_refusal`]);
//! the next line written says how many were left out (`suppressed_before`),
//! and `/metrics` counts them. Answers that ran no check at all (429 for a
//! locked client ID, 503 when every bcrypt slot is busy) get no line: the
//! `client.locked` line and the metrics stand for them.
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

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use crate::rest::Request;
use crate::{clock, metrics};

/// Refusal lines written per second at most (all kinds together).
pub const REFUSALS_PER_SECOND: u32 = 50;

/// The current second, the refusal lines written in it, and those left out
/// since the last one written.
static RATION: Mutex<(u64, u32, u64)> = Mutex::new((0, 0, 0));

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

    /// Writes the line of a refusal, if this second's ration allows.
    pub fn log_refusal(self) {
        let now = clock::unix_seconds(clock::now());
        let suppressed = {
            let mut ration = RATION.lock().unwrap_or_else(|e| e.into_inner());
            if ration.0 != now {
                (ration.0, ration.1) = (now, 0);
            }
            if ration.1 >= REFUSALS_PER_SECOND {
                ration.2 += 1;
                metrics::AUDIT_LINES_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            ration.1 += 1;
            std::mem::take(&mut ration.2)
        };
        if suppressed > 0 { self.with("suppressed_before", suppressed).log() } else { self.log() }
    }

    /// Writes the line.
    pub fn log(mut self) {
        self.fields.insert("remote".into(), self.rq.remote().map_or(Value::Null, |ip| ip.to_string().into()));
        self.fields.insert("request_id".into(), self.rq.id().into());
        log::info!(target: TARGET, "audit {}", Value::Object(self.fields));
    }
}
