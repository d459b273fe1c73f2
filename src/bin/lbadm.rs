//! `lbadm`, the ulvs admin CLI; everything is in [`ulvs::lbadm`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ulvs::lbadm::run(ulvs::lbadm::Cli::parse())
}
