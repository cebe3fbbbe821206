//! `hallmark`: one binary for every role. The story: parse the command line,
//! set up logging, run the command, map its error to a message and exit code.
//!
//! Where things live: [`cli`] is the command tree; [`roles`] the
//! long-running processes (`server run`, `agent run`, `up`); [`commands`]
//! the operator and workload commands, one module per command, which share
//! only the plumbing in [`connect`] (reaching the APIs), [`output`] (what
//! stdout shows), [`files`] and [`config`]; [`helper`] keeps credentials in
//! files for software that cannot speak the Workload API.

#![forbid(unsafe_code)]
// Doc comments on clap arguments are also their `--help` text, which writes
// placeholders as `<data-dir>`; rustdoc would take those for HTML tags.
#![allow(rustdoc::invalid_html_tags)]

mod cli;
mod commands;
mod config;
mod connect;
mod files;
mod health;
mod helper;
mod output;
mod roles;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output (`| head`) has what it wanted.
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
