use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::{DocError, Result};

/// Hostile input can make a parser recurse deeply, and a stack overflow aborts the whole
/// process (no unwinding to catch), so parsers get a large stack. It is only address space
/// until it is touched.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// How many parser threads abandoned on timeout may still be running before no new parse
/// starts: each may hold a core and its memory for as long as the process lives.
pub const MAX_ABANDONED_PARSERS: usize = 4;

/// Parser threads abandoned on timeout that have not returned yet.
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Runs a third-party parser that may panic or never return on a hostile file: on its own
/// thread, with panics turned into [`DocError::Parse`] and a wait of at most `timeout`
/// ([`DocError::Timeout`]). `format` names the parser in the errors ("PDF").
///
/// A thread cannot be killed: on timeout it is abandoned and keeps its CPU and memory until
/// the parser returns, if it ever does. While [`MAX_ABANDONED_PARSERS`] are still running, new
/// parses are refused ([`DocError::ParsersStuck`]) rather than adding more.
pub fn run_isolated<T, F>(format: &'static str, timeout: Duration, parse: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let stuck = ABANDONED.load(Ordering::SeqCst);
    if stuck >= MAX_ABANDONED_PARSERS {
        return Err(DocError::ParsersStuck { format, stuck });
    }
    let (sender, receiver) = mpsc::sync_channel(1);
    // Set by whichever of the parser (returning) and the caller (giving up) comes first; the
    // second one settles the count of abandoned threads.
    let one_side_gone = Arc::new(AtomicBool::new(false));
    let parser_side = one_side_gone.clone();
    thread::Builder::new()
        .name(format!("hearth-docs {format} parser"))
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(parse));
            // After a timeout nobody is listening any more, and that is fine.
            let _ = sender.send(outcome);
            if parser_side.swap(true, Ordering::SeqCst) {
                ABANDONED.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .map_err(|error| DocError::Parse { format, message: format!("could not start a parser thread: {error}") })?;
    match receiver.recv_timeout(timeout) {
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => Err(DocError::Parse { format, message: format!("it crashed: {}", panic_message(payload.as_ref())) }),
        Err(RecvTimeoutError::Timeout) => {
            // Counted before the flag is set, so the parser can never take away a count that
            // was not added.
            ABANDONED.fetch_add(1, Ordering::SeqCst);
            if one_side_gone.swap(true, Ordering::SeqCst) {
                ABANDONED.fetch_sub(1, Ordering::SeqCst);
            }
            Err(DocError::Timeout { format, timeout })
        }
        Err(RecvTimeoutError::Disconnected) => Err(DocError::Parse { format, message: "its thread stopped without an answer".into() }),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    match payload.downcast_ref::<&str>() {
        Some(message) => message,
        None => payload.downcast_ref::<String>().map_or("unknown panic", String::as_str),
    }
}
