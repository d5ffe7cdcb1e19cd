//! `tapflow top`: the millisecond monitor's live view as a terminal table, the way iftop
//! shows a host's flows, and per-destination accounting's busiest destinations. It reads
//! `GET /top` from the running appliance's metrics endpoint (`[stats] prometheus`), so it
//! needs no access to the data plane, and redraws once a window (once a second without
//! the monitor).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The running appliance's metrics endpoint (its `[stats] prometheus` address).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9464")]
    pub endpoint: String,
    /// Print the view once and exit, without clearing the screen (for scripts and logs).
    #[arg(long)]
    pub once: bool,
    /// Flows to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub flows: usize,
}

/// Longest wait for the endpoint.
const TIMEOUT: Duration = Duration::from_secs(2);

pub fn top(args: &TopArgs) -> Result<ExitCode> {
    loop {
        let started = Instant::now();
        let view = fetch(&args.endpoint)?;
        let table = render(&view, args.flows);
        let mut stdout = std::io::stdout().lock();
        if args.once {
            stdout.write_all(table.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        // Home and clear, then the table: one write, so the screen never shows half.
        stdout.write_all(format!("\x1b[H\x1b[2J{table}").as_bytes())?;
        stdout.flush()?;
        let window = Duration::from_millis(view["window_ms"].as_u64().unwrap_or(1_000).max(1));
        std::thread::sleep(window.saturating_sub(started.elapsed()));
    }
}

/// `GET /top` from `endpoint`, parsed.
fn fetch(endpoint: &str) -> Result<Value> {
    let addr = endpoint
        .to_socket_addrs()
        .with_context(|| format!("--endpoint {endpoint:?}: expected HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("--endpoint {endpoint:?} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| {
        format!("cannot reach the metrics endpoint at {addr}: is `tapflow run` running with [stats] prometheus there?")
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(format!("GET /top HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{addr}/top: {status}: {}", body.trim());
    }
    serde_json::from_str(body).with_context(|| format!("{addr}/top: not JSON"))
}

/// A bit rate with a unit, e.g. `312.5 Mbit/s`.
fn bits(rate: f64) -> String {
    let (value, unit) = match rate {
        r if r >= 1e9 => (r / 1e9, "Gbit/s"),
        r if r >= 1e6 => (r / 1e6, "Mbit/s"),
        r if r >= 1e3 => (r / 1e3, "kbit/s"),
        r => (r, "bit/s"),
    };
    format!("{value:.1} {unit}")
}

/// A count with a suffix, e.g. `24.8 k`.
fn count(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.1} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// `HH:MM:SS.mmm` UTC of a time in µs since the epoch.
fn clock(time_us: u64) -> String {
    let ms = time_us / 1_000;
    let s = ms / 1_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3_600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1_000
    )
}

fn endpoint(addr: &Value, port: &Value) -> String {
    let addr = addr.as_str().unwrap_or("?");
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn protocol(number: &Value) -> String {
    match number.as_u64() {
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(1) => "icmp".into(),
        Some(58) => "icmp6".into(),
        Some(n) => n.to_string(),
        None => "?".into(),
    }
}

/// The view as aligned tables: ports first, then the heaviest `flows` flows (with the
/// monitor on), then the busiest destinations (with per-destination accounting on).
pub fn render(view: &Value, flows: usize) -> String {
    let mut out = String::new();
    if view.get("window_ms").is_some() {
        render_monitor(&mut out, view, flows);
    }
    if let Some(destinations) = view.get("destinations") {
        render_destinations(&mut out, destinations);
    }
    out
}

/// The busiest destinations of the last finished per-destination interval.
fn render_destinations(out: &mut String, destinations: &Value) {
    if !out.is_empty() {
        let _ = writeln!(out);
    }
    match destinations["interval_start_us"].as_u64() {
        Some(start) => {
            let seconds = destinations["interval_us"].as_u64().unwrap_or(0) / 1_000_000;
            let _ = writeln!(
                out,
                "busiest destinations: {seconds} s interval from {} UTC (packet time)",
                clock(start)
            );
        }
        None => {
            let _ = writeln!(out, "busiest destinations: no interval finished yet");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>4}  {:<45}  {:>10}  {:>12}",
        "RANK", "DESTINATION", "PACKETS", "OCTETS"
    );
    for d in destinations["top"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>4}  {:<45}  {:>10}  {:>12}",
            d["rank"].as_u64().unwrap_or(0),
            d["destination"].as_str().unwrap_or("?"),
            d["packets"].as_u64().unwrap_or(0),
            d["octets"].as_u64().unwrap_or(0),
        );
    }
}

fn render_monitor(out: &mut String, view: &Value, flows: usize) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "tapflow top: {} ms window ending {} UTC (packet time), link {}",
        view["window_ms"],
        clock(view["time_us"].as_u64().unwrap_or(0)),
        match view["link_bps"].as_f64() {
            Some(l) if l > 0.0 => bits(l),
            _ => "capacity unset".into(),
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>6}  {:>14}  {:>10}  {:>11}",
        "PORT", "RATE", "PACKETS/S", "UTILISATION"
    );
    for port in view["ports"].as_array().into_iter().flatten() {
        let utilisation = match port["utilisation"].as_f64() {
            Some(u) => format!("{:.1}%", u * 100.0),
            None => "-".into(),
        };
        let flag = if port["congested"] == true {
            "  CONGESTED"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6}  {:>14}  {:>10}  {:>11}{flag}",
            port["port"],
            bits(f(&port["rate_bps"])),
            count(f(&port["packets_per_second"])),
            utilisation,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<45}  {:<45}  {:<5}  {:>4}  {:>14}  {:>10}  {:<8}",
        "SOURCE", "DESTINATION", "PROTO", "PORT", "RATE", "PACKETS/S", "METHOD"
    );
    for flow in view["flows"].as_array().into_iter().flatten().take(flows) {
        let key = &flow["flow"];
        let flag = if flow["heavy_hitter"] == true {
            "  HEAVY"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<45}  {:<45}  {:<5}  {:>4}  {:>14}  {:>10}  {:<8}{flag}",
            endpoint(&key["src_addr"], &key["src_port"]),
            endpoint(&key["dst_addr"], &key["dst_port"]),
            protocol(&key["protocol"]),
            flow["port"],
            bits(f(&flow["rate_bps"])),
            count(f(&flow["packets_per_second"])),
            flow["method"].as_str().unwrap_or(""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_and_readable() {
        let view = serde_json::json!({
            "time_us": 1_700_000_000_123_456u64,
            "window_ms": 10,
            "link_bps": 1_000_000_000u64,
            "ports": [{"port": 0, "rate_bps": 1_100_000_000u64, "packets_per_second": 104_200,
                       "utilisation": 1.1, "congested": true}],
            "flows": [
                {"port": 0, "flow": {"src_addr": "10.9.9.9", "dst_addr": "192.0.2.80",
                 "src_port": 33333, "dst_port": 80, "protocol": 6},
                 "rate_bps": 300_000_000u64, "packets_per_second": 24_800,
                 "method": "counted", "heavy_hitter": true},
                {"port": 0, "flow": {"src_addr": "2001:db8::1", "dst_addr": "2001:db8::2",
                 "src_port": 5353, "dst_port": 53, "protocol": 17},
                 "rate_bps": 8_000u64, "packets_per_second": 1,
                 "method": "counted", "heavy_hitter": false}
            ]
        });
        let table = render(&view, 10);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "tapflow top: 10 ms window ending 22:13:20.123 UTC (packet time), link 1.0 Gbit/s"
        );
        assert!(
            lines[3].ends_with("1.1 Gbit/s     104.2 k       110.0%  CONGESTED"),
            "{table}"
        );
        let flows: Vec<&str> = lines[6..].to_vec();
        assert_eq!(flows.len(), 2, "{table}");
        assert!(flows[0].starts_with("10.9.9.9:33333 "), "{table}");
        assert!(flows[0].contains("192.0.2.80:80 "));
        assert!(flows[0].contains("300.0 Mbit/s") && flows[0].ends_with("HEAVY"));
        assert!(flows[1].starts_with("[2001:db8::1]:5353 "));
        assert!(flows[1].contains(" udp ") && flows[1].contains("8.0 kbit/s"));
        // Columns line up: the rate column ends at the same place on every flow line.
        let end = |l: &str| l.find("bit/s").unwrap();
        assert_eq!(end(flows[0]), end(flows[1]));
        assert_eq!(render(&view, 1).lines().count(), 7);
    }

    #[test]
    fn the_busiest_destinations_follow_or_stand_alone() {
        let destinations = serde_json::json!({
            "interval_start_us": 1_700_000_000_000_000u64,
            "interval_us": 60_000_000u64,
            "top": [
                {"rank": 1, "destination": "10.1.3.0/24", "packets": 16, "octets": 16_000},
                {"rank": 2, "destination": "2001:db8::/48", "packets": 11, "octets": 10_200}
            ]
        });
        let alone = render(&serde_json::json!({ "destinations": destinations }), 10);
        let lines: Vec<&str> = alone.lines().collect();
        assert_eq!(
            lines[0],
            "busiest destinations: 60 s interval from 22:13:20.000 UTC (packet time)"
        );
        assert!(lines[3].starts_with("   1  10.1.3.0/24 "), "{alone}");
        assert!(lines[3].ends_with("        16         16000"), "{alone}");
        assert!(lines[4].starts_with("   2  2001:db8::/48 "), "{alone}");
        assert_eq!(lines.len(), 5);
        let none = serde_json::json!({"destinations": {"interval_start_us": null, "top": []}});
        assert!(render(&none, 10).starts_with("busiest destinations: no interval finished yet"));
    }
}
