//! `tapflow`: the appliance binary. Command line, configuration, lifecycle and reporting;
//! the data plane lives in the `probe` crate.

mod bench;
mod cli;
mod extensions;
mod logging;
mod pipeline;
mod progress;
mod run;
mod summary;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    logging::init(args.verbose);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            // One line an operator can act on; the chain gives the cause.
            eprintln!("tapflow: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
