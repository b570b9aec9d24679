//! Status for a person watching: one-line notes on stderr ("tracer: tracing
//! PID ..."), silenced by `-q`, and while `report` collects on a terminal, a
//! progress line (elapsed, remaining, events, losses) drawn by indicatif.
//! Nothing of the progress line reaches a pipe or a file.

use std::{
    io::IsTerminal as _,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `eprintln!` unless `-q`.
macro_rules! status {
    ($($arg:tt)*) => {
        if !$crate::status::quiet() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use status;

/// The progress line of a `report` run; does nothing off a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    duration: Option<Duration>,
}

impl Progress {
    pub fn start(duration: Option<Duration>) -> Self {
        let bar = (!quiet() && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Self { bar, duration }
    }

    /// No progress line (for `top` and `serve`).
    pub fn none() -> Self {
        Self {
            bar: None,
            duration: None,
        }
    }

    pub fn update(&self, elapsed: Duration, events: u64, lost: u64) {
        let Some(bar) = &self.bar else { return };
        let secs = elapsed.as_secs();
        let mut msg = format!("tracing {secs}s");
        if let Some(d) = self.duration {
            msg.push_str(&format!(
                ", {}s to go",
                d.saturating_sub(elapsed).as_secs_f64().ceil() as u64
            ));
        } else {
            msg.push_str(" (Ctrl-C for the report)");
        }
        msg.push_str(&format!(", {events} events"));
        if lost > 0 {
            msg.push_str(&format!(", {lost} LOST"));
        }
        bar.set_message(msg);
        bar.tick();
    }

    /// Clears the line before the report is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Single key presses on a terminal (for `q` in `tracer top`): the terminal
/// is put in non-canonical, no-echo mode while this lives, and restored
/// when it is dropped.
pub struct Keys {
    saved: libc::termios,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<u8>,
}

impl Keys {
    /// None when standard input is not a terminal.
    pub fn start() -> Option<Self> {
        use std::io::Read as _;
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            saved
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let mut stdin = std::io::stdin();
            while let Ok(1) = stdin.read(&mut byte) {
                if tx.send(byte[0]).is_err() {
                    break;
                }
            }
        });
        Some(Self { saved, rx })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `start`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}
