//! Parser threads abandoned on timeout are capped. A test binary of its own: the count is
//! process-wide, and another test's timeout would shift it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hearth_docs::{run_isolated, DocError, MAX_ABANDONED_PARSERS};

static RELEASED: AtomicBool = AtomicBool::new(false);

fn hang_until_released() -> hearth_docs::Result<()> {
    while !RELEASED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[test]
fn abandoned_parsers_are_capped_until_they_return() {
    for _ in 0..MAX_ABANDONED_PARSERS {
        let hung = run_isolated("PDF", Duration::from_millis(20), hang_until_released).unwrap_err();
        assert!(matches!(hung, DocError::Timeout { .. }), "{hung:?}");
    }
    let refused = run_isolated("PDF", Duration::from_secs(5), || Ok(1)).unwrap_err();
    assert!(matches!(refused, DocError::ParsersStuck { stuck: MAX_ABANDONED_PARSERS, .. }), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        format!("PDF parsing refused: {MAX_ABANDONED_PARSERS} parsers that timed out on earlier files are still running (restart the process to reclaim them)")
    );

    // Once the stuck parsers return, parsing starts again.
    RELEASED.store(true, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        match run_isolated("PDF", Duration::from_secs(5), || Ok(2)) {
            Ok(n) => break assert_eq!(n, 2),
            Err(DocError::ParsersStuck { .. }) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("still refused after {:?}: {e}", started.elapsed()),
        }
    }
}
