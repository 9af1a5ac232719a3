fn main() -> std::process::ExitCode {
    bootfleet::command::main()
}
