//! The bank's ledger in the memory store: the same commit semantics as the SQL stores, with an
//! undo for every change so that a failed commit leaves nothing behind.

use std::collections::{BTreeSet, HashMap};

use time::{Date, OffsetDateTime};

use super::{duplicate, missing};
use crate::ids::{ConsentId, PlatformId, SubjectId};
use crate::policy::Presence;
use crate::store::ledger::live_thumbprints;
use crate::store::{
    AttestationRecord, Change, DeviceKeyRecord, FeedState, GateQuery, GateView, PolicyRecord,
    Precondition, RecordKind, SeenKind, ServedCounts, StoreError, SubjectLink,
};

/// The ledger's tables.
#[derive(Debug, Default)]
pub(super) struct LedgerState {
    attestations: HashMap<String, AttestationRecord>,
    /// Attestation ids in the order they were recorded.
    order: Vec<String>,
    policies: Vec<PolicyRecord>,
    served: HashMap<(String, Date), ServedCounts>,
    /// Presented ids by kind, then signed time (whole seconds), then id, as the SQL stores key
    /// them: pruning takes a kind's oldest few without a scan.
    seen: BTreeSet<Seen>,
    platform_revocations: HashMap<ConsentId, OffsetDateTime>,
    feed: Option<FeedState>,
    /// Device keys in the order they were registered.
    devices: Vec<DeviceKeyRecord>,
    /// Pairwise subject identifiers, by the identifier.
    links: HashMap<SubjectId, SubjectLink>,
}

/// A remembered presented id: its kind, signed time (Unix seconds) and id.
type Seen = (SeenKind, i64, String);

/// What an erasure or a retention pass removed from the ledger, to put back if the commit fails.
pub(super) struct LedgerRemoved {
    attestations: Vec<AttestationRecord>,
    order: Vec<String>,
    served: Vec<((String, Date), ServedCounts)>,
    /// Every device key before an erasure (none for retention, which keeps them).
    devices: Option<Vec<DeviceKeyRecord>>,
    links: Vec<SubjectLink>,
    platform_revocations: Vec<(ConsentId, OffsetDateTime)>,
}

/// How to take back one applied ledger change.
pub(super) enum LedgerUndo {
    AttestationInserted(String),
    AttestationUpdated(AttestationRecord),
    PolicyAppended(usize),
    Served((String, Date), Option<ServedCounts>),
    Seen(Seen),
    Pruned(Vec<Seen>),
    PlatformRevocation(ConsentId),
    Nothing,
    Feed(Option<FeedState>),
    DeviceRegistered,
    DeviceRevoked(usize),
    Linked(SubjectId),
    Removed(Box<LedgerRemoved>),
}

impl LedgerState {
    /// Whether a ledger precondition holds; `None` for a precondition that is not the ledger's.
    pub(super) fn check(&self, precondition: &Precondition) -> Option<bool> {
        Some(match precondition {
            Precondition::AttestationVersion {
                attestation,
                version,
                ..
            } => self.attestations.get(attestation).map(|a| a.version) == Some(*version),
            Precondition::ServedIs {
                attestation,
                day,
                counts,
                ..
            } => self.served_on(attestation, *day) == *counts,
            Precondition::ServedBelow {
                attestation,
                day,
                presence,
                limit,
                ..
            } => self.served_on(attestation, *day).of(*presence) < *limit,
            Precondition::BankPolicyVersion { version, .. } => {
                self.policies.last().map(|p| p.version) == *version
            }
            Precondition::LiveAttestations { consent, ids, .. } => {
                let live: Vec<String> = self
                    .of_consent(consent)
                    .into_iter()
                    .filter(|a| a.superseded_by.is_none())
                    .map(|a| a.id)
                    .collect();
                live == *ids
            }
            Precondition::LiveDeviceKeys {
                subject,
                thumbprints,
                ..
            } => live_thumbprints(&self.devices_of(subject)) == *thumbprints,
            Precondition::NotRevokedAtPlatform { consent, .. } => {
                !self.platform_revocations.contains_key(consent)
            }
            _ => return None,
        })
    }

