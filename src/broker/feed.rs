//! The feed of platform-side revocations a bank follows (see [`crate::feed`]).

use super::Broker;
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::feed::{self, FeedRevocation, RevocationFeed};
use crate::ids::HolderId;
use crate::store::Store;

/// How many log entries one read of the feed takes at a time.
const CHUNK: u64 = 4_096;

impl<S: Store> Broker<S> {
    /// The revocations of `holder`'s consents recorded in the log from position `after` to its
    /// end, signed with the broker's token key: what the bank applies to learn of revocations
    /// made on the platform's side. The bank asks from where its last feed ended.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Provider`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.revocation_feed", level = "debug", skip_all)
    )]
    pub fn revocation_feed(&self, holder: &HolderId, after: u64) -> Result<String, Error> {
        let now = self.now();
        let position = self.store.audit_len()?;
        let mut revoked = Vec::new();
        let mut next = after.min(position);
        while next < position {
            let end = next.saturating_add(CHUNK).min(position);
            let chunk = self.store.audit_entries(next..end)?;
            if chunk.is_empty() {
                break;
            }
            for entry in chunk {
                let AuditEvent::ConsentRevoked {
                    consent,
                    revocation,
                    holder: named,
                    ..
                } = &entry.event
                else {
                    continue;
                };
                // The entry names the holder (an erasure deletes the consent's row in the same
                // commit); entries from before that member, the consent's row.
                let theirs = match named {
                    Some(named) => named == holder,
                    None => self
                        .store
                        .consent(consent)?
                        .is_some_and(|c| &c.request.holder == holder),
                };
                if theirs {
                    revoked.push(FeedRevocation {
                        consent: consent.clone(),
                        seq: entry.seq,
                        at: entry.at.unix_timestamp(),
                        by: revocation.by,
                    });
                }
            }
            next = end;
        }
        let contents = RevocationFeed {
            iss: self.settings.id.clone(),
            aud: holder.clone(),
            iat: now.unix_timestamp(),
            after,
            position: next.max(after),
            revoked,
        };
        Ok(feed::sign(&contents, &self.token_key())?)
    }
}
