use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = jumio_batchd::cli::Cli::parse();
    jumio_batchd::cli::run(cli)
}