    /// Applies a ledger change; `Ok(None)` for a change that is not the ledger's.
    pub(super) fn apply(&mut self, change: &Change) -> Result<Option<LedgerUndo>, StoreError> {
        Ok(Some(match change {
            Change::RecordAttestation { record, .. } => {
                if self.attestations.contains_key(&record.id) {
                    return Err(duplicate(RecordKind::AttestationRecord, &record.id));
                }
                self.attestations.insert(record.id.clone(), record.clone());
                self.order.push(record.id.clone());
                LedgerUndo::AttestationInserted(record.id.clone())
            }
            Change::UpdateAttestation { record, .. } => {
                let Some(stored) = self.attestations.get_mut(&record.id) else {
                    return Err(missing(RecordKind::AttestationRecord, &record.id));
                };
                if stored.version.checked_add(1) != Some(record.version) {
                    return Err(StoreError::Conflict);
                }
                LedgerUndo::AttestationUpdated(std::mem::replace(stored, record.clone()))
            }
            Change::AppendBankPolicy { record, .. } => {
                // Kept in version order, as SQL reads them: the current policy is the highest
                // version, whatever order the versions came in.
                let at = match self
                    .policies
                    .binary_search_by_key(&record.version, |p| p.version)
                {
                    Ok(_) => {
                        return Err(duplicate(
                            RecordKind::BankPolicy,
                            &record.version.to_string(),
                        ));
                    }
                    Err(at) => at,
                };
                self.policies.insert(at, record.clone());
                LedgerUndo::PolicyAppended(at)
            }
            Change::CountServed {
                attestation,
                day,
                presence,
                ..
            } => {
                let key = (attestation.clone(), *day);
                let old = self.served.get(&key).copied();
                let mut counts = old.unwrap_or_default();
                match presence {
                    Presence::Unattended => counts.unattended = counts.unattended.saturating_add(1),
                    Presence::SubjectPresent => counts.present = counts.present.saturating_add(1),
                }
                self.served.insert(key.clone(), counts);
                LedgerUndo::Served(key, old)
            }
            Change::RememberSeen { kind, id, at, .. } => {
                let entry = (*kind, at.unix_timestamp(), id.clone());
                if !self.seen.insert(entry.clone()) {
                    return Err(duplicate(RecordKind::Presented(*kind), id));
                }
                LedgerUndo::Seen(entry)
            }
            Change::PruneSeen {
                kind,
                before,
                limit,
                ..
            } => {
                let from = (*kind, i64::MIN, String::new());
                let expired: Vec<_> = self
                    .seen
                    .range(from..)
                    .take_while(|(k, at, _)| k == kind && *at < before.unix_timestamp())
                    .take(usize::try_from(*limit).unwrap_or(usize::MAX))
                    .cloned()
                    .collect();
                for entry in &expired {
                    self.seen.remove(entry);
                }
                LedgerUndo::Pruned(expired)
            }
            Change::RecordPlatformRevocation {
                consent,
                revoked_at,
                ..
            } => {
                if self.platform_revocations.contains_key(consent) {
                    LedgerUndo::Nothing
                } else {
                    self.platform_revocations
                        .insert(consent.clone(), *revoked_at);
                    LedgerUndo::PlatformRevocation(consent.clone())
                }
            }
            Change::SetFeedState { state, .. } => LedgerUndo::Feed(self.feed.replace(*state)),
            Change::RegisterDeviceKey { record, .. } => {
                let thumbprint = record.key.thumbprint();
                if self.devices.iter().any(|d| d.key == record.key) {
                    return Err(duplicate(RecordKind::DeviceKey, &thumbprint));
                }
                self.devices.push(record.clone());
                LedgerUndo::DeviceRegistered
            }
            Change::RevokeDeviceKey {
                subject,
                thumbprint,
                at,
                ..
            } => {
                let Some(position) = self.devices.iter().position(|d| {
                    d.revoked_at.is_none()
                        && d.subject == *subject
                        && d.key.thumbprint() == *thumbprint
                }) else {
                    return Err(missing(RecordKind::DeviceKey, thumbprint));
                };
                if let Some(device) = self.devices.get_mut(position) {
                    device.revoked_at = Some(*at);
                }
                LedgerUndo::DeviceRevoked(position)
            }
            Change::LinkSubject { link, .. } => {
                let taken = self.links.contains_key(&link.pairwise)
                    || self
                        .links
                        .values()
                        .any(|l| l.customer == link.customer && l.platform == link.platform);
                if taken {
                    return Err(duplicate(RecordKind::SubjectLink, link.pairwise.as_str()));
                }
                self.links.insert(link.pairwise.clone(), link.clone());
                LedgerUndo::Linked(link.pairwise.clone())
            }
            Change::EraseSubject {
                subject,
                attestations,
                ..
            } => {
                let mut held: Vec<&String> = self
                    .order
                    .iter()
                    .filter(|id| {
                        self.attestations
                            .get(*id)
                            .is_some_and(|a| &a.subject == subject)
                    })
                    .collect();
                let mut listed: Vec<&String> = attestations.iter().collect();
                held.sort();
                listed.sort();
                if held != listed {
                    return Err(StoreError::Conflict);
                }
                let consents: Vec<ConsentId> = attestations
                    .iter()
                    .filter_map(|id| self.attestations.get(id).map(|a| a.consent.clone()))
                    .collect();
                let mut removed = self.remove_attestations(attestations);
                removed.devices = Some(self.devices.clone());
                self.devices.retain(|d| &d.subject != subject);
                let links: Vec<SubjectId> = self
                    .links
                    .values()
                    .filter(|l| &l.customer == subject)
                    .map(|l| l.pairwise.clone())
                    .collect();
                removed.links = links
                    .iter()
                    .filter_map(|id| self.links.remove(id))
                    .collect();
                removed.platform_revocations = consents
                    .iter()
                    .filter_map(|c| Some((c.clone(), self.platform_revocations.remove(c)?)))
                    .collect();
                LedgerUndo::Removed(Box::new(removed))
            }
            Change::ForgetAttestations { ids, .. } => {
                if let Some(absent) = ids.iter().find(|id| !self.attestations.contains_key(*id)) {
                    return Err(missing(RecordKind::AttestationRecord, absent));
                }
                LedgerUndo::Removed(Box::new(self.remove_attestations(ids)))
            }
            _ => return Ok(None),
        }))
    }

