//! The `envoi` binary; everything lives in the library (see `src/lib.rs`).

fn main() -> std::process::ExitCode {
    envoi::app::main(std::env::args_os().collect())
}
