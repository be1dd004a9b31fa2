//! The `pleura` command: see `pleura --help`. The front-ends (`cli`, and `bench`, the
//! shared-vs-serial benchmark) are modules of this binary over the `pleura` library.

mod bench;
mod cli;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(err) = cli::run(cli::Cli::parse()) {
        // A closed pipe (`pleura run | head`) is not a failure.
        let broken_pipe = err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if !broken_pipe {
            eprintln!("error: {err:#}");
            std::process::exit(2);
        }
    }
}