    /// Removes attestations with their served counts; what to put back.
    fn remove_attestations(&mut self, ids: &[String]) -> LedgerRemoved {
        let order = self.order.clone();
        let gone: std::collections::HashSet<&String> = ids.iter().collect();
        self.order.retain(|id| !gone.contains(id));
        let attestations = ids
            .iter()
            .filter_map(|id| self.attestations.remove(id))
            .collect();
        let served_keys: Vec<(String, Date)> = self
            .served
            .keys()
            .filter(|(id, _)| gone.contains(id))
            .cloned()
            .collect();
        let served = served_keys
            .into_iter()
            .filter_map(|key| {
                let counts = self.served.remove(&key)?;
                Some((key, counts))
            })
            .collect();
        LedgerRemoved {
            attestations,
            order,
            served,
            devices: None,
            links: Vec::new(),
            platform_revocations: Vec::new(),
        }
    }

    pub(super) fn undo(&mut self, undo: LedgerUndo) {
        match undo {
            LedgerUndo::AttestationInserted(id) => {
                self.attestations.remove(&id);
                if self.order.last() == Some(&id) {
                    self.order.pop();
                }
            }
            LedgerUndo::AttestationUpdated(old) => {
                self.attestations.insert(old.id.clone(), old);
            }
            LedgerUndo::PolicyAppended(at) => {
                self.policies.remove(at);
            }
            LedgerUndo::Served(key, Some(old)) => {
                self.served.insert(key, old);
            }
            LedgerUndo::Served(key, None) => {
                self.served.remove(&key);
            }
            LedgerUndo::Seen(entry) => {
                self.seen.remove(&entry);
            }
            LedgerUndo::Pruned(entries) => {
                self.seen.extend(entries);
            }
            LedgerUndo::PlatformRevocation(consent) => {
                self.platform_revocations.remove(&consent);
            }
            LedgerUndo::Nothing => {}
            LedgerUndo::Feed(old) => self.feed = old,
            LedgerUndo::DeviceRegistered => {
                self.devices.pop();
            }
            LedgerUndo::DeviceRevoked(position) => {
                if let Some(device) = self.devices.get_mut(position) {
                    device.revoked_at = None;
                }
            }
            LedgerUndo::Linked(pairwise) => {
                self.links.remove(&pairwise);
            }
            LedgerUndo::Removed(removed) => {
                let removed = *removed;
                for record in removed.attestations {
                    self.attestations.insert(record.id.clone(), record);
                }
                self.order = removed.order;
                self.served.extend(removed.served);
                if let Some(devices) = removed.devices {
                    self.devices = devices;
                }
                for link in removed.links {
                    self.links.insert(link.pairwise.clone(), link);
                }
                self.platform_revocations
                    .extend(removed.platform_revocations);
            }
        }
    }

