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
//! What is kept is bounded and short-lived. Views are kept in two generations: new ones go to
//! the current one, which becomes the previous one after [`ViewCache::TTL`] (or when it holds
//! [`ViewCache::CAPACITY`] consents), when the previous one is dropped; after twice the TTL
//! without a new view, both are. A view is used for at most [`ViewCache::TTL`] after it was
//! read, and leaves memory within twice that while the broker reads views (an idle broker drops
//! them at its next read). An erasure through this broker drops every kept view (and a read
//! that began before it keeps nothing); one through another broker makes the next commit from
//! the view fail its check of the key, which drops the view.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The two generations of kept views.
#[derive(Default)]
struct Generations {
    current: HashMap<ConsentId, Entry>,
    previous: HashMap<ConsentId, Entry>,
    /// When `current` was started.
    started: Option<OffsetDateTime>,
}

impl Generations {
    /// Starts a new generation if the current one is a [`ViewCache::TTL`] old (or full, or the
    /// clock went back); drops both if it is twice that. What to drop (outside the lock).
    fn turn(&mut self, now: OffsetDateTime, full: bool) -> Vec<HashMap<ConsentId, Entry>> {
        let age = self.started.map_or(Duration::ZERO, |started| now - started);
        let mut dropped = Vec::new();
        if age >= ViewCache::TTL * 2 || age < Duration::ZERO {
            dropped.push(std::mem::take(&mut self.previous));
            dropped.push(std::mem::take(&mut self.current));
            self.started = Some(now);
        } else if age >= ViewCache::TTL || full {
            let previous = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
            dropped.push(previous);
            self.started = Some(now);
        } else if self.started.is_none() {
            self.started = Some(now);
        }
        dropped
    }

    fn remove(&mut self, consent: &ConsentId) -> [Option<Entry>; 2] {
        [self.current.remove(consent), self.previous.remove(consent)]
    }
}

/// The kept views, by consent.
#[derive(Default)]
pub(super) struct ViewCache {
    on: bool,
    views: RwLock<Generations>,
    /// Raised by every [`ViewCache::clear`]: a view read before it is not kept.
    epoch: AtomicU64,
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

/// A view's mark of when it was read: the cache's epoch then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch(u64);

impl ViewCache {
    /// Consents kept at most in one generation. A view is a consent, its holder's record and the
    /// platform's profile (a few hundred bytes to a kilobyte, estimated from their types, not
    /// measured), so the two generations hold a few tens of megabytes at most; a consent asked
    /// about again within the minute is what they serve, and a broker rarely has more of those
    /// at once.
    pub(super) const CAPACITY: usize = 16_384;

    /// How long a view is used (by the broker's clock).
    pub(super) const TTL: Duration = Duration::seconds(60);

    /// A cache that keeps views if `on`.
    pub(super) fn new(on: bool) -> Self {
        Self {
            on,
            ..Self::default()
        }
    }

    /// Whether views are kept.
    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    /// The mark to give [`ViewCache::keep`] for a view about to be read.
    pub(super) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// The view kept for `consent` asked about by `platform` on `day`, if it was read less than
    /// [`ViewCache::TTL`] before `now`.
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
        let entry = views
            .current
            .get(consent)
            .or_else(|| views.previous.get(consent))?;
        let age = now - entry.read_at;
        let fresh = age < Self::TTL && age >= Duration::ZERO;
        (fresh && entry.day == day && &entry.platform == platform).then(|| entry.view.clone())
    }

    /// Keeps a view read from the store since `epoch`, if a permit decided from it would be
    /// checked by its commit on everything it read: the consent, its holder and its subject's
    /// key exist, and the platform asking is the consent's own (another platform's request is
    /// denied). A view that is not kept replaces none: the consent's kept view is dropped.
    pub(super) fn keep(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
        now: OffsetDateTime,
        view: &AccessView,
        epoch: Epoch,
    ) {
        if !self.on {
            return;
        }
        let complete = view.platform.is_some()
            && view.holder.is_some()
            && view.subject_key.is_some()
            && view
                .consent
                .as_ref()
                .is_some_and(|c| c.id() == consent && &c.request.platform == platform);
        let Ok(mut views) = self.views.write() else {
            return;
        };
        let removed = views.remove(consent);
        // An erasure since the read: what it read may be what the erasure removed.
        if !complete || self.epoch.load(Ordering::Acquire) != epoch.0 {
            drop(views);
            drop(removed);
            return;
        }
        let full = views.current.len() >= Self::CAPACITY;
        let dropped = views.turn(now, full);
        views.current.insert(
            consent.clone(),
            Entry {
                platform: platform.clone(),
                day,
                read_at: now,
                view: view.clone(),
            },
        );
        // Subject keys are wiped as they drop: not while every decision waits for the lock.
        drop(views);
        drop((removed, dropped));
    }

    /// Drops the view kept for `consent` (a commit decided from it was refused, or the consent
    /// is gone).
    pub(super) fn forget(&self, consent: &ConsentId) {
        if !self.on {
            return;
        }
        let removed = self.views.write().map(|mut views| views.remove(consent));
        drop(removed);
    }

