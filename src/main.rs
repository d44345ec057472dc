//! The `envoi` binary: the command line (`cli/`) over the library (`src/lib.rs`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main(std::env::args_os().collect())
}
