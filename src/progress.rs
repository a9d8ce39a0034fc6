//! What the user sees while hb works: on a terminal, a spinner naming the action that
//! runs; otherwise one plain line per executed action. All of it goes to stderr, so
//! stdout carries only results (paths or JSON). `NO_COLOR` turns colour off.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};

use hb_engine::{Reporter, Status};

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint(code: &str, text: &str) -> String {
    if color() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

pub fn error(msg: &str) {
    eprintln!("{}: {msg}", paint("1;31", "error"));
}

pub fn warning(msg: &str) {
    eprintln!("{}: {msg}", paint("1;33", "warning"));
}

pub fn note(msg: &str) {
    eprintln!("{}", paint("2", &format!("hb: {msg}")));
}

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: AtomicUsize,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = if color() {
                "{spinner:.cyan} [{elapsed}] {pos} done  {wide_msg}"
            } else {
                "{spinner} [{elapsed}] {pos} done  {wide_msg}"
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(style)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar, done: AtomicUsize::new(0) }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for Progress {
    fn started(&self, name: &str) {
        crate::actions_running();
        if let Some(bar) = &self.bar {
            bar.set_message(format!("running {name}"));
        }
    }

    fn warn(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| warning(message)),
            None => warning(message),
        }
    }

    fn finished(&self, name: &str, status: Status) {
        self.done.fetch_add(1, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(1),
            None if status == Status::Executed => eprintln!("hb: built {name}"),
            None => {}
        }
    }
}
