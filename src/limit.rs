//! A bound on how many threads run one CPU-bound step at once ([`Limiter`]).
//!
//! The gate's signature verifications are about half of its CPU. An HTTP gate runs up to
//! `http::MAX_IN_FLIGHT` checks at once on blocking threads; with far more threads verifying
//! than there are cores, the scheduler shares the cores among all of them, and the thread that
//! writes the journal's next transaction (the group commit's leader, whom every one of them then
//! waits for) gets a sliver. Bounding the verifying threads to the cores keeps the writer's share,
//! and the others sleep until their turn instead of taking cores in slices.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Lets at most `max` threads at a time past [`Limiter::enter`]; the others sleep until one
/// leaves. Only a count is kept under its lock, so a panic elsewhere cannot leave it poisoned in
/// a state that matters: a poisoned lock is taken as it is.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// `usize::MAX`: no bound (no lock is taken).
    max: usize,
    inside: Mutex<usize>,
    left: Condvar,
}

/// A thread's place inside a [`Limiter`], given back when dropped (a panic included).
#[derive(Debug)]
#[must_use = "the place is given back when this is dropped"]
pub(crate) struct Inside<'a>(Option<&'a Limiter>);

impl Limiter {
    /// At most `max` threads at once (at least one); `usize::MAX` for no bound.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            inside: Mutex::new(0),
            left: Condvar::new(),
        }
    }

    /// The most threads let in at once.
    #[cfg(test)]
    pub(crate) fn bound(&self) -> usize {
        self.max
    }

    fn count(&self) -> MutexGuard<'_, usize> {
        self.inside.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a place and takes it.
    pub(crate) fn enter(&self) -> Inside<'_> {
        if self.max == usize::MAX {
            return Inside(None);
        }
        let mut inside = self.count();
        while *inside >= self.max {
            inside = self
                .left
                .wait(inside)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *inside += 1;
        Inside(Some(self))
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        if let Some(limiter) = self.0 {
            let mut inside = limiter.count();
            debug_assert!(*inside > 0, "a place given back twice");
            *inside = inside.saturating_sub(1);
            drop(inside);
            limiter.left.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limiter;
    use std::sync::mpsc;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// Long enough for any thread the limiter wrongly let in to have said so.
    const SETTLE: Duration = Duration::from_millis(200);
    /// Far longer than a thread needs to be woken: a failure, not a slow machine.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A thread that enters `limiter` and says so (leaving at once).
    fn enters_apart(limiter: &Arc<Limiter>) -> (std::thread::JoinHandle<()>, mpsc::Receiver<()>) {
        let (entered, told) = mpsc::channel();
        let limiter = Arc::clone(limiter);
        let thread = std::thread::spawn(move || {
            let _inside = limiter.enter();
            entered.send(()).unwrap();
        });
        (thread, told)
    }

    /// A thread that enters `limiter`, says so, and stays inside until told to leave.
    fn stays_inside(limiter: &Arc<Limiter>) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered, told) = mpsc::channel();
        let (leave, left) = mpsc::channel::<()>();
        let limiter = Arc::clone(limiter);
        std::thread::spawn(move || {
            let _inside = limiter.enter();
            entered.send(()).unwrap();
            let _ = left.recv();
        });
        (told, leave)
    }

    #[test]
    fn a_third_thread_waits_while_two_are_inside_and_enters_when_one_leaves() {
        let limiter = Arc::new(Limiter::new(2));
        let (first_in, first_leaves) = stays_inside(&limiter);
        let (second_in, _second_leaves) = stays_inside(&limiter);
        for entered in [&first_in, &second_in] {
            entered
                .recv_timeout(DEADLINE)
                .expect("two threads could not be inside at once");
        }
        let (third, told) = enters_apart(&limiter);
        assert_eq!(
            told.recv_timeout(SETTLE),
            Err(mpsc::RecvTimeoutError::Timeout),
            "a third thread got in while two were inside"
        );
        first_leaves.send(()).unwrap();
        told.recv_timeout(DEADLINE)
            .expect("the third thread never got the place the first gave back");
        third.join().unwrap();
    }

    #[test]
    fn never_more_inside_than_the_bound_under_contention() {
        const THREADS: usize = 8;
        let limiter = Arc::new(Limiter::new(3));
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(THREADS));
        let (finished, told) = mpsc::channel();
        for _ in 0..THREADS {
            let (limiter, inside, most, start, finished) = (
                Arc::clone(&limiter),
                Arc::clone(&inside),
                Arc::clone(&most),
                Arc::clone(&start),
                finished.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..500 {
                    let _place = limiter.enter();
                    let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                finished.send(()).unwrap();
            });
        }
        // A place never given back would leave threads waiting: a failure, not a hang.
        for _ in 0..THREADS {
            told.recv_timeout(DEADLINE)
                .expect("a thread never finished: a place was not given back");
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} threads inside at once");
        assert_eq!(*limiter.count(), 0, "every place was given back");
    }

    #[test]
    fn a_place_is_given_back_when_its_thread_panics() {
        let limiter = Arc::new(Limiter::new(1));
        let panicked = {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                let _inside = limiter.enter();
                panic!("the verified step failed");
            })
            .join()
        };
        assert!(panicked.is_err());
        let (next, told) = enters_apart(&limiter);
        told.recv_timeout(DEADLINE)
            .expect("the place the panicking thread held was never given back");
        next.join().unwrap();
    }

    #[test]
    fn no_bound_takes_no_place() {
        let limiter = Limiter::new(usize::MAX);
        let places: Vec<_> = (0..1000).map(|_| limiter.enter()).collect();
        assert_eq!(places.len(), 1000);
        assert_eq!(*limiter.count(), 0);
        // A bound of zero is one.
        let one = Limiter::new(0);
        let _inside = one.enter();
        assert_eq!(*one.count(), 1);
    }
}
