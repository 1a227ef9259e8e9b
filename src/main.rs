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
            // An error can quote a path or a value the host handed us.
            eprintln!(
                "minerwatch: error: {}",
                minerwatch::report::escape_lines(&format!("{e:#}"))
            );
            ExitCode::from(2)
        }
    }
}