    pub(super) fn link(&self, pairwise: &SubjectId) -> Option<SubjectLink> {
        self.links.get(pairwise).cloned()
    }

    pub(super) fn links_of_customer(&self, customer: &SubjectId) -> Vec<SubjectLink> {
        let mut links: Vec<SubjectLink> = self
            .links
            .values()
            .filter(|l| &l.customer == customer)
            .cloned()
            .collect();
        links.sort_by(|a, b| a.platform.cmp(&b.platform));
        links
    }

    pub(super) fn link_of(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Option<SubjectLink> {
        self.links
            .values()
            .find(|l| &l.customer == customer && &l.platform == platform)
            .cloned()
    }

    pub(super) fn ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Vec<AttestationRecord> {
        let mut ended: Vec<AttestationRecord> = self
            .attestations
            .values()
            .filter(|a| a.ends_at() < before)
            .cloned()
            .collect();
        ended.sort_by(|a, b| a.ends_at().cmp(&b.ends_at()).then_with(|| a.id.cmp(&b.id)));
        ended.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        ended
    }

    fn served_on(&self, attestation: &str, day: Date) -> ServedCounts {
        self.served
            .get(&(attestation.to_owned(), day))
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn attestation(&self, id: &str) -> Option<AttestationRecord> {
        self.attestations.get(id).cloned()
    }

    pub(super) fn attestations_where(
        &self,
        keep: impl Fn(&AttestationRecord) -> bool,
    ) -> Vec<AttestationRecord> {
        self.order
            .iter()
            .filter_map(|id| self.attestations.get(id))
            .filter(|record| keep(record))
            .cloned()
            .collect()
    }

    pub(super) fn of_subject(&self, subject: &SubjectId) -> Vec<AttestationRecord> {
        self.attestations_where(|record| &record.subject == subject)
    }

    pub(super) fn of_consent(&self, consent: &ConsentId) -> Vec<AttestationRecord> {
        self.attestations_where(|record| &record.consent == consent)
    }

    pub(super) fn platform_revocation(&self, consent: &ConsentId) -> Option<OffsetDateTime> {
        self.platform_revocations.get(consent).copied()
    }

    pub(super) fn policies(&self) -> Vec<PolicyRecord> {
        self.policies.clone()
    }

    pub(super) fn devices_of(&self, subject: &SubjectId) -> Vec<DeviceKeyRecord> {
        self.devices
            .iter()
            .filter(|d| &d.subject == subject)
            .cloned()
            .collect()
    }

    pub(super) fn feed(&self) -> Option<FeedState> {
        self.feed
    }

    pub(super) fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> bool {
        self.seen
            .contains(&(kind, at.unix_timestamp(), id.to_owned()))
    }

    pub(super) fn gate_view(&self, query: &GateQuery<'_>) -> GateView {
        GateView {
            proof_seen: self.seen(SeenKind::Proof, query.proof_id, query.proof_at),
            token_seen: self.seen(SeenKind::Token, query.token_id, query.token_at),
            attestation: self.attestation(query.attestation),
            policy: self.policies.last().cloned(),
            served: self.served_on(query.attestation, query.day),
            platform_revoked_at: self.platform_revocations.get(query.consent).copied(),
            feed: self.feed,
            subject_key: None,
            device_keys: Vec::new(),
        }
    }
}
