//! Progress reporting for restores: bars on a terminal, plain lines otherwise (CI logs).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::MultiProgress;
use indicatif::ProgressBar;
use indicatif::ProgressStyle;

/// Where progress goes.
#[derive(Clone, Debug, Default)]
pub enum Progress {
    /// Nowhere (library callers, tests).
    #[default]
    Silent,
    /// One line on stderr when a task starts and one when it ends.
    Lines,
    /// indicatif bars on stderr.
    Bars(MultiProgress),
}

impl Progress {
    /// Bars if stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bars(MultiProgress::new())
        } else {
            Self::Lines
        }
    }

    /// Starts a task; `total` is in bytes when known.
    pub fn task(&self, label: &str, total: Option<u64>) -> Task {
        match self {
            Self::Silent => Task::Silent,
            Self::Lines => {
                match total {
                    Some(t) => eprintln!("agar: {label} ({})", human_bytes(t)),
                    None => eprintln!("agar: {label}"),
                }
                Task::Line(label.to_owned())
            }
            Self::Bars(multi) => {
                let bar = match total {
                    Some(t) => {
                        let bar = multi.add(ProgressBar::new(t));
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{msg:40!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        bar
                    }
                    None => {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar
                    }
                };
                bar.set_message(label.to_owned());
                Task::Bar(bar)
            }
        }
    }

    /// Prints a line without tearing the bars.
    pub fn println(&self, line: &str) {
        match self {
            Self::Silent => {}
            Self::Lines => eprintln!("{line}"),
            Self::Bars(multi) => {
                let _ = multi.println(line);
            }
        }
    }
}

/// One running task.
#[derive(Debug)]
pub enum Task {
    /// Not reported.
    Silent,
    /// Reported as lines.
    Line(String),
    /// A bar.
    Bar(ProgressBar),
}

impl Task {
    /// Moves the task forward by `n` bytes.
    pub fn advance(&self, n: u64) {
        if let Self::Bar(b) = self {
            b.inc(n);
        }
    }

    /// Sets the absolute position (after a restart or resume).
    pub fn set_position(&self, pos: u64) {
        if let Self::Bar(b) = self {
            b.set_position(pos);
        }
    }

    /// Ends the task with a short outcome ("done", "cached", an error).
    pub fn finish(self, outcome: &str) {
        match self {
            Self::Silent => {}
            Self::Line(label) => eprintln!("agar: {label}: {outcome}"),
            Self::Bar(b) => {
                let msg = format!("{}: {outcome}", b.message());
                b.finish_with_message(msg);
            }
        }
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(27 * 1024 * 1024), "27.0 MiB");
    }
}
