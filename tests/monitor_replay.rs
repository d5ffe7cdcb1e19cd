//! The millisecond monitor end to end (issue 17): generated captures with known steps,
//! replayed through both sources with `tapflow replay --config --events-json`. The truth
//! is the generator's own packets (`monitors::rate_trace`), which the monitor never sees.

mod common;

use std::path::{Path, PathBuf};

use common::{scratch_dir, tapflow, text};
use monitors::rate_trace::{StepTrace, TracePacket};

const WINDOW_US: u64 = 10_000;
const T0_US: u64 = 103_300;
const T1_US: u64 = 206_100;

/// 400 Mbit/s of background over 50 UDP flows; a 300 Mbit/s TCP flow from t0; 400 Mbit/s
/// more over 20 UDP flows from t1: 1.1 Gbit/s on a 1 Gbit/s port at the end.
fn steps() -> StepTrace {
    StepTrace::steps(
        50,
        400_000_000,
        T0_US,
        300_000_000,
        T1_US,
        20,
        400_000_000,
        300_000,
    )
}

fn background_only() -> StepTrace {
    StepTrace::steps(50, 800_000_000, u64::MAX, 0, u64::MAX, 1, 0, 300_000)
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("tapflow.toml");
    std::fs::write(
        &path,
        format!(
            "[monitor]\nwindow_ms = 10\nlink_bps = 1_000_000_000\nheavy_hitter_share = 0.2\n\
             congestion_utilisation = 0.9\nwindows = 1\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// Replays `pcap` through `source` and returns the events written.
fn replay(dir: &Path, pcap: &Path, source: &str) -> Vec<serde_json::Value> {
    let config = write_config(dir, "");
    let events = dir.join(format!("events-{source}.jsonl"));
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", source])
        .args(["--config", config.to_str().unwrap()])
        .args(["--events-json", events.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_type<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn rate_within(
    trace: &StepTrace,
    packets: &[TracePacket],
    event: &serde_json::Value,
    select: impl Fn(usize) -> bool,
    tolerance: f64,
) {
    let time = event["time_us"].as_u64().unwrap();
    let truth = trace.window_bits(packets, time, WINDOW_US, select) as f64 * 1e6 / WINDOW_US as f64;
    let estimate = event["rate_bps"].as_f64().unwrap();
    assert!(
        (estimate - truth).abs() <= tolerance * truth,
        "{event}: truth {truth} bit/s"
    );
}

fn check_steps(trace: &StepTrace, events: &[serde_json::Value], tolerance: f64) {
    let packets = trace.packets();
    let t0 = trace.start_us + T0_US;
    let t1 = trace.start_us + T1_US;
    let heavy = of_type(events, "heavy_hitter_start");
    assert_eq!(heavy.len(), 1, "{events:?}");
    let event = heavy[0];
    let time = event["time_us"].as_u64().unwrap();
    assert!(
        time >= t0 && time <= t0 + WINDOW_US + 1_000,
        "{event}: t0 {t0}"
    );
    assert_eq!(event["flow"]["src_addr"], "10.9.9.9");
    assert_eq!(event["flow"]["dst_addr"], "192.0.2.80");
    assert_eq!(event["flow"]["src_port"], 33333);
    assert_eq!(event["flow"]["dst_port"], 80);
    assert_eq!(event["flow"]["protocol"], 6);
    assert_eq!(event["port"], 0);
    assert_eq!(event["window_ms"], 10);
    let tcp = trace.flows.iter().position(|f| f.tcp).unwrap();
    rate_within(trace, &packets, event, |f| f == tcp, tolerance);

    let congestion = of_type(events, "congestion_start");
    assert_eq!(congestion.len(), 1, "{events:?}");
    let event = congestion[0];
    let time = event["time_us"].as_u64().unwrap();
    assert!(
        time >= t1 && time <= t1 + WINDOW_US + 1_000,
        "{event}: t1 {t1}"
    );
    assert_eq!(event["port"], 0);
    assert_eq!(event["window_ms"], 10);
    rate_within(trace, &packets, event, |_| true, tolerance);
    // Nothing else: the flow and the surge last to the end of the capture.
    assert_eq!(events.len(), 2, "{events:?}");
}

#[test]
fn steps_are_reported_within_a_window_through_the_file_reader() {
    let dir = scratch_dir("monitor-steps-file");
    let trace = steps();
    let pcap = dir.join("steps.pcap");
    trace.write_pcap(&pcap).unwrap();
    let events = replay(&dir, &pcap, "file");
    check_steps(&trace, &events, 0.05);
}

#[cfg(feature = "dpdk")]
#[test]
fn steps_are_reported_within_a_window_through_dpdk() {
    let dir = scratch_dir("monitor-steps-dpdk");
    let trace = steps();
    let pcap = dir.join("steps.pcap");
    trace.write_pcap(&pcap).unwrap();
    let events = replay(&dir, &pcap, "dpdk");
    check_steps(&trace, &events, 0.05);
    // The same capture through the file reader writes the same events.
    assert_eq!(events, replay(&dir, &pcap, "file"));
}

#[test]
fn a_steady_background_raises_no_event() {
    let dir = scratch_dir("monitor-background");
    let trace = background_only();
    let pcap = dir.join("background.pcap");
    trace.write_pcap(&pcap).unwrap();
    assert_eq!(replay(&dir, &pcap, "file"), Vec::<serde_json::Value>::new());
}

#[test]
fn one_packet_in_ten_tcp_rates_from_sequence_numbers() {
    let dir = scratch_dir("monitor-sampled");
    let mut trace = steps();
    trace.keep_one_in = 10;
    let pcap = dir.join("sampled.pcap");
    let kept = trace.write_pcap(&pcap).unwrap();
    let all = trace.packets().len() as u64;
    assert!(kept * 8 < all && kept * 12 > all, "{kept} of {all}");
    // Confirmed over three windows, the heavy hitter's rate is a steady-state one.
    let config = write_config(&dir, "").to_str().unwrap().to_string();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("windows = 1", "windows = 3"),
    )
    .unwrap();
    let events_path = dir.join("events.jsonl");
    let run = tapflow()
        .args(["replay", pcap.to_str().unwrap(), "--source", "file"])
        .args(["--config", &config])
        .args(["--events-json", events_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&events_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let heavy = of_type(&events, "heavy_hitter_start");
    assert_eq!(heavy.len(), 1, "{events:?}");
    assert_eq!(heavy[0]["method"], "sequence", "{}", heavy[0]);
    let t0 = trace.start_us + T0_US;
    let time = heavy[0]["time_us"].as_u64().unwrap();
    assert!(time >= t0 && time <= t0 + WINDOW_US + 1_000, "{}", heavy[0]);
}
