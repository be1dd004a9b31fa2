//! The `pleura` command: see `pleura --help`.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(err) = pleura::cli::run(pleura::cli::Cli::parse()) {
        // A closed pipe (`pleura run | head`) is not a failure.
        if err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        }) {
            return;
        }
        eprintln!("error: {err:#}");
        std::process::exit(2);
    }
}
