//! The one event output of a run: every worker's extension events, as JSON lines to a
//! file, stdout, or a UDP or Unix datagram socket, and to the log at info.
//!
//! It runs on a thread of its own, off the data plane. Workers hand events over a bounded
//! channel and never wait (a full queue drops and counts, in `WorkerStats`); this side
//! counts what it wrote and what a failing destination lost.

use crossbeam_channel::Receiver;
use exporter::json::{JsonCounters, JsonDestination, JsonLinesWriter};

use crate::ext::Event;

/// What the event output did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventOutputReport {
    /// Events received from the workers, by type.
    pub by_type: Vec<(&'static str, u64)>,
    pub destination: Option<JsonDestination>,
    pub written: JsonCounters,
}

impl EventOutputReport {
    pub fn events(&self) -> u64 {
        self.by_type.iter().map(|(_, n)| n).sum()
    }

    fn count(&mut self, kind: &'static str) {
        match self.by_type.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.by_type.push((kind, 1)),
        }
    }
}

/// Writes events until every sender is gone. Stream destinations are flushed whenever the
/// queue runs empty, so a reader sees an event as soon as it happened.
pub fn run_event_output(
    events: Receiver<Event>,
    destination: Option<JsonDestination>,
    append: bool,
) -> std::io::Result<EventOutputReport> {
    let mut writer = destination
        .as_ref()
        .map(|d| JsonLinesWriter::open(d, append))
        .transpose()?;
    let mut report = EventOutputReport {
        destination,
        ..EventOutputReport::default()
    };
    while let Ok(event) = events.recv() {
        let mut next = Some(event);
        while let Some(event) = next {
            report.count(event.kind);
            let json = event.to_json();
            log::info!("event: {json}");
            if let Some(writer) = writer.as_mut() {
                writer.write(&json);
            }
            next = events.try_recv().ok();
        }
        if let Some(writer) = writer.as_mut() {
            writer.flush();
        }
    }
    if let Some(writer) = writer.as_mut() {
        writer.flush();
        report.written = writer.counters();
    }
    Ok(report)
}
