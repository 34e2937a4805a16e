//! Process output that never stops the server: log lines and messages to a terminal that
//! may be closed, a pipe nobody reads, or a file on a full disk. A write that fails is
//! counted and dropped; nothing here panics (as `println!`/`eprintln!` do on a failed write)
//! or reports its own failure through the output that just failed.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines (or messages) that could not be written since the start.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn count<T>(result: std::io::Result<T>) {
    if result.is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Standard error for the log writer: every write "succeeds"; failed ones are counted.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        count(std::io::stderr().write_all(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        count(std::io::stderr().flush());
        Ok(())
    }
}

/// Writes a message to standard output (counted and dropped if it cannot be written).
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    count(out.write_all(text.as_bytes()).and_then(|()| out.flush()));
}

/// Writes a line to standard error (counted and dropped if it cannot be written).
pub fn say_err(text: &str) {
    count(writeln!(std::io::stderr(), "{text}"));
}
