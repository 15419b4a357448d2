//! A bounded pool of connections: at most a fixed number open at once, lent one at a time and
//! given back when the lease is dropped. A caller that finds every connection lent waits for one
//! to come back instead of opening one more: up to its patience, then it gets an error (for the
//! SQLite store's readers, [`StoreError::Busy`](crate::StoreError::Busy) after the busy timeout).
//!
//! Why waiting and not opening: the SQLite store's readers are CPU work (a few point lookups in
//! pages the kernel already holds), so reads beyond the cores' number gain nothing from running
//! at once. An unbounded pool that kept 64 idle connections opened about 16,000 connections
//! (each parsing the schema and preparing its statements, then closed again) in 76,800 checks
//! of a gate with 256 callers, and reading was two thirds of that gate's CPU samples.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Connections of type `T`, at most `limit` open at once.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    state: Mutex<State<T>>,
    returned: Condvar,
    limit: usize,
}

#[derive(Debug)]
struct State<T> {
    idle: Vec<T>,
    /// Open connections: idle, lent, or being opened.
    open: usize,
    /// Connections opened since the pool was made (what a test checks).
    opened: u64,
}

impl<T> Pool<T> {
    /// An empty pool that opens at most `limit` connections (at least one) at once.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                opened: 0,
            }),
            returned: Condvar::new(),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection; or a new one from `open` while fewer than the limit are open; or,
    /// when the limit is reached, the first one given back within `patience` (else the error
    /// `impatient` makes: a holder stuck past it makes an error, not a hang). An error from
    /// `open` is returned (and frees its place).
    pub(crate) fn lease<E>(
        &self,
        open: impl FnOnce() -> Result<T, E>,
        patience: Duration,
        impatient: impl FnOnce() -> E,
    ) -> Result<Lease<'_, T>, E> {
        // Read from the clock only once a caller has to wait.
        let mut deadline = None;
        let mut state = self.lock();
        loop {
            if let Some(connection) = state.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    connection: Some(connection),
                });
            }
            if state.open < self.limit {
                state.open += 1;
                state.opened += 1;
                drop(state);
                // The place is freed again if `open` fails or panics.
                let place = Place(self);
                let connection = open()?;
                std::mem::forget(place);
                return Ok(Lease {
                    pool: self,
                    connection: Some(connection),
                });
            }
            let now = Instant::now();
            let left = match *deadline.get_or_insert_with(|| now.checked_add(patience)) {
                Some(deadline) if deadline <= now => return Err(impatient()),
                Some(deadline) => deadline - now,
                None => patience,
            };
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// One connection fewer is open: a waiting caller may open one.
    fn closed(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.returned.notify_one();
    }

    fn give_back(&self, connection: T) {
        self.lock().idle.push(connection);
        self.returned.notify_one();
    }

    /// Connections opened since the pool was made.
    #[cfg(test)]
    pub(crate) fn opened(&self) -> u64 {
        self.lock().opened
    }

    /// Runs `look` on the idle connections.
    #[cfg(test)]
    pub(crate) fn idle<R>(&self, look: impl FnOnce(&[T]) -> R) -> R {
        look(&self.lock().idle)
    }
}

/// A place taken to open a connection: given back when dropped (an error or a panic of `open`),
/// forgotten once the connection is lent.
struct Place<'p, T>(&'p Pool<T>);

impl<T> Drop for Place<'_, T> {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// A connection lent by a [`Pool`]: given back when dropped, or closed by [`Lease::discard`].
#[derive(Debug)]
pub(crate) struct Lease<'p, T> {
    pool: &'p Pool<T>,
    /// Always `Some` until the lease ends.
    connection: Option<T>,
}

