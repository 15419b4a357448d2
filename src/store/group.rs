//! Group commit: concurrent callers' commits share one transaction and one flush to disk.
//!
//! Every caller queues its job and waits. One caller at a time leads: it takes every job queued
//! so far (its own among them), hands the batch to the store, which applies each job in its own
//! savepoint inside one transaction and makes the transaction durable once, and then answers every
//! caller in the batch. Only then does it hand the lead to the first caller that queued while it
//! was writing, which yields its core once (so the callers just answered can queue their next
//! commits) and takes everything queued by then as its batch. A caller alone pays what it paid
//! before (a batch of one); under load the flush is shared by as many callers as arrived during
//! the previous one, which is what makes durable throughput grow with concurrency.
//!
//! No caller is answered before the flush that covers its commit has returned, and a caller whose
//! batch failed is answered with the failure. If the store's batch function panics, every caller
//! still waiting is answered with the fallback error and the lead is passed on, so nobody waits
//! forever.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// What a waiting caller's slot holds.
enum State<R> {
    /// Queued, not yet written.
    Waiting,
    /// The previous leader handed the lead to this caller: it writes the next batch.
    Lead,
    /// Written (or failed): the answer.
    Done(R),
}

/// Where a caller waits for its answer.
struct Slot<R> {
    state: Mutex<State<R>>,
    changed: Condvar,
}

impl<R> Slot<R> {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::Waiting),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, state: State<R>) {
        *self.lock() = state;
        self.changed.notify_one();
    }

    /// Waits until the slot is answered or given the lead; `None` means the lead.
    fn wait(&self) -> Option<R> {
        let mut state = self.lock();
        loop {
            match std::mem::replace(&mut *state, State::Waiting) {
                State::Waiting => {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                State::Lead => return None,
                State::Done(answer) => return Some(answer),
            }
        }
    }

    fn take(&self) -> Option<R> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Waiting) {
            State::Done(answer) => Some(answer),
            other => {
                *state = other;
                None
            }
        }
    }
}

struct Queue<J, R> {
    jobs: Vec<(J, Arc<Slot<R>>)>,
    /// Whether some caller is leading (writing a batch or about to).
    leading: bool,
}

/// A group-commit queue for jobs `J` answered with `R`.
pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Queue<J, R>>,
    /// The most jobs one batch takes (the rest wait for the next).
    max_batch: usize,
}

impl<J, R> std::fmt::Debug for GroupCommit<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

/// Passes the lead on and answers every slot a leader took but did not answer (a panic in the
/// batch function), when dropped.
struct Leading<'a, J, R> {
    group: &'a GroupCommit<J, R>,
    taken: Vec<Arc<Slot<R>>>,
    fallback: &'a dyn Fn() -> R,
    handed_off: bool,
}

impl<J, R> Leading<'_, J, R> {
    /// Gives the lead to the first job still queued (its caller starts the next batch), or
    /// gives it up when nothing is queued. Done after answering this batch's callers, so that
    /// they are woken first and can queue their next commits into the next batch (see
    /// `GroupCommit::wait`): handing off first split eight callers into two halves that took
    /// turns, each batch half as large.
    fn hand_off(&mut self) {
        if std::mem::replace(&mut self.handed_off, true) {
            return;
        }
        let mut queue = self.group.lock();
        match queue.jobs.first() {
            Some((_, next)) => next.set(State::Lead),
            None => queue.leading = false,
        }
    }
}

impl<J, R> Drop for Leading<'_, J, R> {
    fn drop(&mut self) {
        self.hand_off();
        for slot in self.taken.drain(..) {
            // Only slots the batch did not answer: `submit` takes each answered slot out of
            // `taken` (the leader's own, whose answer it takes back at once, among them).
            let mut state = slot.lock();
            if matches!(*state, State::Waiting) {
                *state = State::Done((self.fallback)());
                drop(state);
                slot.changed.notify_one();
            }
        }
    }
}