    /// Counts an unattended access this broker recorded on `day` in the kept view, so that the
    /// next decision's precondition on the count holds.
    pub(super) fn counted(&self, consent: &ConsentId, day: Date) {
        if !self.on {
            return;
        }
        if let Ok(mut views) = self.views.write() {
            let Generations {
                current, previous, ..
            } = &mut *views;
            if let Some(entry) = current
                .get_mut(consent)
                .or_else(|| previous.get_mut(consent))
                && entry.day == day
            {
                let usage = &mut entry.view.usage;
                usage.unattended_today = usage.unattended_today.saturating_add(1);
            }
        }
    }

    /// Drops every kept view, and keeps none of those being read (an erasure: no subject's key
    /// is kept past it).
    pub(super) fn clear(&self) {
        if !self.on {
            return;
        }
        let dropped = self.views.write().map(|mut views| {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *views)
        });
        drop(dropped);
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::privacy::SubjectKey;
    use crate::store::StateRead;
    use crate::testing::{SeededRandom, TestBroker};

    const NOW: OffsetDateTime = datetime!(2026-11-30 12:00 UTC);

    /// Complete views of `n` live grants (as the store would give them, with the subject's key).
    fn views(n: usize) -> Vec<(ConsentId, PlatformId, AccessView)> {
        let fx = TestBroker::memory();
        (0..n)
            .map(|_| {
                let consent = fx.granted();
                let platform = consent.request.platform.clone();
                let mut view = fx
                    .broker
                    .store()
                    .access_view(consent.id(), &platform, NOW.date())
                    .unwrap();
                view.subject_key = Some(SubjectKey::generate(&SeededRandom::new(3)).unwrap());
                (consent.id().clone(), platform, view)
            })
            .collect()
    }

    fn a_view() -> (ConsentId, PlatformId, AccessView) {
        views(1).pop().unwrap()
    }

    fn kept(cache: &ViewCache) -> usize {
        let views = cache.views.read().unwrap();
        views.current.len() + views.previous.len()
    }

    #[test]
    fn a_view_is_used_for_a_minute_and_leaves_memory_within_two() {
        let mut two = views(2);
        let (second, _, second_view) = two.pop().unwrap();
        let (consent, platform, view) = two.pop().unwrap();
        assert_ne!(consent, second);
        let cache = ViewCache::new(true);
        let day = NOW.date();
        cache.keep(&consent, &platform, day, NOW, &view, cache.epoch());
        assert!(cache.get(&consent, &platform, day, NOW).is_some());
        let later = NOW + Duration::seconds(59);
        assert!(cache.get(&consent, &platform, day, later).is_some());
        assert!(
            cache
                .get(&consent, &platform, day, NOW + ViewCache::TTL)
                .is_none()
        );
        assert!(
            cache
                .get(&consent, &platform, day, NOW - Duration::seconds(1))
                .is_none()
        );
        assert!(
            cache
                .get(&consent, &platform, day.next_day().unwrap(), later)
                .is_none()
        );
        let other: PlatformId = "other-platform".parse().unwrap();
        assert!(cache.get(&consent, &other, day, later).is_none());
        // Another consent's view read after two minutes: the first one is gone from memory.
        cache.keep(
            &second,
            &platform,
            day,
            NOW + ViewCache::TTL * 2,
            &second_view,
            cache.epoch(),
        );
        assert_eq!(kept(&cache), 1);
        // After one minute it is the previous generation, still in memory, not used.
        cache.keep(
            &consent,
            &platform,
            day,
            NOW + ViewCache::TTL * 3,
            &view,
            cache.epoch(),
        );
        assert_eq!(kept(&cache), 2);
    }

    #[test]
    fn an_incomplete_view_drops_the_kept_one_and_an_erasure_keeps_none_being_read() {
        let (consent, platform, view) = a_view();
        let cache = ViewCache::new(true);
        let day = NOW.date();
        cache.keep(&consent, &platform, day, NOW, &view, cache.epoch());
        let gone = AccessView {
            consent: None,
            ..view.clone()
        };
        cache.keep(&consent, &platform, day, NOW, &gone, cache.epoch());
        assert!(cache.get(&consent, &platform, day, NOW).is_none());
        assert_eq!(kept(&cache), 0);
        // Read before an erasure, kept after it: not kept.
        let epoch = cache.epoch();
        cache.clear();
        cache.keep(&consent, &platform, day, NOW, &view, epoch);
        assert_eq!(kept(&cache), 0);
        cache.keep(&consent, &platform, day, NOW, &view, cache.epoch());
        assert_eq!(kept(&cache), 1);
    }

    #[test]
    fn off_keeps_nothing() {
        let (consent, platform, view) = a_view();
        let cache = ViewCache::new(false);
        cache.keep(&consent, &platform, NOW.date(), NOW, &view, cache.epoch());
        assert!(cache.get(&consent, &platform, NOW.date(), NOW).is_none());
    }
}
