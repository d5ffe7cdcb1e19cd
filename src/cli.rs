//! Command line. The `replay` line is a stable interface: scripts depend on it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use exporter::ExportVersion;
use exporter::json::JsonDestination;
use flowcache::SamplerSpec;

use probe::synth::{FrameLen, TrafficSpec};

use crate::pipeline::{self, ReplaySource, ReplaySpec};
use crate::run;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("TAPFLOW_GIT_REVISION"),
    ", DPDK ",
    env!("TAPFLOW_DPDK_VERSION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "tapflow",
    version = VERSION,
    about = "Line-rate NetFlow v5/v9 and IPFIX probe (DPDK)",
    long_about = "tapflow accounts every packet from a tap or mirror port into flows and exports \
them as NetFlow v5, NetFlow v9 or IPFIX to your collectors.\n\n\
Replay a capture into a collector:\n  tapflow replay trace.pcap --collector 127.0.0.1:2055\n\
Make a test capture:\n  tapflow generate trace.pcap --flows 1000"
)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay a pcap/pcapng file through the probe and export its flows.
    Replay(ReplayArgs),
    /// Write a synthetic capture (deterministic traffic) for tests, demos and benchmarks.
    Generate(GenerateArgs),
    /// Run the appliance from its configuration file until SIGTERM/SIGINT.
    Run(ConfigArgs),
    /// Validate a configuration file: every problem with its line and key.
    CheckConfig(CheckConfigArgs),
    /// Measure the data plane's throughput against the source's raw receive ceiling.
    Bench(crate::bench::BenchArgs),
    /// Show the running appliance's top flows and port utilisation, live ([monitor]).
    Top(crate::top::TopArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `tapflow manpage | man -l -`; with --dir, write
    /// tapflow.1 and one page per command (tapflow-replay.1, ...) there.
    Manpage {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show which [[policy]] a packet falls under, and why.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Configuration file with the [[policy]] tables.
    #[arg(long, short, value_name = "FILE", default_value = tapflow::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// The packet: "PROTO SRC[:PORT] > DST[:PORT] [vlan N] [input_port N]", e.g.
    /// "tcp 10.0.0.1:1234 > 192.0.2.5:443" ([ADDR]:PORT for IPv6).
    #[arg(long, value_name = "PACKET")]
    pub packet: String,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file.
    #[arg(long, short, value_name = "FILE", default_value = tapflow::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// Configuration file (also accepted as --config FILE).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    pub file: Option<PathBuf>,
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object (file, valid, problems with line, column, key and message)
    /// instead of text; the exit status is the same.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// DPDK's pcap driver (net_pcap vdev): the same data path as a NIC.
    Dpdk,
    /// tapflow's own pcap/pcapng reader: no EAL, no DPDK needed.
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Aggregation {
    /// Cisco's protocol-port scheme: flows summed by protocol, source and destination port.
    ProtocolPort,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Capture to replay (pcap or pcapng, Ethernet).
    pub file: PathBuf,
    /// Run the capture through this configuration's whole pipeline (cache, sampling,
    /// aggregation, collectors, events, and every enabled extension); the flags below
    /// override the file.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Collector to export to, HOST:PORT (repeatable); replaces the file's collectors.
    #[arg(long = "collector", value_name = "HOST:PORT")]
    pub collectors: Vec<String>,
    /// Every exported record as a JSON line: a file, - for stdout, udp:HOST:PORT or
    /// unix:/path (docs/RECORDS.md).
    #[arg(long, value_name = "PATH")]
    pub records_json: Option<JsonDestination>,
    /// Every event as a JSON line: a file, - for stdout, udp:HOST:PORT or unix:/path
    /// (docs/EVENTS.md); overrides [events] output.
    #[arg(long, value_name = "PATH")]
    pub events_json: Option<JsonDestination>,
    /// Both directions of a conversation in one record (RFC 5103); as [kpi] biflow.
    #[arg(long)]
    pub biflow: bool,
    /// Per-connection TCP KPIs (RTTs, retransmissions, outcome); as [kpi] tcp.
    #[arg(long)]
    pub tcp_kpis: bool,
    /// Export format [default: ipfix].
    #[arg(long, value_parser = parse_version)]
    pub export: Option<ExportVersion>,
    /// How the file is read.
    #[arg(long, value_enum, default_value = "dpdk")]
    pub source: SourceKind,
    /// Export a long-lived flow in pieces after this many seconds [default: 1800].
    #[arg(long, value_name = "SECS")]
    pub active_timeout: Option<u64>,
    /// Expire a flow after this many seconds without packets [default: 15].
    #[arg(long, value_name = "SECS")]
    pub inactive_timeout: Option<u64>,
    /// Packet sampling: none, deterministic:N, random:N or hash:N [default: none].
    #[arg(long, value_parser = parse_sampler)]
    pub sample: Option<SamplerSpec>,
    /// Aggregate expired flows before export.
    #[arg(long, value_enum)]
    pub aggregate: Option<Aggregation>,
    /// Aggregation interval [default: 60].
    #[arg(long, value_name = "SECS")]
    pub aggregate_interval: Option<u64>,
    /// Flow cache capacity (entries) [default: 1048576, or for a replay sized from the
    /// file: 8 slots for each flow it could hold, at least 4096].
    #[arg(long)]
    pub cache_size: Option<usize>,
    /// Observation domain id (IPFIX) / source id (v9) / engine id (v5, low byte)
    /// [default: 1].
    #[arg(long)]
    pub observation_domain: Option<u32>,
    /// Largest export datagram payload, bytes [default: 1400].
    #[arg(long)]
    pub mtu: Option<usize>,
    /// Limit each collector to this many datagrams per second (0: unpaced). Collectors
    /// with small socket buffers lose datagrams when a replay runs at full speed.
    #[arg(long, value_name = "DATAGRAMS_PER_SEC")]
    pub pace: Option<u32>,
    /// v9/IPFIX: send the templates again after this many datagrams without them (0:
    /// never by count), so a collector that starts late decodes from then on
    /// [default: 20].
    #[arg(long, value_name = "DATAGRAMS")]
    pub template_refresh_datagrams: Option<u32>,
    /// Extra EAL arguments for the dpdk source (e.g. "--log-level=debug").
    #[arg(long = "eal-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub eal_args: Vec<String>,
    /// Print the summary as one JSON object (counters named as on the metrics endpoint)
    /// instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Deliver the packets at the capture's own pace, as a live port receives them
    /// (--source file): into a receive ring of --ring-frames, where a packet that arrives
    /// while the ring is full is dropped and counted as nic missed. What adaptive sampling
    /// needs to see a load rather than a file read as fast as it goes.
    #[arg(long)]
    pub realtime: bool,
    /// Frames the --realtime receive ring holds.
    #[arg(long, value_name = "FRAMES", default_value_t = probe::paced::DEFAULT_RING_FRAMES,
          requires = "realtime")]
    pub ring_frames: usize,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Output pcap file.
    pub output: PathBuf,
    /// Number of distinct flows.
    #[arg(long, default_value_t = 1000)]
    pub flows: u32,
    /// Packets in each flow.
    #[arg(long, default_value_t = 10)]
    pub packets_per_flow: u32,
    /// Frame size in bytes (omit for a realistic mix of sizes).
    #[arg(long)]
    pub frame_size: Option<u16>,
    /// Include non-IP and malformed frames, as a real tap delivers.
    #[arg(long)]
    pub noise: bool,
    /// PRNG seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Microseconds between consecutive frames (the trace's rate, for --realtime replays)
    /// [default: 10].
    #[arg(long, value_name = "US")]
    pub spacing_us: Option<u64>,
    /// Flows in progress at once; when one ends the next starts (0: all at once)
    /// [default: 100].
    #[arg(long)]
    pub live_flows: Option<u32>,
    /// Frames that arrive together, back to back (the rate stays one frame per
    /// --spacing-us on average) [default: 1].
    #[arg(long, value_name = "FRAMES")]
    pub train: Option<u32>,
}

