//! A small thread pool for the hot loops. Decoding one token runs a few hundred short parallel
//! sections; waking parked threads for each (as general-purpose pools do) costs more than the
//! work itself, so idle workers spin briefly on an epoch counter before parking.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Spin iterations before an idle worker parks (tens of microseconds).
const SPINS_BEFORE_PARKING: u32 = 20_000;
/// Spin iterations before the caller, waiting for workers to finish, starts yielding.
const SPINS_BEFORE_YIELDING: u32 = 2_000;

struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Job>,
    next: AtomicUsize,
    /// Workers that have not finished the current epoch.
    busy: AtomicUsize,
    panicked: AtomicBool,
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the thread in `run` while every worker is idle (busy == 0),
// and read by workers only between the epoch bump that publishes it and their `busy` decrement.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one parallel section at a time.
    caller: Mutex<()>,
}

impl Pool {
    /// A pool running sections on `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> Pool {
        let noop: &(dyn Fn(usize) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(Job { f: noop as *const _, tasks: 0 }),
            next: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("hearth-worker-{i}")).spawn(move || worker(&s)).expect("spawn worker thread")
            })
            .collect();
        Pool { shared, workers, caller: Mutex::new(()) }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..tasks`, spread over the pool; returns when all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if tasks == 1 || self.workers.is_empty() {
            (0..tasks).for_each(f);
            return;
        }
        let _one_at_a_time = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: no worker is busy (the previous `run` waited for busy == 0), so none reads
        // `job` now; the pointer's lifetime is erased but we wait below until no worker uses it.
        unsafe {
            *s.job.get() = Job { f: std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f), tasks };
        }
        s.next.store(0, Ordering::Relaxed);
        s.busy.store(self.workers.len(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drain(s)));
        // Spin briefly, then yield: on a loaded machine the worker may not be running, and
        // spinning would only keep it off the CPU longer.
        let mut spins = 0u32;
        while s.busy.load(Ordering::Acquire) != 0 {
            if spins < SPINS_BEFORE_YIELDING {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a task of a parallel section panicked on a worker thread");
        }
    }
}

/// Claims and runs tasks of the current job until none are left.
fn drain(s: &Shared) {
    // SAFETY: called only while the job is published (see `Shared`).
    let job = unsafe { &*s.job.get() };
    let f = unsafe { &*job.f };
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.tasks {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen || s.shutdown.load(Ordering::Relaxed) {
                break e;
            }
            if spins < SPINS_BEFORE_PARKING {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleeping.fetch_add(1, Ordering::SeqCst);
            let _g = s
                .wake
                .wait_while(g, |_| s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Relaxed))
                .unwrap_or_else(|e| e.into_inner());
            s.sleeping.fetch_sub(1, Ordering::SeqCst);
        };
        if s.shutdown.load(Ordering::Relaxed) {
            return;
        }
        seen = epoch;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drain(s))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.busy.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A raw pointer that the tasks of a parallel section may share; each task must touch a part
/// of the pointee no other task touches.
pub struct SharedPtr<T>(pub *mut T);

// Manual impls: derived ones would demand `T: Copy`.
impl<T> Clone for SharedPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedPtr<T> {}

// SAFETY: sharing is only as safe as the disjointness the users promise (see above).
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    /// Through a method, so closures capture the whole (Sync) wrapper rather than the field.
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// The process-wide pool: `HEARTH_THREADS` threads, else one per available core.
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("HEARTH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Pool::new(threads)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once_across_many_sections() {
        let pool = Pool::new(3);
        for tasks in [0, 1, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..200 {
                pool.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 200));
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(8, &|i| assert!(i != 5))));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