impl<T> Lease<'_, T> {
    /// The connection.
    pub(crate) fn connection(&mut self) -> Option<&mut T> {
        self.connection.as_mut()
    }

    /// Closes the connection instead of giving it back (after an error that may have left it
    /// in a state the next reader should not meet).
    pub(crate) fn discard(mut self) {
        drop(self.connection.take());
        self.pool.closed();
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Longer than any test waits.
    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn a_caller_that_waits_past_its_patience_gets_an_error_and_opens_nothing() {
        let pool = Arc::new(Pool::<u32>::new(1));
        let held = pool
            .lease(|| Ok::<u32, &str>(1), LONG, || "impatient")
            .unwrap();
        let (sent, got) = std::sync::mpsc::channel();
        let waiting = Arc::clone(&pool);
        std::thread::spawn(move || {
            let waited = waiting.lease(
                || Ok::<u32, &str>(2),
                Duration::from_millis(30),
                || "impatient",
            );
            let _ = sent.send(waited.err());
        });
        // Answered long before the holder gives its connection back: with the error.
        assert_eq!(got.recv_timeout(LONG).ok(), Some(Some("impatient")));
        assert_eq!(pool.opened(), 1);
        drop(held);
        assert!(
            pool.lease(|| Ok::<u32, &str>(3), LONG, || "impatient")
                .is_ok()
        );
        assert_eq!(pool.opened(), 1, "the connection given back was lent again");
    }

    #[test]
    fn a_caller_past_the_limit_waits_for_a_connection_given_back_and_opens_none() {
        let pool = Arc::new(Pool::<u32>::new(2));
        let open = || Ok::<u32, ()>(7);
        let first = pool.lease(open, LONG, || ()).unwrap();
        let second = pool.lease(open, LONG, || ()).unwrap();
        assert_eq!(pool.opened(), 2);
        let served = Arc::new(AtomicBool::new(false));
        let waiting = {
            let (pool, served) = (Arc::clone(&pool), Arc::clone(&served));
            std::thread::spawn(move || {
                let mut lease = pool.lease(|| Ok::<u32, ()>(9), LONG, || ()).unwrap();
                served.store(true, Ordering::SeqCst);
                *lease.connection().unwrap()
            })
        };
        // Whatever the scheduling, the third caller cannot be served before a lease ends.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!served.load(Ordering::SeqCst), "served past the limit");
        drop(first);
        assert_eq!(
            waiting.join().ok(),
            Some(7),
            "it got the connection given back"
        );
        assert_eq!(pool.opened(), 2, "no third connection was opened");
        drop(second);
        assert_eq!(pool.idle(|idle| idle.len()), 2);
    }

    /// A panic while opening (in `open`) frees the place it took: else, after `limit` of them,
    /// every later caller would wait for ever.
    #[test]
    #[expect(clippy::panic, reason = "the opening under test panics")]
    fn a_panic_while_opening_frees_its_place() {
        let pool = Arc::new(Pool::<u32>::new(1));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = pool.lease(
                || -> Result<u32, ()> { panic!("open panicked") },
                LONG,
                || (),
            );
        }));
        assert!(panicked.is_err());
        let (sent, got) = std::sync::mpsc::channel();
        let leasing = Arc::clone(&pool);
        std::thread::spawn(move || {
            let lease = leasing.lease(|| Ok::<u32, ()>(5), LONG, || ());
            let _ = sent.send(lease.map(|mut lease| lease.connection().copied()));
        });
        assert_eq!(
            got.recv_timeout(std::time::Duration::from_secs(10)).ok(),
            Some(Ok(Some(5))),
            "the place taken by the panicked opening was never freed"
        );
    }

    #[test]
    fn a_discarded_or_failed_connection_frees_its_place() {
        let pool = Pool::<u32>::new(1);
        assert_eq!(
            pool.lease(|| Err::<u32, &str>("no file"), LONG, || "impatient")
                .err(),
            Some("no file")
        );
        let lease = pool.lease(|| Ok::<u32, ()>(1), LONG, || ()).unwrap();
        lease.discard();
        // Both places came back: a new connection opens at once, and nothing idle was kept.
        assert_eq!(pool.idle(|idle| idle.len()), 0);
        let mut lease = pool.lease(|| Ok::<u32, ()>(3), LONG, || ()).unwrap();
        assert_eq!(lease.connection().copied(), Some(3));
        assert_eq!(pool.opened(), 3);
    }
}