fn parse_version(s: &str) -> Result<ExportVersion, String> {
    s.parse::<ExportVersion>().map_err(|e| e.to_string())
}

fn parse_sampler(s: &str) -> Result<SamplerSpec, String> {
    s.parse::<SamplerSpec>().map_err(|e| e.to_string())
}

impl ReplayArgs {
    /// The replay the flags describe.
    pub fn spec(&self) -> ReplaySpec {
        ReplaySpec {
            file: self.file.clone(),
            config: self.config.clone(),
            collectors: self.collectors.clone(),
            records_json: self.records_json.clone(),
            events_json: self.events_json.clone(),
            export: self.export,
            source: match self.source {
                SourceKind::Dpdk => ReplaySource::Dpdk,
                SourceKind::File => ReplaySource::File,
            },
            active_timeout: self.active_timeout,
            inactive_timeout: self.inactive_timeout,
            sample: self.sample,
            aggregate: self.aggregate.is_some(),
            aggregate_interval: self.aggregate_interval,
            cache_size: self.cache_size,
            observation_domain: self.observation_domain,
            mtu: self.mtu,
            pace: self.pace,
            template_refresh_datagrams: self.template_refresh_datagrams,
            eal_args: self.eal_args.clone(),
            json: self.json,
            biflow: self.biflow,
            tcp_kpis: self.tcp_kpis,
            realtime: self.realtime.then_some(self.ring_frames),
        }
    }
}

impl GenerateArgs {
    /// The traffic the flags describe.
    pub fn spec(&self) -> TrafficSpec {
        let defaults = TrafficSpec::default();
        TrafficSpec {
            flows: self.flows,
            packets_per_flow: self.packets_per_flow,
            frame_len: self
                .frame_size
                .map_or(defaults.frame_len, |n| FrameLen::Fixed(usize::from(n))),
            include_noise: self.noise,
            seed: self.seed,
            spacing_us: self.spacing_us.unwrap_or(defaults.spacing_us),
            live_flows: self.live_flows.unwrap_or(defaults.live_flows),
            train: self.train.unwrap_or(defaults.train),
            ..defaults
        }
    }
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => pipeline::replay(&args.spec()),
        Command::Generate(args) => pipeline::generate(&args.spec(), &args.output),
        Command::Run(args) => run::run(&args.config, cli.verbose),
        Command::Bench(args) => crate::bench::bench(&args),
        Command::Top(args) => crate::top::top(&args),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "tapflow", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage { dir: None } => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(Cli::command(), &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => crate::explain::explain(&args.config, &args.packet),
        Command::CheckConfig(args) => {
            let path = args
                .file
                .or(args.config)
                .unwrap_or_else(|| tapflow::config::DEFAULT_CONFIG_PATH.into());
            run::check_config(&path, args.json)
        }
    }
}
