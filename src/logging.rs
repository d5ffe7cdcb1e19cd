//! Log lines for the two places they are read: systemd's journal and a person's terminal.
//!
//! - Under systemd (`JOURNAL_STREAM` names our stderr), each line starts with its syslog
//!   priority (`<4>` a warning, `<3>` an error, sd-daemon(3)), so `journalctl -p warning`
//!   shows warnings and errors; the journal adds the time.
//! - Anywhere else, each line starts with the UTC time to the millisecond.
//! - `RUST_LOG` filters as env_logger's does (`RUST_LOG=info`, `RUST_LOG=warn,probe=debug`);
//!   without it the level is `-v`'s, or the configuration's `[logging] level` for `run`.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Installs the logger; `verbose` is the count of `-v` flags.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|spec| {
            let mut builder = env_filter::Builder::new();
            builder.parse(&spec);
            builder.build()
        });
    let max = filter.as_ref().map_or(level, env_filter::Filter::filter);
    let logger = Logger {
        filter,
        journal: on_journal(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

/// Whether a later setting (the configuration's level) may change the level: not when
/// the operator gave `RUST_LOG`.
pub fn level_is_from_env() -> bool {
    std::env::var("RUST_LOG").is_ok_and(|s| !s.is_empty())
}

/// systemd connects stderr to the journal and says so in `JOURNAL_STREAM`
/// ("DEVICE:INODE" of that stream); a redirected stderr no longer matches it.
fn on_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

struct Logger {
    filter: Option<env_filter::Filter>,
    journal: bool,
}

/// The syslog priority of a level (sd-daemon(3) prefixes).
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        match &self.filter {
            Some(filter) => filter.enabled(metadata),
            None => metadata.level() <= log::max_level(),
        }
    }

    fn log(&self, record: &Record<'_>) {
        let allowed = match &self.filter {
            Some(filter) => filter.matches(record),
            None => record.level() <= log::max_level(),
        };
        if !allowed {
            return;
        }
        let level = record.level().as_str().to_lowercase();
        let line = if self.journal {
            format!(
                "<{}>tapflow: {level}: {}\n",
                priority(record.level()),
                record.args()
            )
        } else {
            format!(
                "{} tapflow: {level}: {}\n",
                utc_millis(SystemTime::now()),
                record.args()
            )
        };
        // One write per line, so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `2026-12-04T20:50:01.123Z`.
fn utc_millis(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_times_match_known_dates() {
        let at = |secs: u64, millis: u64| {
            utc_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_416_201, 123), "2026-12-04T20:30:01.123Z");
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
    }
}
