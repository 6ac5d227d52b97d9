//! The `switchboard` binary. Everything is in the library, so that tests can
//! build the very same program under another name.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