impl<J, R> GroupCommit<J, R> {
    /// A queue whose batches hold at most `max_batch` jobs (at least one).
    pub(crate) fn new(max_batch: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                leading: false,
            }),
            max_batch: max_batch.max(1),
        }
    }

    /// Whether no batch is being written and none is waiting to be: what a reader checks before
    /// borrowing the writer's connection, so that a batch seldom waits for it (a commit queued
    /// just after the check waits for that one read).
    pub(crate) fn is_quiet(&self) -> bool {
        let queue = self.lock();
        !queue.leading && queue.jobs.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Queue<J, R>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` and returns its answer, once the batch that holds it has been written by
    /// `write` (on this thread or another caller's). `write` gets the batch's jobs in the order
    /// they queued and returns one answer per job, in the same order; `fallback` answers a job
    /// whose batch function panicked or returned too few answers.
    pub(crate) fn submit(
        &self,
        job: J,
        write: &dyn Fn(Vec<J>) -> Vec<R>,
        fallback: &dyn Fn() -> R,
    ) -> R {
        let slot = Arc::new(Slot::new());
        let lead = {
            let mut queue = self.lock();
            queue.jobs.push((job, Arc::clone(&slot)));
            !std::mem::replace(&mut queue.leading, true)
        };
        if !lead && let Some(answer) = Self::wait(&slot) {
            return answer;
        }
        // This caller leads: its own job is still queued (only leaders take jobs), first or
        // among the first `max_batch` (the lead goes to the first job queued).
        loop {
            let batch: Vec<(J, Arc<Slot<R>>)> = {
                let mut queue = self.lock();
                let take = queue.jobs.len().min(self.max_batch);
                queue.jobs.drain(..take).collect()
            };
            let (jobs, slots): (Vec<J>, Vec<Arc<Slot<R>>>) = batch.into_iter().unzip();
            let mut leading = Leading {
                group: self,
                taken: slots,
                fallback,
                handed_off: false,
            };
            let mut answers = write(jobs).into_iter();
            // Each slot answered leaves `taken`: only slots the batch left unanswered (too few
            // answers) stay for the fallback, so none is answered twice and the fallback is
            // made only for a batch that failed to answer.
            leading.taken.retain(|slot| match answers.next() {
                Some(answer) => {
                    slot.set(State::Done(answer));
                    false
                }
                None => true,
            });
            leading.hand_off();
            let own = slot.take();
            // Dropping `leading` answers any slot left unanswered.
            drop(leading);
            if let Some(answer) = own {
                return answer;
            }
            // Not in that batch (more than `max_batch` queued ahead of it): the lead went to the
            // first job still queued, which may be this one.
            if let Some(answer) = Self::wait(&slot) {
                return answer;
            }
        }
    }

    /// Waits for `slot`'s answer, or for the lead (`None`). A caller handed the lead first
    /// yields its core once: the previous batch's callers, answered just before the hand-off,
    /// are waking up with their next commits, and this lets them queue into the batch about to
    /// be taken instead of waiting a whole flush for the one after. Under load the callers then
    /// move as one group rather than two alternating halves (eight callers: 7.4 commits a
    /// transaction instead of 4.4; see BENCHMARKS.md). A caller that leads at once (nobody was
    /// writing) does not yield: a lone caller's latency is unchanged.
    fn wait(slot: &Slot<R>) -> Option<R> {
        let answer = slot.wait();
        if answer.is_none() {
            std::thread::yield_now();
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::GroupCommit;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn the_group_is_quiet_only_when_no_batch_is_written_or_waiting() {
        let group = Arc::new(GroupCommit::<usize, usize>::new(8));
        assert!(group.is_quiet());
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let leader = {
            let (group, entered, release) = (group.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                group.submit(
                    1,
                    &|jobs: Vec<usize>| {
                        entered.wait();
                        release.wait();
                        jobs
                    },
                    &|| usize::MAX,
                )
            })
        };
        entered.wait();
        assert!(!group.is_quiet(), "a batch is being written");
        release.wait();
        assert_eq!(leader.join().ok(), Some(1));
        assert!(group.is_quiet());
    }

    #[test]
    fn every_caller_gets_its_own_answer_and_batches_form_under_load() {
        const THREADS: usize = 8;
        const EACH: usize = 200;
        let group = Arc::new(GroupCommit::<usize, usize>::new(64));
        let batches = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (group, batches, barrier) = (group.clone(), batches.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..EACH {
                        let job = t * 1_000_000 + i;
                        let answer = group.submit(
                            job,
                            &|jobs: Vec<usize>| {
                                batches.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                jobs.into_iter().map(|j| j * 2).collect()
                            },
                            &|| usize::MAX,
                        );
                        assert_eq!(answer, job * 2);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|_| unreachable!("a caller panicked"));
        }
        let batches = batches.load(Ordering::Relaxed);
        assert!(
            batches < THREADS * EACH / 2,
            "{batches} batches for {} jobs: commits were not grouped",
            THREADS * EACH
        );
    }

    #[test]
    fn a_batch_that_panics_answers_everyone_with_the_fallback_and_passes_the_lead() {
        let group = Arc::new(GroupCommit::<u32, Result<u32, ()>>::new(8));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit(
                1,
                &|_| unreachable!("the batch function fails"),
                &|| Err(()),
            )
        }));
        assert!(panicked.is_err());
        // The lead was released: the next caller leads and is answered.
        let answer = group.submit(2, &|jobs| jobs.into_iter().map(Ok).collect(), &|| Err(()));
        assert_eq!(answer, Ok(2));
    }

    #[test]
    fn a_batch_that_answers_every_job_never_makes_the_fallback() {
        // The fallback is the answer for a batch that failed to answer; it was also made for
        // every slot whose caller had already taken its answer (the leader's own, at least),
        // an allocation on the leader's serial path for nothing.
        let made = AtomicUsize::new(0);
        let fallback = || {
            made.fetch_add(1, Ordering::Relaxed);
            None
        };
        let group = GroupCommit::<u32, Option<u32>>::new(8);
        let threads = 4;
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (group, barrier, fallback) = (&group, &barrier, &fallback);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..100 {
                        let job = u32::try_from(t * 1_000 + i).unwrap();
                        let answer = group.submit(
                            job,
                            &|jobs| jobs.into_iter().map(Some).collect(),
                            fallback,
                        );
                        assert_eq!(answer, Some(job));
                    }
                });
            }
        });
        assert_eq!(made.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn too_few_answers_leave_no_caller_waiting() {
        let group = GroupCommit::<u32, Option<u32>>::new(8);
        let answer = group.submit(7, &|_| Vec::new(), &|| None);
        assert_eq!(answer, None);
    }
}
