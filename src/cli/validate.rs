//! `keyfleet validate`: reads the inputs, runs the checks of [`crate::validate`] and prints the
//! report (text or JSON) with its exit code.

use std::io::Write as _;
use std::process::ExitCode;

use super::args::{OutputFormat, ValidateArgs};

/// `keyfleet validate`: reads the inputs, runs the checks of `crate::validate`, prints the report.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let options = crate::validate::Options {
        default_namespace: args.namespace.clone(),
        require_refs: args.require_refs,
        now: jiff::Timestamp::now(),
    };
    let linter = match crate::validate::Validator::new(options) {
        Ok(linter) => linter,
        Err(e) => {
            eprintln!("keyfleet validate: internal error: {e}");
            return ExitCode::from(3);
        }
    };
    let (sources, input_errors) = crate::manifest::read_inputs(&args.files);
    let report = linter.run_inputs(&sources, input_errors);
    match args.output {
        OutputFormat::Json => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let written = serde_json::to_writer_pretty(&mut out, &report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out));
            // A closed pipe (`| head`) is not worth a panic; the exit code still tells.
            if let Err(e) = written
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("keyfleet validate: writing the report: {e}");
            }
        }
        OutputFormat::Text => print_text(&report),
    }
    ExitCode::from(report.exit_code())
}

fn print_text(report: &crate::validate::Report) {
    if !report.input_errors.is_empty() {
        for e in &report.input_errors {
            eprintln!("{e}");
        }
        eprintln!(
            "keyfleet validate: {} unusable input{}; nothing was checked",
            report.input_errors.len(),
            if report.input_errors.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        return;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for finding in &report.findings {
        if writeln!(out, "{finding}").is_err() {
            return;
        }
    }
    let _ = writeln!(out, "keyfleet validate: {}", report.summary);
}
