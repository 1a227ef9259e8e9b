//! The `minerwatch` binary: parse flags, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

mod app;

fn main() -> ExitCode {
    let cli = minerwatch::cli::Cli::parse();
    app::init_logging(cli.verbose);
    match app::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("minerwatch: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
