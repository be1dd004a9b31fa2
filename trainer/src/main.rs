//! `pleura-train`: see `pleura-train --help`.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(err) = pleura_trainer::cli::run(pleura_trainer::cli::Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}
