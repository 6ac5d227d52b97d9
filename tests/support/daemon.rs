//! The daemon under test: the `switchboard` binary's code, built inside the
//! test package so that tests find it as CARGO_BIN_EXE_switchboard-under-test.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
