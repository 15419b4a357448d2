//! Access views kept between decisions: on a store where reading what a decision needs costs a
//! round trip (PostgreSQL) or a read transaction (SQLite), a consent asked about again is decided
//! from the view read last time, and the decision's commit is the only call to the store.
//!
//! This is safe because a permit never rests on the kept view alone. Its commit carries a
//! precondition on every input it was decided from that can change: the consent's version, the
//! holder's version, the subject's key, and (for an unattended access) the day's count. The
//! platform's profile is never changed once registered. A commit refused by a precondition is
//! decided again at once from a fresh read. A denial is never recorded from a kept view: it is
//! decided again from a fresh read (its commit checks fewer inputs than a permit's).
//!
//! What is kept is bounded ([`ViewCache::CAPACITY`] consents; emptied when full) and short-lived
//! ([`ViewCache::TTL`] by the broker's clock). An erasure through this broker empties it; an
//! erasure through another broker leaves a kept subject key in this one's memory until the
//! entry's next use (the commit's check of the key fails, and the entry is dropped), its time to
//! live, or the cache turning over, as for the pseudonym cache.

use std::collections::HashMap;
use std::sync::RwLock;

use time::{Date, Duration, OffsetDateTime};

use crate::ids::{ConsentId, PlatformId};
use crate::store::AccessView;

/// One kept view.
struct Entry {
    platform: PlatformId,
    day: Date,
    /// When it was read, by the broker's clock.
    read_at: OffsetDateTime,
    view: AccessView,
}

/// The kept views, by consent.
#[derive(Default)]
pub(super) struct ViewCache {
    on: bool,
    views: RwLock<HashMap<ConsentId, Entry>>,
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

impl ViewCache {
    /// Consents kept at most.
    pub(super) const CAPACITY: usize = 65_536;

    /// How long a view is used (by the broker's clock).
    pub(super) const TTL: Duration = Duration::seconds(60);

    /// A cache that keeps views if `on`.
    pub(super) fn new(on: bool) -> Self {
        Self {
            on,
            views: RwLock::default(),
        }
    }

    /// Whether views are kept.
    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    /// The view kept for `consent` asked about by `platform` on `day`, if it is younger than
    /// [`ViewCache::TTL`] at `now`.
    pub(super) fn get(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
        now: OffsetDateTime,
    ) -> Option<AccessView> {
        if !self.on {
            return None;
        }
        let views = self.views.read().ok()?;
        let entry = views.get(consent)?;
        let fresh = now - entry.read_at < Self::TTL && now >= entry.read_at;
        (fresh && entry.day == day && &entry.platform == platform).then(|| entry.view.clone())
    }

    /// Keeps a view just read from the store, if a permit decided from it would be checked by
    /// its commit on everything it read: the consent, its holder and its subject's key exist,
    /// and the platform asking is the consent's own (another platform's request is denied).
    pub(super) fn keep(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
        now: OffsetDateTime,
        view: &AccessView,
    ) {
        let complete = view.platform.is_some()
            && view.holder.is_some()
            && view.subject_key.is_some()
            && view
                .consent
                .as_ref()
                .is_some_and(|c| c.id() == consent && &c.request.platform == platform);
        if !self.on || !complete {
            return;
        }
        if let Ok(mut views) = self.views.write() {
            if views.len() >= Self::CAPACITY && !views.contains_key(consent) {
                views.clear();
            }
            views.insert(
                consent.clone(),
                Entry {
                    platform: platform.clone(),
                    day,
                    read_at: now,
                    view: view.clone(),
                },
            );
        }
    }

    /// Drops the view kept for `consent` (a commit decided from it was refused).
    pub(super) fn forget(&self, consent: &ConsentId) {
        if self.on
            && let Ok(mut views) = self.views.write()
        {
            views.remove(consent);
        }
    }

    /// Counts an unattended access this broker recorded on `day` in the kept view, so that the
    /// next decision's precondition on the count holds.
    pub(super) fn counted(&self, consent: &ConsentId, day: Date) {
        if !self.on {
            return;
        }
        if let Ok(mut views) = self.views.write()
            && let Some(entry) = views.get_mut(consent)
            && entry.day == day
        {
            let usage = &mut entry.view.usage;
            usage.unattended_today = usage.unattended_today.saturating_add(1);
        }
    }

    /// Drops every kept view (an erasure: no subject's key is kept past it).
    pub(super) fn clear(&self) {
        if self.on
            && let Ok(mut views) = self.views.write()
        {
            views.clear();
        }
    }
}
